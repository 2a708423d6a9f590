"""Settings files (config, intents, firmware profiles, the model catalogue) that are not
what they should be: each is one clear error naming the file, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from voicebox.card.errors import ProfileError
from voicebox.card.profile import load_profile
from voicebox.config import ConfigError, load_config
from voicebox.errors import VoiceboxError
from voicebox.models.catalogue import load_catalogue
from voicebox.runtime.intents import IntentMatcher

READERS: list[tuple[str, Callable[[Path], object], type[VoiceboxError]]] = [
    ("config file", load_config, ConfigError),
    ("intents file", IntentMatcher.from_file, ConfigError),
    ("firmware profile", load_profile, ProfileError),
    ("model catalogue", load_catalogue, VoiceboxError),
]


@pytest.mark.parametrize(("what", "read", "error"), READERS)
def test_a_file_that_is_not_utf8(tmp_path: Path, what: str, read: Callable[[Path], object],
                                 error: type[VoiceboxError]) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(error, match=f"{what} .*latin1.toml: not UTF-8 text"):
        read(path)


@pytest.mark.parametrize(("what", "read", "error"), READERS)
def test_a_folder_or_a_pipe_instead_of_a_file(tmp_path: Path, what: str,
                                              read: Callable[[Path], object],
                                              error: type[VoiceboxError]) -> None:
    with pytest.raises(error, match=f"{what} .*: a folder"):
        read(tmp_path)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # nobody writes: reading it would wait for ever
    with pytest.raises(error, match=f"{what} .*fifo.toml: not a regular file"):
        read(fifo)


def test_intents_nested_without_end(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("intents: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="deep.yaml"):
        IntentMatcher.from_file(path)


@pytest.mark.parametrize("value", ["1e400", "nan", "inf"])
def test_a_silence_curve_point_that_is_not_a_number(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[turn]\nsilence_curve = [[0.3, {value}]]\n")
    with pytest.raises(ConfigError, match="silence_curve"):
        load_config(path)


def test_card_settings_with_the_llama_engine_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[llm]\nengine = "llama"\nprofile = "hc1-llama3.1-8b"\n')
    with pytest.raises(ConfigError, match="profile/device apply to the card engines only"):
        load_config(path)
    assert load_config(None, llm__engine="emulated", llm__profile="hc1-llama3.1-8b")
