"""Run the scenario set through simulate (in-process, models loaded once) and score it."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voicebox.bench import scenarios
from voicebox.bench.score import ScenarioScore, score, wer
from voicebox.config import Config
from voicebox.events import EventLog
from voicebox.runtime.build import close_engines, load_engines
from voicebox.runtime.session import simulate


@dataclass(slots=True)
class BenchResult:
    """Scores of every scenario plus process-wide costs."""

    label: str
    scores: list[ScenarioScore]
    idle_cpu_pct: float | None = None
    peak_rss_mb: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


def scenario_set(names: str = "") -> list[scenarios.Scenario]:
    """Single turns of every clip, mid-sentence pauses, a barge-in, noise."""
    chosen = [*scenarios.single_turns(), *scenarios.paused_turns(), scenarios.barge_in(),
              *scenarios.noisy_turns()]
    return [s for s in chosen if not names or any(n in s.name for n in names.split(","))]


def run_bench(config: Config, chosen: list[scenarios.Scenario], *, label: str = "voicebox",
              idle_s: float = 0.0, events_dir: Path | None = None) -> BenchResult:
    vad, engines = load_engines(config)
    results: list[ScenarioScore] = []
    try:
        for sc in chosen:
            log = EventLog(events_dir / f"{sc.name}.jsonl" if events_dir else None)
            t0 = time.monotonic()
            sim = asyncio.run(simulate(sc.audio, sc.rate_hz, config=config, vad=vad,
                                       engines=engines, log=log))
            log.close()
            s = score(sc.name, {"turns": sc.turns, "barge": sc.barge, "texts": sc.texts},
                      sim.output, sim.sample_rate_hz, sim.events)
            s.cutoffs += _pause_cutoffs(sc, sim.output, sim.sample_rate_hz)
            s.wall_s = round(time.monotonic() - t0, 1)
            results.append(s)
        idle = _idle_cpu(config, vad, engines, idle_s) if idle_s > 0 else None
    finally:
        close_engines(engines)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = BenchResult(label, results, idle, round(rss, 1))
    result.summary = summarise(result)
    return result


def _pause_cutoffs(sc: scenarios.Scenario, out: np.ndarray, rate: int) -> int:
    """Replies that start inside a labelled mid-sentence pause (the judge counts the rest)."""
    from voicebox.bench.score import loud_onsets

    onsets, _ = loud_onsets(out, rate)
    return 0 if not sc.pauses else sum(
        1 for o in onsets for a, b in sc.pauses if a <= o <= b
        and not any(t["speech_start_s"] + 0.05 < o < t["speech_end_s"] - 0.05 for t in sc.turns)
    )


def _idle_cpu(config: Config, vad: object, engines: object, seconds: float) -> float:
    """CPU time per wall time while listening to silence, in % of one core."""
    audio = np.zeros(int(seconds * 16000), np.float32)
    c0, t0 = time.process_time(), time.monotonic()
    asyncio.run(simulate(audio, 16000, config=config, vad=vad, engines=engines,  # type: ignore[arg-type]
                         log=EventLog()))
    return round(100 * (time.process_time() - c0) / (time.monotonic() - t0), 1)


def summarise(result: BenchResult) -> dict[str, Any]:
    turns = [t for s in result.scores for t in s.turns]
    lat = sorted(t.latency_ms for t in turns if t.latency_ms is not None)
    ev = [(t.latency_ms, t.event_latency_ms) for t in turns
          if t.latency_ms is not None and t.event_latency_ms is not None]
    errs = refs = 0
    for t in turns:
        if t.reference:
            e, n = wer(t.reference, t.transcript)
            errs, refs = errs + e, refs + n
    barge = [b for s in result.scores for b in s.barge_stop_ms]

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q))) if lat else None

    def stage(name: str) -> float | None:
        vals = [t.stages[name] for t in turns if name in t.stages]
        return round(statistics.median(vals), 1) if vals else None

    return {
        "label": result.label,
        "turns": len(turns), "replied": len(lat),
        "p50_ms": pct(50), "p90_ms": pct(90),
        "event_minus_judge_ms_median": round(statistics.median(b - a for a, b in ev)) if ev else None,
        "cutoffs": sum(s.cutoffs for s in result.scores),
        "barge_stop_ms": barge,
        "wer": round(errs / refs, 3) if refs else None,
        "idle_cpu_pct": result.idle_cpu_pct,
        "peak_rss_mb": result.peak_rss_mb,
        "stages_median_ms": {k: stage(k) for k in (
            "vad_end_error_ms", "turn_confirmed_ms", "asr_final_ms", "llm_first_token_ms",
            "tts_first_audio_ms", "reply_ready_ms")},
    }


def write_json(result: BenchResult, path: Path) -> None:
    rows = {s.name: {"cutoffs": s.cutoffs, "barge_stop_ms": s.barge_stop_ms, "wall_s": s.wall_s,
                     "turns": [{"latency_ms": t.latency_ms, "event_latency_ms": t.event_latency_ms,
                                "transcript": t.transcript, "reference": t.reference,
                                "stages": t.stages} for t in s.turns]}
            for s in result.scores}
    path.write_text(json.dumps({"summary": result.summary, "rows": rows}, indent=1))
