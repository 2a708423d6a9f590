"""The packaged Q4_1 SmolLM2 requantized to Q8_0 once, cached, and loaded in its place."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from voicebox.config import ConfigError, LlmConfig
from voicebox.engines import gguf
from voicebox.engines.llama_llm import LlamaEngine
from voicebox.engines.protocols import ChatMessage
from voicebox.engines.requantize import CACHE_ENV, derived_path, prompt_fast_weights
from voicebox.errors import ModelError
from voicebox.models.locate import packaged_path

Q4_1, Q8_0 = 3, 7  # llama_ftype, as GGUF's general.file_type


def _file_type(path: Path) -> object:
    return gguf.read_metadata(path, ("general.file_type",)).get("general.file_type")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def test_the_packaged_q4_1_is_requantized_once_and_cached(cache: Path) -> None:
    source = packaged_path("llm")
    assert _file_type(source) == Q4_1
    derived = prompt_fast_weights(source)
    assert derived != source and derived.is_relative_to(cache)
    assert derived.name == "SmolLM2-135M-Instruct.Q8_0.gguf"  # the HC1 profile admits it
    assert _file_type(derived) == Q8_0
    made = derived.stat().st_mtime_ns
    assert prompt_fast_weights(source) == derived
    assert derived.stat().st_mtime_ns == made  # found, not made again
    assert not [p for p in derived.parent.iterdir() if p.suffix == ".part"]
    assert prompt_fast_weights(source, None) == source
    assert prompt_fast_weights(derived) == derived  # Q8_0 has its kernel already


def test_the_engine_loads_the_requantized_weights_and_scores_alike(cache: Path) -> None:
    source = packaged_path("llm")
    words = ["He was not an ill-disposed young man.", "Mr. John Dashwood had then leisure to"]
    scores = {}
    for target in ("Q8_0", None):
        llm = LlamaEngine(source, context_tokens=512, threads=1, requantize=target)
        try:
            assert llm.model_path == source and llm.name == source.stem
            assert (llm.weights_path == source) == (target is None)
            scores[target] = [llm.end_of_turn_probability([ChatMessage("user", w)])
                              for w in words]
        finally:
            llm.close()
    for fast, shipped in zip(scores["Q8_0"], scores[None], strict=True):
        assert abs(fast - shipped) < 0.05
    assert scores["Q8_0"][0] > 0.2 > scores["Q8_0"][1]


def test_a_source_changed_in_place_gets_a_new_copy(cache: Path, tmp_path: Path) -> None:
    source = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    shutil.copyfile(packaged_path("llm"), source)
    first = derived_path(source, "Q8_0")
    os.utime(source, ns=(1, 1))
    assert derived_path(source, "Q8_0") != first


def test_an_unwritable_cache_loads_the_file_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    source = packaged_path("llm")
    with caplog.at_level(logging.WARNING):
        assert prompt_fast_weights(source) == source
    assert "as it is" in caplog.text


def test_a_corrupt_cached_copy_is_dropped_and_the_source_loaded(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = packaged_path("llm")
    derived = derived_path(source, "Q8_0")
    derived.parent.mkdir(parents=True)
    derived.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with caplog.at_level(logging.WARNING):
        llm = LlamaEngine(source, context_tokens=512, threads=1)
    try:
        assert llm.weights_path == source
        assert not derived.exists()
    finally:
        llm.close()
    assert "as it is" in caplog.text


def test_unknown_targets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot requantize to 'Q2_K'"):
        prompt_fast_weights(packaged_path("llm"), "Q2_K")
    with pytest.raises(ConfigError, match="requantize must be Q8_0 or off"):
        LlmConfig(requantize="Q4_0")


def test_a_corrupt_header_is_an_error_not_an_allocation(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(b"GGUF" + b"\x03\x00" * 50)  # lengths of ~2**48 bytes
    with pytest.raises(ModelError, match="cannot read GGUF metadata"):
        gguf.read_metadata(cut, ("general.file_type",))
    assert prompt_fast_weights(cut) == cut  # llama.cpp names the fault when it loads
