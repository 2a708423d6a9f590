"""The stand-in rule: the card serves only its profile's model."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.card.fakes import FakeStandIn
from voicebox.card.emulator import CardEmulator
from voicebox.card.errors import StandInError
from voicebox.card.factory import build_card_engine
from voicebox.card.profile import FirmwareProfile
from voicebox.card.standin import check_stand_in, read_gguf_metadata


def _gguf(path: Path, architecture: str) -> Path:
    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()

    kvs = [
        string("general.name") + struct.pack("<I", 8) + string("fake"),
        string("tokenizer.ggml.scores")
        + struct.pack("<IIQ", 9, 6, 3)
        + struct.pack("<3f", 1, 2, 3),
        string("general.architecture") + struct.pack("<I", 8) + string(architecture),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    return path


def test_reads_gguf_architecture(tmp_path: Path) -> None:
    path = _gguf(tmp_path / "x.gguf", "qwen2")
    assert read_gguf_metadata(path, ["general.architecture"]) == {"general.architecture": "qwen2"}


def test_accepts_the_declared_stand_in(hc1: FirmwareProfile) -> None:
    check_stand_in(hc1, "SmolLM2-135M-Instruct.Q4_1.gguf", "llama")
    check_stand_in(hc1, "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "llama")


@pytest.mark.parametrize(
    ("file_name", "architecture", "why"),
    [
        ("qwen2.5-0.5b-instruct-q4_0.gguf", "qwen2", "not an accepted stand-in"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "qwen2", "architecture 'qwen2'"),
        ("Llama-3.2-1B-Instruct.gguf", "llama", "not an accepted stand-in"),
    ],
)
def test_refuses_a_mismatched_stand_in(
    hc1: FirmwareProfile, file_name: str, architecture: str, why: str
) -> None:
    with pytest.raises(StandInError, match=why) as err:
        check_stand_in(hc1, file_name, architecture)
    assert "serves only Llama-3.1-8B-Instruct" in str(err.value)


def test_emulator_refuses_a_mismatched_stand_in(hc1: FirmwareProfile, tmp_path: Path) -> None:
    with pytest.raises(StandInError):
        CardEmulator(hc1, FakeStandIn(file_name="phi-2.Q4_0.gguf"), tmp_path / "card.sock")


def test_factory_refuses_before_loading_weights(tmp_path: Path) -> None:
    wrong = _gguf(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma")
    with pytest.raises(StandInError, match="architecture 'gemma'"):
        build_card_engine("emulated", "hc1-llama3.1-8b", None, stand_in=wrong)
    wrong_name = _gguf(tmp_path / "tinyllama.gguf", "llama")
    with pytest.raises(StandInError, match="not an accepted stand-in"):
        build_card_engine("emulated", None, None, stand_in=wrong_name)


def test_factory_errors() -> None:
    from voicebox.errors import VoiceboxError

    with pytest.raises(VoiceboxError, match="--device"):
        build_card_engine("pcie", None, None)
    with pytest.raises(VoiceboxError, match="unknown card engine"):
        build_card_engine("gpu", None, None)


def test_the_configured_llm_is_the_emulated_card_s_stand_in(tmp_path: Path) -> None:
    """``[models] llm`` reaches ``--engine emulated`` (it once loaded the packaged
    stand-in whatever the config said): a file the profile refuses is refused."""
    from voicebox.config import Config, LlmConfig, ModelPaths
    from voicebox.runtime.build import load_llm

    wrong = _gguf(tmp_path / "tinyllama.gguf", "llama")
    config = Config(llm=LlmConfig(engine="emulated"), models=ModelPaths(llm=wrong))
    with pytest.raises(StandInError, match="tinyllama.gguf is not an accepted stand-in"):
        load_llm(config)


def _record_llm_arguments(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What ``load_llm`` passes the engine that loads the weights (the llama engine or the
    card's stand-in), which then stops the load with StandInError("recorded")."""
    from voicebox.card import factory
    from voicebox.engines import llama_llm

    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, path: Path, **kwargs: object) -> None:
            seen.update(kwargs)
            raise StandInError("recorded")

    monkeypatch.setattr(factory, "LlamaStandIn", Recorder)
    monkeypatch.setattr(llama_llm, "LlamaEngine", Recorder)
    return seen


@pytest.mark.parametrize(("engine", "setting", "expected"),
                         [("emulated", "off", None), ("emulated", "Q8_0", "Q8_0"),
                          ("llama", "off", None), ("llama", "Q8_0", "Q8_0")])
def test_the_configured_requantize_reaches_the_llm(
    monkeypatch: pytest.MonkeyPatch, engine: str, setting: str, expected: str | None
) -> None:
    """``[llm] requantize`` reaches the engine that loads the weights (the stand-in's too)."""
    from voicebox.config import Config, LlmConfig
    from voicebox.runtime.build import load_llm

    seen = _record_llm_arguments(monkeypatch)
    with pytest.raises(StandInError, match="recorded"):
        load_llm(Config(llm=LlmConfig(engine=engine, requantize=setting)))
    assert seen["requantize"] == expected


@pytest.mark.parametrize("engine", ["emulated", "llama"])
def test_the_configured_burst_threads_reach_the_llm(
        monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """``[llm] burst_threads`` reaches the engine that runs llama.cpp (the stand-in's too);
    0 is refused."""
    from voicebox.config import Config, ConfigError, LlmConfig
    from voicebox.runtime.build import load_llm

    seen = _record_llm_arguments(monkeypatch)
    for setting in (None, 1, 3):
        with pytest.raises(StandInError, match="recorded"):
            load_llm(Config(llm=LlmConfig(engine=engine, burst_threads=setting)))
        assert seen["burst_threads"] == setting
    with pytest.raises(ConfigError, match="burst_threads"):
        LlmConfig(engine=engine, burst_threads=0)
