"""The issue's targets, checked against a bench summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JUDGE_AGREEMENT_MS = 20
"""The bench and ../shared/bench/v2v.py agree when their medians are this close."""


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target next to what was measured."""

    name: str
    target: str
    measured: str
    passed: bool | None
    """None: not measured in this invocation."""

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def check(main: dict[str, Any], judge_diff_ms: float | None = None) -> list[TargetCheck]:
    """Targets of issue 5 for the main run's summary (and the judge difference if known)."""
    barge: list[float | None] = main.get("barge_stop_ms", [])
    wer, whole = main.get("wer"), main.get("wer_whole_asr")
    missed = main["turns"] - main["replied"]
    return [
        TargetCheck("median latency", "<= 200 ms", f"{main['p50_ms']} ms",
                    _le(main["p50_ms"], 200)),
        TargetCheck("p90 latency", "<= 300 ms", f"{main['p90_ms']} ms", _le(main["p90_ms"], 300)),
        TargetCheck("replies", "every turn answered", f"{main['replied']}/{main['turns']}",
                    missed == 0),
        TargetCheck("cut-offs", "0 (incl. replies in 300-600 ms pauses)",
                    str(main["cutoffs"]), main["cutoffs"] == 0),
        TargetCheck("barge-in stop", "<= 150 ms", f"{barge} ms",
                    None if not barge else all(b is not None and b <= 150 for b in barge)),
        TargetCheck("WER streaming vs whole-utterance", "streaming <= whole",
                    f"{wer} vs {whole}",
                    None if wer is None or whole is None else wer <= whole),
        TargetCheck("idle listening CPU", "<= 10% of one core", f"{main['idle_cpu_pct']}%",
                    _le(main["idle_cpu_pct"], 10)),
        TargetCheck("peak RSS", "<= 700 MB", f"{main['peak_rss_mb']} MB",
                    _le(main["peak_rss_mb"], 700)),
        TargetCheck("bench vs v2v.py median", f"within {JUDGE_AGREEMENT_MS} ms",
                    "not run (scripts/bench_judge.sh)" if judge_diff_ms is None
                    else f"{judge_diff_ms:+.0f} ms",
                    None if judge_diff_ms is None else abs(judge_diff_ms) <= JUDGE_AGREEMENT_MS),
    ]
