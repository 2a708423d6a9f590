"""Compare runs: naive or one-core against the main run, and the bench against v2v.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voicebox.bench.run import BenchResult, percentile, subset
from voicebox.bench.targets import JUDGE_AGREEMENT_MS
from voicebox.errors import VoiceboxError


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def ratios(main: BenchResult, others: list[BenchResult]) -> dict[str, dict[str, Any]]:
    """``other / main`` for p50 and p90, on the scenarios the other run covered."""
    out: dict[str, dict[str, Any]] = {}
    for r in others:
        same = subset(main, {s.name for s in r.scores}, f"{main.label}@{r.label}")
        out[f"{r.label}_over_main"] = {
            "scenarios": len(r.scores),
            "main_p50_ms": same.summary["p50_ms"], "other_p50_ms": r.summary["p50_ms"],
            "main_p90_ms": same.summary["p90_ms"], "other_p90_ms": r.summary["p90_ms"],
            "p50_ratio": _ratio(r.summary["p50_ms"], same.summary["p50_ms"]),
            "p90_ratio": _ratio(r.summary["p90_ms"], same.summary["p90_ms"]),
        }
    return out


def judge_difference(main: BenchResult, judge_json: Path) -> dict[str, Any]:
    """Median latency by ../shared/bench/v2v.py (its ``--json`` file) and by this bench,
    on the scenarios both scored; ``difference_ms`` is bench minus judge."""
    try:
        rows: dict[str, Any] = json.loads(judge_json.read_text())["rows"]
    except (OSError, ValueError, KeyError) as exc:
        raise VoiceboxError(f"--judge-json {judge_json}: {exc}") from None
    ok = {name for name, row in rows.items() if "error" not in row}
    same = subset(main, ok, f"{main.label}@judge")
    names = {s.name for s in same.scores}
    lat = [1000 * t["latency_s"] for name in sorted(names) for t in rows[name]["turns"]
           if t["latency_s"] is not None]
    judge_p50 = percentile(lat, 50)
    bench_p50 = same.summary["p50_ms"]
    per_turn = turn_differences(same, rows)
    diffs: list[float] = [d for _, d in per_turn]
    return {
        "scenarios": len(names), "judge_errors": len(rows) - len(ok),
        "judge_p50_ms": judge_p50, "bench_p50_ms": bench_p50,
        "judge_p90_ms": percentile(lat, 90), "bench_p90_ms": same.summary["p90_ms"],
        "judge_cutoffs": sum(rows[n]["cutoffs"] for n in names),
        "bench_cutoffs": same.summary["cutoffs"],
        "difference_ms": None if judge_p50 is None or bench_p50 is None
        else bench_p50 - judge_p50,
        "turns_compared": len(diffs),
        "turns_within_20_ms": sum(abs(d) <= JUDGE_AGREEMENT_MS for d in diffs),
        "turn_difference_median_ms": percentile(diffs, 50),
        "turns_apart": {key: d for key, d in per_turn if abs(d) > JUDGE_AGREEMENT_MS},
    }


def turn_differences(main: BenchResult, rows: dict[str, Any]) -> list[tuple[str, int]]:
    """Bench minus judge latency for every turn both answered, keyed ``scenario#turn``.

    The two are separate runs: a turn whose reply waits for its end-of-turn silence
    comes out the same in both, while one whose reply waits for its compute moves with
    the load of the moment. Per turn, the median difference says whether the two
    measure alike even when run-to-run noise moves the difference of the medians."""
    out = []
    for s in main.scores:
        turns = rows.get(s.name, {}).get("turns", [])
        for i, (mine, theirs) in enumerate(zip(s.turns, turns, strict=False)):
            if mine.latency_ms is not None and theirs.get("latency_s") is not None:
                out.append((f"{s.name}#{i}", round(mine.latency_ms - 1000 * theirs["latency_s"])))
    return out


def turns_apart_text(judge: dict[str, Any]) -> str:
    """``judge_difference``'s turns more than the agreement apart, as one line."""
    apart = judge["turns_apart"]
    return ", ".join(f"{key} {d:+} ms" for key, d in apart.items()) or "none"
