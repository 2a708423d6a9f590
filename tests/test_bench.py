"""Bench scoring against the independent judge (../shared/bench/v2v.py) on synthetic output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.clips import dbfs, needs_testdata
from voicebox.audio.wav import read_wav, write_wav
from voicebox.bench.compare import judge_difference, ratios
from voicebox.bench.naive import naive_config
from voicebox.bench.run import BenchResult, from_dict, summarise, to_dict
from voicebox.bench.score import assign_turns, held_by, normalise, score, wer
from voicebox.bench.targets import check
from voicebox.config import Config, load_config
from voicebox.errors import VoiceboxError
from voicebox.events import (
    EndOfTurnScored,
    Event,
    PlaybackStarted,
    SpeechStarted,
    TranscriptFinal,
    TtsFirstAudio,
    TurnEnded,
)

RATE = 16_000
V2V = Path(__file__).resolve().parents[2] / "shared" / "bench" / "v2v.py"


def _v2v() -> ModuleType | None:
    if not V2V.is_file():
        return None
    spec = importlib.util.spec_from_file_location("v2v_judge", V2V)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _output(seconds: float, loud: list[tuple[float, float]]) -> np.ndarray:
    """Silence with a 440 Hz tone (-20 dBFS) over each (start, end) span."""
    out = np.zeros(int(seconds * RATE), np.float32)
    for a, b in loud:
        i, j = int(a * RATE), int(b * RATE)
        out[i:j] = 0.1 * np.sin(2 * np.pi * 440 * np.arange(j - i) / RATE)
    return out


def _both(tmp_path: Path, labels: dict[str, Any], out: np.ndarray,
          events: list[Event] | None = None) -> tuple[Any, dict[str, Any] | None]:
    """Our score and the judge's, on the same 16-bit WAV."""
    wav = tmp_path / "out.wav"
    write_wav(wav, out, RATE)
    audio, rate = read_wav(wav)
    ours = score("s", labels, audio, rate, events or [])
    v2v = _v2v()
    return ours, (v2v.judge(labels, wav) if v2v is not None else None)


TWO_TURNS = {"turns": [{"speech_start_s": 0.5, "speech_end_s": 2.0},
                       {"speech_start_s": 4.0, "speech_end_s": 5.0}],
             "texts": ["ten of clubs", "two of hearts"]}


def test_latency_matches_judge(tmp_path: Path) -> None:
    ours, theirs = _both(tmp_path, TWO_TURNS, _output(8.0, [(2.18, 3.0), (5.25, 6.0)]))
    assert [t.latency_ms for t in ours.turns] == [180, 250]
    assert ours.cutoffs == 0
    if theirs is not None:
        assert [t["latency_s"] for t in theirs["turns"]] == [0.18, 0.25]
        assert [round(1000 * t["latency_s"]) for t in theirs["turns"]] == \
            [t.latency_ms for t in ours.turns]


def test_missing_reply_and_reply_after_next_turn_start(tmp_path: Path) -> None:
    # the first reply only starts once the user speaks again: it answers nothing
    ours, theirs = _both(tmp_path, TWO_TURNS, _output(8.0, [(4.2, 4.5)]))
    assert [t.latency_ms for t in ours.turns] == [None, None]
    assert ours.cutoffs == 1
    if theirs is not None:
        assert [t["latency_s"] for t in theirs["turns"]] == [None, None]
        assert theirs["cutoffs"] == ours.cutoffs


def test_cutoff_in_mid_sentence_pause(tmp_path: Path) -> None:
    labels = {"turns": [{"speech_start_s": 0.5, "speech_end_s": 4.0}],
              "pauses": [[2.0, 2.5]], "texts": ["ten of clubs"]}
    ours, theirs = _both(tmp_path, labels, _output(7.0, [(2.3, 2.6), (4.1, 5.0)]))
    assert ours.cutoffs == 1
    assert ours.turns[0].latency_ms == 100
    if theirs is not None:
        assert theirs["cutoffs"] == 1
        assert theirs["turns"][0]["latency_s"] == 0.1


def test_barge_stop_time_matches_judge(tmp_path: Path) -> None:
    labels = {"turns": [{"speech_start_s": 0.5, "speech_end_s": 2.0},
                        {"speech_start_s": 3.2, "speech_end_s": 4.0}], "barge": [3.2]}
    ours, theirs = _both(tmp_path, labels, _output(7.0, [(2.2, 3.5)]))
    assert ours.barge_stop_ms == [300]
    if theirs is not None:
        assert theirs["barge_stop_s"] == [0.3]


def test_no_barge_stop_when_reply_was_already_silent(tmp_path: Path) -> None:
    labels = {"turns": [{"speech_start_s": 0.5, "speech_end_s": 2.0}], "barge": [4.0]}
    ours, theirs = _both(tmp_path, labels, _output(7.0, [(2.2, 3.0)]))
    assert ours.barge_stop_ms == []
    if theirs is not None:
        assert theirs["barge_stop_s"] == []


def test_wer_normalises_numbers_case_and_punctuation() -> None:
    assert normalise("10 of Clubs.") == ["ten", "of", "clubs"]
    assert wer("ten of clubs", "10 of clubs") == (0, 3)
    assert wer("Mr. Dashwood's son", "mister dashwood's son") == (0, 3)
    assert wer("eight of spades four of clubs", "8 of spades, 4 of close") == (1, 6)
    assert wer("ten of clubs", "") == (3, 3)


def _events() -> list[Event]:
    """A pipeline that split the first labelled turn in two, then answered the second."""
    return [
        SpeechStarted(0.0, 0.6, 0), TurnEnded(0.0, 1.9, 0, 1.4, 500, "silence"),
        TranscriptFinal(0.0, 2.0, 0, "eight of spades", 90.0),
        SpeechStarted(0.0, 2.3, 1), TurnEnded(0.0, 3.6, 1, 3.1, 500, "silence"),
        TranscriptFinal(0.0, 3.7, 1, "four of clubs", 80.0),
        PlaybackStarted(0.0, 4.0, 1, 900.0),
        SpeechStarted(0.0, 6.1, 2), TranscriptFinal(0.0, 7.0, 2, "two of hearts", 70.0),
    ]


def test_pipeline_turns_are_assigned_by_time() -> None:
    assert assign_turns(_events(), [0.5, 6.0]) == [[0, 1], [2]]
    assert assign_turns([], [0.5]) == [[]]


def test_split_turn_transcripts_are_joined(tmp_path: Path) -> None:
    labels = {"turns": [{"speech_start_s": 0.5, "speech_end_s": 3.1},
                        {"speech_start_s": 6.0, "speech_end_s": 6.8}],
              "texts": ["eight of spades four of clubs", "two of hearts"]}
    ours, _ = _both(tmp_path, labels, _output(9.0, [(4.0, 4.5)]), _events())
    assert ours.turns[0].transcript == "eight of spades four of clubs"
    assert ours.turns[0].event_latency_ms == 900
    assert ours.turns[0].stages["asr_final_ms"] == 80.0
    assert ours.turns[1].transcript == "two of hearts"


def test_each_turn_says_whether_the_wait_or_the_compute_held_it(tmp_path: Path) -> None:
    from voicebox.bench.report import BenchReport, markdown

    events: list[Event] = [
        # Turn 0 (ends 2.0 s): scored at a pause first, then at its end; the reply was
        # ready at +250 ms and waited for the turn to be confirmed at +400.
        SpeechStarted(0.0, 0.6, 0), EndOfTurnScored(0.0, 1.5, 0, 0.2, 0.1, None, 750),
        EndOfTurnScored(0.0, 2.2, 0, 0.9, 0.45, None, 200),
        TtsFirstAudio(0.0, 2.25, 0, 40.0), TurnEnded(0.0, 2.4, 0, 2.04, 224, "semantic"),
        PlaybackStarted(0.0, 2.41, 0, 370.0),
        # Turn 1 (ends 5.0 s): confirmed at +100 ms, its reply ready only at +300.
        SpeechStarted(0.0, 4.1, 1), TurnEnded(0.0, 5.1, 1, 5.04, 64, "semantic"),
        TtsFirstAudio(0.0, 5.3, 1, 40.0), PlaybackStarted(0.0, 5.31, 1, 270.0),
    ]
    ours, _ = _both(tmp_path, TWO_TURNS, _output(7.0, [(2.41, 2.9), (5.31, 5.8)]), events)
    first, second = ours.turns
    assert first.stages["eot_score"] == 0.9 and first.stages["eot_silence_ms"] == 200
    assert "eot_score" not in second.stages
    assert held_by(first.stages) == ("wait", 150)
    assert held_by(second.stages) == ("compute", 200)
    assert held_by({"reply_ready_ms": 300}) is None

    result = BenchResult("voicebox", [ours], 2.0, 500.0, 30.0, 2, 10.0)
    result.summary = summarise(result)
    assert result.summary["held_by_wait"] == 1 and result.summary["held_by_compute"] == 1
    text = markdown(BenchReport(command="c", main=result, others=[], ratios={},
                                checks=check(result.summary)))
    assert "waited for the turn to be confirmed): 1; by compute" in text
    assert "| 400 | 250 | wait 150 | 0.9 | 200 |" in text
    assert "| 100 | 300 | compute 200 |  |  |" in text


def test_naive_config_matches_the_config_file() -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / "naive-sequential.toml"
    if not path.is_file():
        pytest.skip("configs/naive-sequential.toml missing")
    from_file, built = load_config(path), naive_config(Config())
    assert built.turn.semantic == from_file.turn.semantic is False
    assert built.turn.end_of_turn_ms == from_file.turn.end_of_turn_ms == 500
    assert built.turn.speculate_after_ms == from_file.turn.speculate_after_ms
    assert built.asr_mode == from_file.asr_mode == "whole"
    assert built.llm.stream_tts is from_file.llm.stream_tts is False
    assert built.models == Config().models and built.llm.engine == Config().llm.engine


def _result(label: str, latencies: list[float | None]) -> BenchResult:
    from voicebox.bench.score import ScenarioScore, TurnScore

    scores = [ScenarioScore(f"s{i}", [TurnScore(lat, lat, transcript="ten of clubs",
                                                reference="ten of clubs",
                                                whole_asr_text="ten of clubs")], 0, [])
              for i, lat in enumerate(latencies)]
    r = BenchResult(label, scores, 2.0, 500.0, 30.0, 2, 10.0)
    r.summary = summarise(r)
    return r


def test_result_round_trip_and_summary() -> None:
    r = _result("voicebox", [100, 200, None, 300])
    back = from_dict(json.loads(json.dumps(to_dict(r))))
    assert back == r
    assert r.summary["p50_ms"] == 200 and r.summary["replied"] == 3
    assert r.summary["wer"] == r.summary["wer_whole_asr"] == 0.0


def test_ratio_uses_the_other_runs_scenarios() -> None:
    main = _result("voicebox", [100, 200, 300, 400])
    naive = _result("naive", [400, 800])
    rt = ratios(main, [naive])["naive_over_main"]
    assert rt["main_p50_ms"] == 150 and rt["other_p50_ms"] == 600 and rt["p50_ratio"] == 4.0


def _judge_file(path: Path, latencies_s: list[float | None], errors: tuple[str, ...] = ()) -> Path:
    """A v2v.py ``--json`` file: scenario ``s<i>`` with one turn each, and ``errors``
    (scenario names) that the judge failed."""
    rows: dict[str, Any] = {
        f"s{i}": {"turns": [{"speech_end_s": 1.0, "latency_s": s}], "cutoffs": 0}
        for i, s in enumerate(latencies_s)}
    rows.update({name: {"error": "boom"} for name in errors})
    path.write_text(json.dumps({"summary": {}, "rows": rows}))
    return path


def test_judge_difference_and_targets(tmp_path: Path) -> None:
    main = _result("voicebox", [100, 200, 300])
    path = _judge_file(tmp_path / "judge.json", [0.11, 0.19, 0.31], errors=("s9",))
    j = judge_difference([main], [path])
    assert (j["judge_p50_ms"], j["bench_p50_ms"], j["difference_ms"]) == (190, 200, 10)
    assert (j["turns_compared"], j["turns_within_20_ms"]) == (3, 3)
    assert j["turn_difference_median_ms"] == -10 and j["turns_apart"] == {}
    verdicts = {c.name: c.verdict for c in check(main.summary, j["difference_ms"])}
    assert verdicts["median latency"] == "pass"
    assert verdicts["p90 latency"] == "pass"
    assert verdicts["barge-in stop"] == "n/a"
    assert verdicts["bench vs v2v.py median"] == "pass"
    assert verdicts["peak RSS"] == "pass"


def test_judge_per_turn_differences_skip_unanswered_turns(tmp_path: Path) -> None:
    main = _result("voicebox", [100, None, 700, 400])
    path = _judge_file(tmp_path / "judge.json", [0.1, 0.2, 0.45, None])
    j = judge_difference([main], [path])
    assert j["turns_compared"] == 2 and j["turns_within_20_ms"] == 1
    assert j["turns_apart"] == {"s2#0": 250}
    assert j["turn_difference_median_ms"] == 125


def test_judge_difference_over_several_runs_takes_each_turns_median(tmp_path: Path) -> None:
    """Three runs a side: one run's slow turn (compute-limited, a loaded moment) does not
    move the comparison; a turn no run of a side answered is left out of that side."""
    bench = [_result("voicebox", [100, 200, 300, 400]),
             _result("voicebox_2", [100, 600, 300, None]),
             _result("voicebox_3", [100, 200, 900, None])]
    judge = [_judge_file(tmp_path / "a.json", [0.1, 0.2, 0.3, None]),
             _judge_file(tmp_path / "b.json", [0.1, 0.2, 0.8, None]),
             _judge_file(tmp_path / "c.json", [0.5, 0.2, 0.3, None])]
    j = judge_difference(bench, judge)
    assert (j["bench_runs"], j["judge_runs"], j["scenarios"]) == (3, 3, 4)
    # bench turns at 100, 200, 300, 400 (s3 answered once); judge at 100, 200, 300
    assert (j["bench_p50_ms"], j["judge_p50_ms"], j["difference_ms"]) == (250, 200, 50)
    assert (j["turns_compared"], j["turns_within_20_ms"], j["turns_apart"]) == (3, 3, {})
    # one run a side would have compared the slow turns: 600 against 200
    one = judge_difference([bench[1]], [judge[1]])
    assert one["turns_apart"] == {"s1#0": 400, "s2#0": -500}
    # a scenario any judge run failed is left out of every run
    broken = _judge_file(tmp_path / "d.json", [0.1, 0.2, 0.3, None], errors=("s0",))
    assert judge_difference(bench, [*judge, broken])["scenarios"] == 3


def test_judge_difference_refuses_a_bad_judge_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(VoiceboxError, match="bad.json"):
        judge_difference([_result("voicebox", [100])], [bad])


def test_normalise_spells_numbers_and_abbreviations() -> None:
    assert normalise("Mr. Dashwood had 25 cards, Dr. St-Clair 105.") == [
        "mister", "dashwood", "had", "twenty", "five", "cards", "doctor", "saint", "clair",
        "one", "hundred", "five"]
    assert normalise("'Tis 4. Queen") == ["tis", "four", "queen"]


def test_bench_hears_the_scenario_as_the_judge_does() -> None:
    """16-bit quantised, as `voicebox simulate --in` reads the WAV v2v.py is given."""
    from voicebox.bench.run import as_read_from_wav
    from voicebox.bench.scenarios import Scenario

    rng = np.random.default_rng(3)
    sc = Scenario("q", (0.3 * rng.standard_normal(1600)).astype(np.float32), 16_000)
    heard = as_read_from_wav(sc)
    assert heard.shape == sc.audio.shape and heard.dtype == np.float32
    assert np.abs(heard - sc.audio).max() <= 2 / 32768
    assert np.allclose(heard * 32768, np.round(heard * 32768))  # on the 16-bit grid


def test_report_shows_the_every_gap_check() -> None:
    from voicebox.bench.report import BenchReport, markdown

    main = _result("voicebox", [100, 200, 300])
    gaps = {"mid_cutoff_rate": 0.046, "mid_cutoffs_300ms": "1/124",
            "mid_cutoffs_450ms": "2/124", "mid_cutoffs_600ms": "14/124",
            "item_cutoff_rate": 0.167, "real_ends": 23,
            "median_wait_after_labelled_end_ms": 710, "p90_wait_after_labelled_end_ms": 952.4,
            "gaps_without_pause": 27, "gaps_next_word_missed": 7}
    report = BenchReport(command="voicebox bench", main=main, others=[], ratios={},
                         checks=check(main.summary), gaps=gaps)
    text = markdown(report)
    assert "## End of turn at every word gap" in text
    assert "**0.046**" in text and "600 ms: 14/124" in text and "median 710 ms" in text
    assert report.summary_line()["gaps"] == gaps
    assert "every word gap" not in markdown(
        BenchReport(command="c", main=main, others=[], ratios={}, checks=check(main.summary)))


def test_repeated_runs_report_their_spread() -> None:
    from voicebox.bench.report import BenchReport, markdown, run_spread

    first = _result("voicebox", [100, 200, 300, 450])
    second = _result("voicebox_2", [110, 200, 360, 450])
    spread = run_spread([first, second])
    assert spread["p50_ms"] == [250, 280] and spread["p50_range_ms"] == 30
    assert spread["turns_moved"] == {"s2#0": [300, 360]}  # s0 moved 10 ms: within 20
    report = BenchReport(command="voicebox bench --repeat 2", main=first, others=[],
                         ratios={}, checks=check(first.summary), spread=spread)
    text = markdown(report)
    assert "## Run to run (2 runs" in text and "s2#0 300-360 ms" in text
    assert report.summary_line()["spread"] == spread


@needs_testdata
def test_every_barge_in_is_labelled_at_the_second_turns_voice() -> None:
    from voicebox.bench import scenarios

    for sc in (scenarios.barge_in(), scenarios.second_barge_in(), scenarios.noisy_barge_in()):
        first, second = sc.turns
        assert sc.barge == [second["speech_start_s"]]
        assert second["speech_start_s"] - first["speech_end_s"] >= 1.2  # well into the reply
        # The label is the voice: the input is loud within 30 ms of it, not 100 ms later.
        i = round(sc.barge[0] * sc.rate_hz)
        after = sc.audio[i : i + sc.rate_hz * 3 // 100]
        assert dbfs(after) > -40
    names = [s.name for s in scenarios.all_scenarios()]
    assert {"barge_two_turns", "barge_two_turns_0880", "noisy_barge_0880"} <= set(names)


@needs_testdata
def test_the_noisy_barge_in_is_under_noise_and_its_voice_rises_above_it() -> None:
    from voicebox.bench import scenarios

    sc = scenarios.noisy_barge_in(snr_db=15.0)
    rate = sc.rate_hz
    noise = dbfs(sc.audio[: rate * 4 // 10])  # before the first word
    assert -50 < noise < -35  # noise there, at a level the clean clips never have
    i = round(sc.barge[0] * rate)
    assert dbfs(sc.audio[i + rate * 4 // 100 : i + rate * 10 // 100]) > noise + 15
