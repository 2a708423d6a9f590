"""Compare runs: naive or one-core against the main run, and the bench against v2v.py."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
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


def judge_difference(runs: Sequence[BenchResult], judge_jsons: Sequence[Path]) -> dict[str, Any]:
    """Median latency by ../shared/bench/v2v.py (its ``--json`` files) and by this bench,
    on the scenarios every judge run scored; ``difference_ms`` is bench minus judge.

    With several runs on a side (``voicebox bench --repeat``, v2v.py run more than once),
    each turn counts with its median latency over the runs that answered it, so the
    comparison is of the two measurements, less the load of the moment on turns whose
    reply waits for its compute. With one run a side it is the plain medians."""
    tables = [_judge_rows(path) for path in judge_jsons]
    if not runs or not tables:
        raise VoiceboxError("judge comparison needs a bench run and a v2v.py --json file")
    ok = set.intersection(*({n for n, row in rows.items() if "error" not in row}
                            for rows in tables))
    same = [subset(r, ok, f"{r.label}@judge") for r in runs]
    names = [s.name for s in same[0].scores]
    bench = _turn_medians([{s.name: [t.latency_ms for t in s.turns] for s in r.scores}
                           for r in same])
    judge = _turn_medians([{n: [None if t["latency_s"] is None else 1000 * t["latency_s"]
                                for t in rows[n]["turns"]] for n in names} for rows in tables])
    bench_lat = [v for v in bench.values() if v is not None]
    judge_lat = [v for v in judge.values() if v is not None]
    judge_p50, bench_p50 = percentile(judge_lat, 50), percentile(bench_lat, 50)
    per_turn = turn_differences(bench, judge)
    diffs: list[float] = [d for _, d in per_turn]
    return {
        "scenarios": len(names), "judge_errors": len(tables[0]) - len(ok),
        "bench_runs": len(same), "judge_runs": len(tables),
        "judge_p50_ms": judge_p50, "bench_p50_ms": bench_p50,
        "judge_p90_ms": percentile(judge_lat, 90), "bench_p90_ms": percentile(bench_lat, 90),
        "judge_cutoffs": sum(rows[n]["cutoffs"] for rows in tables for n in names),
        "bench_cutoffs": sum(r.summary["cutoffs"] for r in same),
        "difference_ms": None if judge_p50 is None or bench_p50 is None
        else bench_p50 - judge_p50,
        "turns_compared": len(diffs),
        "turns_within_20_ms": sum(abs(d) <= JUDGE_AGREEMENT_MS for d in diffs),
        "turn_difference_median_ms": percentile(diffs, 50),
        "turns_apart": {key: d for key, d in per_turn if abs(d) > JUDGE_AGREEMENT_MS},
    }


def _judge_rows(path: Path) -> dict[str, Any]:
    try:
        rows: dict[str, Any] = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VoiceboxError(f"--judge-json {path}: {exc}") from None
    return rows


def _turn_medians(
    runs: Sequence[dict[str, list[float | None]]],
) -> dict[str, float | None]:
    """Each turn (``scenario#index``, in the first run's order) and its median latency
    over the runs that answered it (None: no run did)."""
    out: dict[str, float | None] = {}
    for name, turns in runs[0].items():
        for i in range(len(turns)):
            got: list[float] = []
            for run in runs:
                theirs = run.get(name, [])
                value = theirs[i] if i < len(theirs) else None
                if value is not None:
                    got.append(value)
            out[f"{name}#{i}"] = statistics.median(got) if got else None
    return out


def turn_differences(
    bench: dict[str, float | None], judge: dict[str, float | None]
) -> list[tuple[str, int]]:
    """Bench minus judge latency for every turn both answered, keyed ``scenario#turn``.

    The two are separate runs: a turn whose reply waits for its end-of-turn silence
    comes out the same in both, while one whose reply waits for its compute moves with
    the load of the moment. Per turn, the median difference says whether the two
    measure alike even when run-to-run noise moves the difference of the medians."""
    out = []
    for key, mine in bench.items():
        theirs = judge.get(key)
        if mine is not None and theirs is not None:
            out.append((key, round(mine - theirs)))
    return out


def turns_apart_text(judge: dict[str, Any]) -> str:
    """``judge_difference``'s turns more than the agreement apart, as one line."""
    apart = judge["turns_apart"]
    return ", ".join(f"{key} {d:+} ms" for key, d in apart.items()) or "none"
