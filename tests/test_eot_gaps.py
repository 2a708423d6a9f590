"""The every-gap end-of-turn check (voicebox.bench.gaps) and the shipped configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import voicebox.bench.gaps as gaps_module
from voicebox.bench.run import as_read_from_wav
from voicebox.bench.scenarios import Scenario, clips
from voicebox.config import Config, load_config
from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, VadEngine
from voicebox.engines.whisper_asr import WhisperAsrEngine
from voicebox.models.locate import packaged_path
from voicebox.runtime.build import load_vad
from voicebox.runtime.turns import TurnDetector, frame_level

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gaps() -> ModuleType:
    return gaps_module


def _pause(gaps: ModuleType, llm: float, audio: float, *, end: bool = False) -> object:
    return gaps.Pause("s", 1.0, "some words", llm, audio, 900.0, end, 40.0 if end else None)


def test_gap_is_cut_when_pause_outlasts_required_silence(gaps: ModuleType) -> None:
    config = load_config(None)
    # A confident score (LLM at its full value, audio 1.0) needs the curve's last silence;
    # a doubtful one (both 0) needs end_of_turn_ms.
    sure = gaps.Gap("c", False, "a b", "mid", 100.0, _pause(gaps, 0.5, 1.0))
    doubt = gaps.Gap("c", False, "a", "mid", 100.0, _pause(gaps, 0.0, 0.0))
    end = gaps.End("c", False, _pause(gaps, 0.0, 0.0, end=True))
    out = gaps.evaluate(config, [sure, doubt], [end])
    last_ms = config.turn.silence_curve[-1][1]
    cut_sure = [100 + ms > last_ms for ms in gaps.PAUSES_MS]
    cut_doubt = [100 + ms > config.turn.end_of_turn_ms for ms in gaps.PAUSES_MS]
    for ms, a, b in zip(gaps.PAUSES_MS, cut_sure, cut_doubt, strict=True):
        assert out[f"mid_cutoffs_{ms}ms"] == f"{int(a) + int(b)}/2"
    # The VAD heard the end 40 ms late, and the silence counts from there.
    assert out["median_wait_after_labelled_end_ms"] == config.turn.end_of_turn_ms + 40.0


def test_wait_counts_from_the_vads_end_of_speech(gaps: ModuleType) -> None:
    config = load_config(None)
    early = gaps.End("c", False, gaps.Pause("s", 1.0, "a b", 0.0, 0.0, 1500.0, True, -150.0))
    late = gaps.End("c", False, gaps.Pause("s", 1.0, "a b", 0.0, 0.0, 1500.0, True, 60.0))
    wait = config.turn.end_of_turn_ms
    assert gaps.evaluate(config, [], [early])["median_wait_after_labelled_end_ms"] == wait - 150
    assert gaps.evaluate(config, [], [late])["median_wait_after_labelled_end_ms"] == wait + 60
    # The fit counts the same way: a sure end (the curve's shortest silence, 200 ms) that
    # the VAD heard 150 ms early is answered 50 ms after its labelled end.
    gap = gaps.Gap("c", False, "a", "mid", 0.0, _pause(gaps, 0.0, 0.0))
    sure = gaps.End("c", False, gaps.Pause("s", 1.0, "a b", 0.5, 0.0, 1500.0, True, -150.0))
    fit = gaps.fit_curve(config, [gap], [sure], 0.0)
    assert fit is not None and fit.median_wait_ms == gaps.FIT_MS[0] - 150


def test_a_short_pause_at_the_labelled_end_is_not_an_end(gaps: ModuleType) -> None:
    # The user paused 64 ms before the last word: near the labelled end, but not the end.
    before_last_word = gaps.Pause("s", 1.0, "a b", 0.3, 0.5, 64.0, True, -220.0)
    assert not gaps.is_real_end(before_last_word)
    assert gaps.is_real_end(gaps.Pause("s", 1.2, "a b c", 0.3, 0.5, 1600.0, True, 30.0))
    assert not gaps.is_real_end(gaps.Pause("s", 0.5, "a", 0.3, 0.5, 1600.0, False, None))


def test_missed_next_word_and_unheard_gaps_are_counted_apart(gaps: ModuleType) -> None:
    config = load_config(None)
    missed = gaps.Gap("c", False, "a", "mid", gaps.MISSED_MS + 1.0, _pause(gaps, 0.5, 1.0))
    unheard = gaps.Gap("c", False, "a b", "mid", 0.0, None)
    out = gaps.evaluate(config, [missed, unheard], [])
    assert out["gaps_next_word_missed"] == 1
    assert out["gaps_without_pause"] == 1
    assert out["mid_cutoff_rate"] is None


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_fit_finds_the_least_wait_within_the_cutoff_budget(gaps: ModuleType) -> None:
    config = load_config(None)
    # One mid-phrase gap and one real end with the same confident score (LLM at its full
    # value, audio 0.9): no silence can both answer the end at once and wait out the gap.
    gap = gaps.Gap("c", False, "a", "mid", 0.0, _pause(gaps, 0.5, 0.9))
    end = gaps.End("c", False, gaps.Pause("s", 1.0, "a b", 0.5, 0.9, 900.0, True, 0.0))
    safe = gaps.fit_curve(config, [gap], [end], 0.0)
    assert safe is not None and safe.cutoff_rate == 0.0
    assert safe.median_wait_ms == 600  # as long as the longest pause (not answered in it)
    third = gaps.fit_curve(config, [gap], [end], 0.34)  # the 600 ms pause may be cut
    assert third is not None and third.median_wait_ms == 450
    assert gaps.fit_curve(config, [gap], [], 0.0) is None


def test_the_speakers_own_gap_counts_towards_the_pause(gaps: ModuleType) -> None:
    # The VAD heard 200 ms more than the 600 ms inserted at this gap, of which the speaker's
    # own silence (by energy) was 150 ms: a 300 ms pause there adds 150 ms, not 300.
    gap = gaps.Gap("c", False, "a", "mid", 200.0, _pause(gaps, 0.0, 0.0), gap_ms=150.0)
    assert [gaps.heard_silence_ms(gap, ms) for ms in gaps.PAUSES_MS] == [350.0, 500.0, 650.0]
    long_gap = gaps.Gap("c", False, "a", "mid", 520.0, _pause(gaps, 0.0, 0.0), gap_ms=500.0)
    assert gaps.heard_silence_ms(long_gap, 300) == 520.0  # longer than asked: nothing added
    # The stricter count (the pause added on top of the speaker's gap) is reported beside.
    config = load_config(None)
    wait = config.turn.end_of_turn_ms
    tight = gaps.Gap("c", False, "a", "mid", wait - 500.0, _pause(gaps, 0.0, 0.0),
                     gap_ms=wait - 500.0)
    out = gaps.evaluate(config, [tight], [])
    assert out["mid_cutoff_rate"] == 0.0
    assert out["mid_cutoff_rate_added"] == pytest.approx(1 / 3, abs=1e-3)


def test_bench_pauses_hold_the_speakers_gap() -> None:
    from voicebox.bench.scenarios import _Builder, by_name, paused_turns

    for sc in paused_turns():
        (start, end), = sc.pauses
        nominal = int(sc.name.rsplit("_", 1)[1].removesuffix("ms")) / 1000
        assert end - start == pytest.approx(nominal, abs=0.011)  # one 10 ms frame
    clip = by_name()["sense_and_sensibility_01_austen_64kb-0870"]
    added = _Builder("x").speech(clip, pause_at_s=3.0, pause_s=0.45, pause_holds_gap=False).done()
    held = _Builder("y").speech(clip, pause_at_s=3.0, pause_s=0.45).done()
    assert added.pauses[0][1] - added.pauses[0][0] == pytest.approx(0.45)
    assert len(held.audio) < len(added.audio)  # the speaker's own quiet was not added to


def _silence_at(config: Config, audio: np.ndarray, vad: VadEngine, at_s: float) -> float:
    """The silence (ms) the turn detector has counted when the stream reaches ``at_s``."""
    vad.reset()
    n = vad.frame_samples
    det = TurnDetector(config.turn, n / ASR_SAMPLE_RATE_HZ)
    for k in range(int(at_s * ASR_SAMPLE_RATE_HZ) // n):
        frame = audio[k * n : (k + 1) * n]
        det.update(vad.probability(frame), (k + 1) * n / ASR_SAMPLE_RATE_HZ, frame_level(frame))
    return det.silence_ms


def test_energy_hold_hears_the_soft_word_after_a_pause(gaps: ModuleType) -> None:
    """0870 with 600 ms of silence added after "... in his power to do": silero never
    calls the soft "for them" after it speech (0.42 at most), so with the VAD alone the
    pause runs on through those words, and a turn scored as finished would be answered
    over them (the every-gap table had it as a 2 s pause). The energy hold hears "for"
    begin and the count starts again."""
    from faster_whisper import WhisperModel

    clip = next(c for c in clips() if c.name.endswith("0870"))
    whisper = WhisperModel(str(packaged_path("asr")), device="cpu", compute_type="int8",
                           cpu_threads=2)
    at_s = next(at for at, before, _ in gaps.word_gaps(whisper, clip)
                if before.endswith("power to do"))
    sc = gaps.scenario(clip, at_s, noisy=False)
    audio = as_read_from_wav(sc)
    end_s = sc.turns[0]["speech_end_s"]  # the last 10 ms above -40 dBFS: inside "for"
    config = load_config(None)
    vad = load_vad(config)
    held = _silence_at(config, audio, vad, end_s)
    vad_only = _silence_at(
        dataclasses.replace(config, turn=dataclasses.replace(config.turn, energy_hold=False)),
        audio, vad, end_s)
    assert held < 200
    assert vad_only > gaps.INSERT_S * 1000  # the pause and the word, all silence


class _LoudVad:
    """A VAD that calls a frame speech when it is loud (a fake: the real silero is above)."""

    frame_samples = 512

    def probability(self, frame: np.ndarray) -> float:
        return 0.9 if frame_level(frame) > 0.05 else 0.05

    def reset(self) -> None:
        pass


class _Words:
    def transcribe(self, audio: np.ndarray, *, final: bool) -> object:
        return type("T", (), {"text": "some words"})()

    def end_of_turn_probability(self, messages: object) -> float:
        return 0.0

    def probability(self, audio: np.ndarray) -> float:
        return 0.0


def test_replay_counts_a_pause_between_the_sounds_the_hold_hears(gaps: ModuleType) -> None:
    """Speech, 0.3 s of quiet, a soft sound the VAD calls silence, 0.6 s of quiet, speech:
    the pause row lasts until the VAD hears speech again, and its silence is the longest
    stretch the detector counted (the 0.6 s), not the whole 0.9 s."""
    rate = ASR_SAMPLE_RATE_HZ
    t = np.arange(rate) / rate
    voice = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    room = np.full(rate * 2, 1e-3, dtype=np.float32) * np.sign(np.sin(np.arange(rate * 2)))
    soft = (0.03 * np.sin(2 * np.pi * 220 * t[: rate // 10])).astype(np.float32)
    parts = [room[:rate], voice, room[: int(rate * 0.3)], soft, room[: int(rate * 0.6)],
             voice[: rate // 2], room[: int(rate * 1.5)]]
    audio = np.concatenate(parts)
    sc = Scenario("hold", audio, rate, turns=[{"speech_start_s": 1.0,
                                                           "speech_end_s": 3.5}])
    fake = _Words()
    models = gaps.Models(_LoudVad(), fake, fake, fake)
    rows = gaps.replay(load_config(None), models, sc)
    pause = next(p for p in rows if 1.9 < p.at_s < 2.2)
    assert 600 <= pause.silence_ms <= 700
    assert pause.until_s is not None and 3.0 <= pause.until_s <= 3.1
    assert pause.end_s == pause.until_s


def test_replay_decodes_the_final_as_configured() -> None:
    """The scores move with the final transcript's spelling, so the replay decodes it
    with the configured beam, as the pipeline does (it once kept beam 5 whatever the
    config said, and a greedy-final config was checked against beam-5 scores)."""
    greedy = dataclasses.replace(load_config(None), asr_final_beam=1)
    models = gaps_module.Models.load(greedy)
    try:
        assert isinstance(models.asr, WhisperAsrEngine)
        assert models.asr._final_beam == 1
    finally:
        models.llm.close()
