"""Run the scenario set through simulate (in-process, models loaded once) and score it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voicebox.audio.wav import read_wav, write_wav
from voicebox.bench import scenarios
from voicebox.bench.score import ScenarioScore, TurnScore, held_by, loud_onsets, score, wer
from voicebox.config import Config
from voicebox.events import EventLog
from voicebox.runtime.build import close_engines, load_engines
from voicebox.runtime.session import simulate

REPRESENTATIVE = ("single_0880", "single_0920", "single_002", "single_004",
                  "pause_0890_600ms", "pause_005_400ms", "barge_two_turns", "noisy_0930")
"""The subset the naive and one-core runs use by default: long and short clips, both
pause kinds, the barge-in and noise, about half the audio of the full set."""


@dataclass(slots=True)
class BenchResult:
    """Scores of every scenario plus process-wide costs."""

    label: str
    scores: list[ScenarioScore]
    idle_cpu_pct: float | None = None
    """CPU while listening to silence, % of one core."""
    peak_rss_mb: float = 0.0
    """Peak resident set of the process that ran this (models included)."""
    run_cpu_pct: float | None = None
    """CPU over the whole scenario run (user + system, all threads), % of one core."""
    cores: int | None = None
    """CPUs the process was allowed to run on (1 under ``taskset -c 0``)."""
    wall_s: float = 0.0
    """Wall time of the scenario run, model loading excluded."""
    background_cpu_pct: float | None = None
    """CPU other processes on the machine used while this run ran, % of one core
    (filled in by the parent; a busy machine inflates latencies)."""
    code: str = ""
    """Fingerprint of the voicebox sources this run imported (see ``code_fingerprint``)."""
    summary: dict[str, Any] = field(default_factory=dict)


def scenario_set(names: str = "", *, exact: bool = False) -> list[scenarios.Scenario]:
    """Single turns of every clip, mid-sentence pauses, three barge-ins (one under
    noise), noisy turns.

    ``names`` is a comma-separated list of name fragments (or exact names with ``exact``).
    """
    chosen = scenarios.all_scenarios()
    wanted = [n for n in names.split(",") if n]
    if not wanted:
        return chosen
    if exact:
        return [s for s in chosen if s.name in wanted]
    return [s for s in chosen if any(n in s.name for n in wanted)]


def run_bench(config: Config, chosen: list[scenarios.Scenario], *, label: str = "voicebox",
              idle_s: float = 0.0, events_dir: Path | None = None,
              progress: bool = False, warm: bool = True) -> BenchResult:
    """Load the engines once, simulate every scenario in real time and score the output.

    With ``warm``, an unscored turn runs first (first LLM and TTS calls are slow).
    """
    code = code_fingerprint()
    vad, engines = load_engines(config)
    results: list[ScenarioScore] = []
    if events_dir is not None:
        events_dir.mkdir(parents=True, exist_ok=True)
    try:
        if warm:
            asyncio.run(simulate((w := scenarios.warm_up()).audio, w.rate_hz, config=config,
                                 vad=vad, engines=engines, log=EventLog()))
        c0, w0 = _cpu_s(), time.monotonic()
        for sc in chosen:
            log = EventLog(events_dir / f"{sc.name}.jsonl" if events_dir else None)
            t0 = time.monotonic()
            sim = asyncio.run(simulate(as_read_from_wav(sc), sc.rate_hz, config=config,
                                       vad=vad, engines=engines, log=log))
            log.close()
            s = score(sc.name, {"turns": sc.turns, "barge": sc.barge, "texts": sc.texts},
                      sim.output, sim.sample_rate_hz, sim.events)
            s.pause_cutoffs, extra = pause_cutoffs(sc, sim.output, sim.sample_rate_hz)
            s.cutoffs += extra
            s.wall_s = round(time.monotonic() - t0, 1)
            results.append(s)
            if progress:
                lat = [t.latency_ms for t in s.turns]
                print(f"  [{label}] {sc.name}: latency ms {lat}, cutoffs {s.cutoffs}",
                      flush=True)
        run_cpu = 100 * (_cpu_s() - c0) / max(time.monotonic() - w0, 1e-6)
        wall = time.monotonic() - w0
        idle = _idle_cpu(config, vad, engines, idle_s) if idle_s > 0 else None
    finally:
        close_engines(engines)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = BenchResult(label, results, idle, round(rss, 1), round(run_cpu, 1),
                         len(os.sched_getaffinity(0)), round(wall, 1), code=code)
    result.summary = summarise(result)
    return result


def as_read_from_wav(sc: scenarios.Scenario) -> np.ndarray:
    """The scenario's audio as ``voicebox simulate --in`` reads it from the 16-bit WAV the
    judge is given: the quantisation alone can flip a borderline decode ("5" / "5, 5")."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{sc.name}.wav"
        write_wav(path, sc.audio, sc.rate_hz)
        audio, _ = read_wav(path)
    return audio


def code_fingerprint() -> str:
    """Short hash of every voicebox source file: runs of one bench invocation that differ
    here ran different code (the tree was edited while the bench ran)."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pause_cutoffs(sc: scenarios.Scenario, out: np.ndarray, rate: int) -> tuple[int, int]:
    """Replies that start inside a labelled mid-sentence pause: all of them, and those the
    judge's rule (a reply between the turn's labelled start and end) does not already count.
    """
    onsets, _ = loud_onsets(out, rate)
    inside = [o for o in onsets for a, b in sc.pauses if a <= o <= b]
    extra = [o for o in inside
             if not any(t["speech_start_s"] + 0.05 < o < t["speech_end_s"] - 0.05
                        for t in sc.turns)]
    return len(inside), len(extra)


def _idle_cpu(config: Config, vad: object, engines: object, seconds: float) -> float:
    """CPU time per wall time while listening to silence, in % of one core."""
    audio = np.zeros(int(seconds * 16000), np.float32)
    c0, t0 = _cpu_s(), time.monotonic()
    asyncio.run(simulate(audio, 16000, config=config, vad=vad, engines=engines,  # type: ignore[arg-type]
                         log=EventLog()))
    return round(100 * (_cpu_s() - c0) / (time.monotonic() - t0), 1)


def percentile(values: list[float], q: float) -> float | None:
    """The judge's percentile (numpy, linear), rounded to whole ms."""
    return round(float(np.percentile(sorted(values), q))) if values else None


def wer_of(pairs: list[tuple[str, str]]) -> float | None:
    """Corpus WER over (reference, hypothesis) pairs with a reference."""
    errs = refs = 0
    for ref, hyp in pairs:
        if ref:
            e, n = wer(ref, hyp)
            errs, refs = errs + e, refs + n
    return round(errs / refs, 3) if refs else None


def summarise(result: BenchResult) -> dict[str, Any]:
    turns = [t for s in result.scores for t in s.turns]
    lat = [t.latency_ms for t in turns if t.latency_ms is not None]
    ev = [(t.latency_ms, t.event_latency_ms) for t in turns
          if t.latency_ms is not None and t.event_latency_ms is not None]
    barge = [b for s in result.scores for b in s.barge_stop_ms]
    whole = [(t.reference, t.whole_asr_text) for t in turns if t.whole_asr_text is not None]

    held = [h for t in turns if t.latency_ms is not None and (h := held_by(t.stages))]

    def stage(name: str) -> float | None:
        vals = [t.stages[name] for t in turns if name in t.stages]
        return round(statistics.median(vals), 1) if vals else None

    return {
        "label": result.label,
        "scenarios": len(result.scores),
        "turns": len(turns), "replied": len(lat),
        "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90),
        "event_minus_judge_ms_median":
            round(statistics.median(b - a for a, b in ev)) if ev else None,
        "cutoffs": sum(s.cutoffs for s in result.scores),
        "pause_cutoffs": sum(s.pause_cutoffs for s in result.scores),
        "audio_faults": sum(s.audio_faults for s in result.scores),
        "barge_stop_ms": barge,
        "wer": wer_of([(t.reference, t.transcript) for t in turns]),
        "wer_whole_asr": wer_of(whole) if len(whole) == len(turns) and whole else None,
        "idle_cpu_pct": result.idle_cpu_pct,
        "run_cpu_pct": result.run_cpu_pct,
        "peak_rss_mb": result.peak_rss_mb,
        "cores": result.cores,
        "wall_s": result.wall_s,
        "background_cpu_pct": result.background_cpu_pct,
        "held_by_wait": sum(1 for h in held if h[0] == "wait"),
        "held_by_compute": sum(1 for h in held if h[0] == "compute"),
        "stages_median_ms": {k: stage(k) for k in (
            "vad_end_error_ms", "turn_confirmed_ms", "asr_final_ms", "llm_first_token_ms",
            "tts_first_audio_ms", "reply_ready_ms")},
    }


def subset(result: BenchResult, names: set[str], label: str) -> BenchResult:
    """The same run restricted to some scenarios (to compare with a run on a subset)."""
    r = dataclasses.replace(result, label=label,
                            scores=[s for s in result.scores if s.name in names])
    r.summary = summarise(r)
    return r


def to_dict(result: BenchResult) -> dict[str, Any]:
    """Everything in a BenchResult, as JSON-ready data (the worker's output)."""
    return dataclasses.asdict(result)


def from_dict(data: dict[str, Any]) -> BenchResult:
    scores = [ScenarioScore(**{**s, "turns": [TurnScore(**t) for t in s["turns"]]})
              for s in data["scores"]]
    return BenchResult(**{**data, "scores": scores})


def write_json(result: BenchResult, path: Path) -> None:
    rows = {s.name: {"cutoffs": s.cutoffs, "pause_cutoffs": s.pause_cutoffs,
                     "barge_stop_ms": s.barge_stop_ms, "wall_s": s.wall_s,
                     "turns": [{"latency_ms": t.latency_ms, "event_latency_ms": t.event_latency_ms,
                                "transcript": t.transcript, "whole_asr_text": t.whole_asr_text,
                                "reference": t.reference, "stages": t.stages} for t in s.turns]}
            for s in result.scores}
    path.write_text(json.dumps({"summary": result.summary, "rows": rows}, indent=1))
