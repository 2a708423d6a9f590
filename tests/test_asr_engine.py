"""WhisperAsrEngine on the real tiny.en model and real recorded speech."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.clips import needs_testdata, read_clip
from voicebox.bench.score import normalise, word_edits
from voicebox.engines.protocols import AsrEngine, FloatAudio
from voicebox.errors import ModelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LIBRIVOX = "sense_and_sensibility_01_austen_64kb-"
REFERENCES = {
    f"librivox/{LIBRIVOX}0870": "and mister john dashwood had then leisure to consider how much "
    "there might be prudently in his power to do for them",
    f"librivox/{LIBRIVOX}0930": "he might even have been made amiable himself",
    "cards/001": "ten of clubs",
    "cards/003": "seven of clubs",
    "cards/004": "five five",
    "cards/005": "eight of spades four of clubs seven of hearts",
}

pytestmark = needs_testdata


words = normalise
"""Lowercase words, digits spelled out, ``mr`` as ``mister`` (the bench's normalisation)."""
word_errors = word_edits


def max_run(items: list[str]) -> int:
    """Longest run of one word repeated back to back."""
    best = run = 1 if items else 0
    for a, b in zip(items, items[1:], strict=False):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


@pytest.fixture
def engine(whisper_engine: AsrEngine) -> AsrEngine:
    return whisper_engine


@pytest.mark.slow
@pytest.mark.parametrize("final", [True, False], ids=["final", "partial"])
def test_transcripts_match_references(engine: AsrEngine, final: bool) -> None:
    errors = total = 0
    for name, reference in REFERENCES.items():
        result = engine.transcribe(read_clip(name), final=final)
        ref = reference.split()
        errors += word_errors(ref, words(result.text))
        total += len(ref)
        assert result.audio_s == pytest.approx(len(read_clip(name)) / 16_000)
    # tiny.en scores ~0.05-0.09 here; the bound only catches a broken engine.
    assert errors / total < 0.25


@pytest.mark.slow
@pytest.mark.parametrize("final", [True, False], ids=["final", "partial"])
def test_short_clips_do_not_loop(engine: AsrEngine, final: bool) -> None:
    for number in ("001", "002", "003", "004"):
        audio = read_clip(f"cards/{number}")
        hyp = words(engine.transcribe(audio, final=final).text)
        assert 1 <= len(hyp) <= 6, hyp
        assert max_run(hyp) <= 2, hyp


@pytest.mark.slow
@pytest.mark.parametrize("final", [True, False], ids=["final", "partial"])
def test_degenerate_input_gives_little_or_no_text(engine: AsrEngine, final: bool) -> None:
    rng = np.random.default_rng(7)
    cases: dict[str, FloatAudio] = {
        "empty": np.zeros(0, dtype=np.float32),
        "silence": np.zeros(32_000, dtype=np.float32),
        "click": np.array([0.5], dtype=np.float32),
        "noise_0.3s": (0.1 * rng.standard_normal(4_800)).astype(np.float32),
        "loud_noise_2s": np.clip(rng.standard_normal(32_000), -1, 1).astype(np.float32),
        "hum": (0.3 * np.sin(np.arange(16_000) * 2 * np.pi * 120 / 16_000)).astype(np.float32),
    }
    for name, audio in cases.items():
        result = engine.transcribe(audio, final=final)
        hyp = words(result.text)
        assert len(hyp) <= 3, (name, result.text)
        assert max_run(hyp) <= 2, (name, result.text)
    assert engine.transcribe(cases["silence"], final=final).text == ""
    assert engine.transcribe(cases["empty"], final=final).audio_s == 0.0


@pytest.mark.slow
def test_prompt_continues_without_repeating_it(engine: AsrEngine) -> None:
    audio = read_clip(f"librivox/{LIBRIVOX}0870")
    half = len(audio) // 2
    first = engine.transcribe(audio[:half], final=False).text
    assert "dashwood" in first.lower()
    second = engine.transcribe(audio[half:], final=True, prompt=first).text
    tail = [
        "how",
        "much",
        "there",
        "might",
        "be",
        "prudently",
        "in",
        "his",
        "power",
        "to",
        "do",
        "for",
        "them",
    ]
    assert word_errors(tail, words(second)) <= 3, second
    assert "dashwood" not in second.lower()


@pytest.mark.slow
def test_very_long_prompt_is_truncated_not_fatal(engine: AsrEngine) -> None:
    prompt = " ".join(["the queen of hearts and the knave of clubs"] * 200)
    result = engine.transcribe(read_clip("cards/003"), final=True, prompt=prompt)
    assert "seven" in words(result.text)


@pytest.mark.slow
def test_audio_longer_than_whisper_window(engine: AsrEngine) -> None:
    names = [f"librivox/{LIBRIVOX}{n}" for n in ("0870", "0880", "0890", "0920", "0930")]
    names += [f"cards/00{n}" for n in range(1, 6)]
    gap = np.zeros(4_000, dtype=np.float32)
    audio = np.concatenate([part for name in names for part in (read_clip(name), gap)])
    assert len(audio) > 30 * 16_000
    result = engine.transcribe(audio, final=True)
    hyp = words(result.text)
    assert "dashwood" in hyp and "spades" in hyp
    assert 60 <= len(hyp) <= 110


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    from voicebox.engines.whisper_asr import WhisperAsrEngine

    with pytest.raises(ModelError, match="model.bin"):
        WhisperAsrEngine(tmp_path)


def test_trim_loop_keeps_the_first_occurrence() -> None:
    from voicebox.engines.asr_checks import has_loop, trim_loop

    assert trim_loop("10 of clubs. 10 of clubs. 10 of") == "10 of clubs"
    assert trim_loop("5 5 5 5 5 5") == "5"
    assert trim_loop("He was not an ill-disposed young man.") == (
        "He was not an ill-disposed young man."
    )
    assert has_loop(["four", "queen", "of", "clubs", "four", "queen", "of", "clubs"])
    assert not has_loop(["five", "five"])
    assert not has_loop(["he", "was", "not", "an", "ill", "disposed", "young", "man"])


def partials_then_final(engine: AsrEngine, audio: FloatAudio) -> str:
    """What the pipeline does: a partial every 400 ms of speech, then the final."""
    for end in range(6_400, len(audio), 6_400):
        engine.transcribe(audio[:end], final=False)
    return engine.transcribe(audio, final=True).text


@pytest.mark.slow
def test_final_after_partials_is_no_worse_than_cold(engine: AsrEngine) -> None:
    cold = warm = total = 0
    for name, reference in REFERENCES.items():
        audio = read_clip(name)
        ref = reference.split()
        engine.transcribe(np.zeros(1_600, dtype=np.float32), final=False)  # another utterance
        cold += word_errors(ref, words(engine.transcribe(audio, final=True).text))
        warm += word_errors(ref, words(partials_then_final(engine, audio)))
        total += len(ref)
    assert warm <= cold, (warm, cold, total)


@pytest.mark.slow
def test_partials_of_one_utterance_do_not_leak_into_the_next(engine: AsrEngine) -> None:
    first = read_clip(f"librivox/{LIBRIVOX}0870")
    second = read_clip(f"librivox/{LIBRIVOX}0920")
    reference = words(
        "had he married a more amiable woman he might have been made still more "
        "respectable than he was"
    )
    alone = engine.transcribe(second, final=True).text
    # The final of B straight after A's partials, and after B's own partials, both
    # transcribe B: nothing heard of A carries over.
    partials_then_final(engine, first)
    for end in range(6_400, len(first), 6_400):
        engine.transcribe(first[:end], final=False)
    assert engine.transcribe(second, final=True).text == alone
    after_own = words(partials_then_final(engine, second))
    assert "dashwood" not in after_own
    assert word_errors(reference, after_own) <= max(word_errors(reference, words(alone)), 2)


def test_a_cancelled_partial_stops_between_encoding_and_decoding(
    engine: AsrEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicebox.engines.whisper_asr import WhisperAsrEngine

    assert isinstance(engine, WhisperAsrEngine)
    audio = read_clip(f"librivox/{LIBRIVOX}0870")
    assert engine.transcribe(audio, final=False).text  # the same call, not cancelled
    cancel = threading.Event()
    decoded: list[int] = []
    encode, decode = engine._encode, engine._decode

    def encode_then_cancel(*args: object, **kwargs: object) -> object:
        out = encode(*args, **kwargs)  # type: ignore[arg-type]
        cancel.set()  # the user paused while the encoder ran
        return out

    def counted_decode(*args: object, **kwargs: object) -> object:
        decoded.append(1)
        return decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_encode", encode_then_cancel)
    monkeypatch.setattr(engine, "_decode", counted_decode)
    result = engine.transcribe(audio, final=False, cancel=cancel)
    assert result.text == "" and decoded == []
    assert engine.transcribe(audio, final=False, cancel=cancel).text == ""  # set before


@pytest.mark.slow
def test_final_beam_is_what_the_config_asks_for() -> None:
    """``asr_final_beam = 1`` reaches the engine: its final is the greedy decode."""
    from voicebox.config import Config
    from voicebox.engines.whisper_asr import WhisperAsrEngine
    from voicebox.models.locate import packaged_path
    from voicebox.runtime.build import build_asr

    audio = read_clip(f"librivox/{LIBRIVOX}0890")
    greedy = build_asr(Config(asr_final_beam=1))
    assert isinstance(greedy, WhisperAsrEngine)
    beam = WhisperAsrEngine(packaged_path("asr"), final_beam=5)
    direct_greedy = WhisperAsrEngine(packaged_path("asr"), final_beam=1)
    got = greedy.transcribe(audio, final=True).text
    assert got == direct_greedy.transcribe(audio, final=True).text
    # On this clip the two decodes differ ("old-sposed" / "ill-disposed"), so the
    # comparison above could tell the engines apart.
    assert got != beam.transcribe(audio, final=True).text


@pytest.mark.slow
def test_a_looping_final_is_decoded_again_without_repeats(
    engine: AsrEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """"five five" loops on the 10 s window ("5, 5, 5,"); the retry on the same encoder
    output with no trigram repeated gets it right without the 30 s window's encode."""
    with caplog.at_level("DEBUG", logger="voicebox.engines.whisper_asr"):
        text = engine.transcribe(read_clip("cards/004"), final=True).text
    assert words(text) == ["five", "five"], text
    messages = [r.getMessage() for r in caplog.records]
    assert any("decoded without repeats" in m for m in messages), messages
    assert not any("full-window retry" in m for m in messages), messages
