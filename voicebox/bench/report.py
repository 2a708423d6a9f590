"""Write the bench report: targets, runs, ratios, a per-turn table and PNG waterfalls."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebox.bench.compare import turns_apart_text
from voicebox.bench.run import BenchResult
from voicebox.bench.score import held_by
from voicebox.bench.targets import TargetCheck, check

RUN_TITLES = {"voicebox": "main run", "naive": "naive sequential pipeline",
              "one_core": "main run pinned to one core (Raspberry-Pi-class point)"}


@dataclass(slots=True)
class BenchReport:
    """Everything one ``voicebox bench`` invocation measured."""

    command: str
    main: BenchResult
    others: list[BenchResult]
    ratios: dict[str, dict[str, Any]]
    checks: list[TargetCheck]
    judge: dict[str, Any] | None = None
    gaps: dict[str, Any] | None = None
    """The end-of-turn rule at every word gap (``voicebox.bench.gaps.evaluate``)."""
    notes: list[str] = field(default_factory=list)
    spread: dict[str, Any] | None = None
    """The main pipeline run again (``--repeat``): ``run_spread``."""

    def all_runs(self) -> list[BenchResult]:
        return [self.main, *self.others]

    def summary_line(self) -> dict[str, Any]:
        """The one JSON line the bench prints."""
        return {
            **{r.label: r.summary for r in self.all_runs()},
            "ratios": self.ratios,
            "judge": self.judge,
            "gaps": self.gaps,
            "spread": self.spread,
            "targets": {c.name: c.verdict for c in self.checks},
        }


def run_spread(runs: list[BenchResult]) -> dict[str, Any]:
    """How the same pipeline's latencies move from run to run: each run's p50 and p90,
    and the scenarios whose latency moved more than ``SPREAD_MS`` (min and max per turn)."""
    per_turn: dict[str, list[float]] = {}
    for r in runs:
        for s in r.scores:
            for i, t in enumerate(s.turns):
                if t.latency_ms is not None:
                    per_turn.setdefault(f"{s.name}#{i}", []).append(t.latency_ms)
    moved = {name: [min(v), max(v)] for name, v in per_turn.items()
             if max(v) - min(v) > SPREAD_MS}
    p50 = [r.summary["p50_ms"] for r in runs]
    return {"runs": len(runs), "p50_ms": p50, "p90_ms": [r.summary["p90_ms"] for r in runs],
            "p50_range_ms": max(p50) - min(p50), "turns_moved": moved}


SPREAD_MS = 20
"""A turn whose latency moves more than this between runs is listed (the judge-agreement
target's tolerance)."""


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.1f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cpu}){mem}, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


_KEYS = ["scenarios", "turns", "replied", "p50_ms", "p90_ms", "cutoffs", "pause_cutoffs",
         "audio_faults",
         "barge_stop_ms", "wer", "wer_whole_asr", "idle_cpu_pct", "run_cpu_pct", "peak_rss_mb",
         "cores", "wall_s", "background_cpu_pct",
         "event_minus_judge_ms_median"]


def markdown(report: BenchReport) -> str:
    runs = report.all_runs()
    one = next((r for r in report.others if r.label == "one_core"), None)
    pinned = {c.name: c for c in check(one.summary)} if one is not None else {}
    lines = [
        "# voicebox bench\n",
        f"Command: `{report.command.strip()}`  ",
        f"Machine: {machine()}\n",
        "Each run is a separate process that loads its own models, so peak RSS and CPU are "
        "per run. Latency is the judge's rule (first 10 ms output frame above -40 dBFS, from "
        "the labelled end of the user's speech). A cut-off is a reply that starts while the "
        "user's labelled turn is still going, which includes the inserted 300-600 ms "
        "mid-sentence pauses; `pause_cutoffs` counts those alone. CPU is % of one core.\n",
        "## Targets\n",
        "| target | required | main run | verdict |"
        + (" one core (`taskset -c 0`) | verdict |" if pinned else ""),
        "|---|---|---|---|" + ("---|---|" if pinned else ""),
    ]
    for c in report.checks:
        p = pinned.get(c.name) if c.name != "bench vs v2v.py median" else None
        lines.append(f"| {c.name} | {c.target} | {c.measured} | {c.verdict} |"
                     + (f" {p.measured} | {p.verdict} |" if p is not None
                        else " - | - |" if pinned else ""))
    if pinned:
        lines.append("\nThe one-core column is the main run on its (smaller) scenario set; "
                     "the judge-agreement row applies to the main run (and its repeats) only.")
    lines += ["\n## Runs\n", "| | " + " | ".join(r.label for r in runs) + " |",
              "|---|" + "---|" * len(runs),
              *(f"| {k} | " + " | ".join(str(r.summary.get(k)) for r in runs) + " |"
                for k in _KEYS)]
    if report.ratios:
        lines += ["\n## Against the main run (same scenarios)\n",
                  "| comparison | scenarios | p50 ms (other / main) | ratio | "
                  "p90 ms (other / main) | ratio |", "|---|---|---|---|---|---|"]
        for name, rt in report.ratios.items():
            lines.append(f"| {name} | {rt['scenarios']} | {rt['other_p50_ms']} / "
                         f"{rt['main_p50_ms']} | x{rt['p50_ratio']} | {rt['other_p90_ms']} / "
                         f"{rt['main_p90_ms']} | x{rt['p90_ratio']} |")
    if report.judge is not None:
        j = report.judge
        lines += ["\n## Agreement with ../shared/bench/v2v.py\n",
                  f"On {j['scenarios']} scenarios (judge errors: {j['judge_errors']}): judge "
                  f"p50 {j['judge_p50_ms']} ms, bench p50 {j['bench_p50_ms']} ms, difference "
                  f"{j['difference_ms']} ms; p90 {j['judge_p90_ms']} / {j['bench_p90_ms']} ms; "
                  f"cut-offs {j['judge_cutoffs']} / {j['bench_cutoffs']} (v2v.py does not "
                  "know the labelled pauses). The two are separate runs, so run-to-run noise "
                  "is part of the difference"
                  + (f"; each turn counts at its median over {j['judge_runs']} judge and "
                     f"{j['bench_runs']} bench runs (cut-offs summed over them)."
                     if j["judge_runs"] > 1 or j["bench_runs"] > 1 else "."),
                  f"\nPer turn (bench minus judge): median {j['turn_difference_median_ms']} ms, "
                  f"{j['turns_within_20_ms']} of {j['turns_compared']} turns within 20 ms; "
                  f"apart: {turns_apart_text(j)}."]
    if report.gaps is not None:
        g = report.gaps
        lines += ["\n## End of turn at every word gap of the test clips\n",
                  "The bench's scenarios hold four inserted pauses; here the configured "
                  "silence curve meets a pause of 300, 450 and 600 ms at every word gap of "
                  "every clip, plain and noisy (offline replay through the same VAD, turn "
                  "detector and scores; table in `eot_gaps.json`, see `scripts/eot_gaps.py`). "
                  "The speaker's own silence at the gap counts towards the pause.\n",
                  f"Mid-phrase pauses answered (cut-offs): **{g.get('mid_cutoff_rate')}** "
                  f"(300 ms: {g.get('mid_cutoffs_300ms')}, 450 ms: {g.get('mid_cutoffs_450ms')}, "
                  f"600 ms: {g.get('mid_cutoffs_600ms')}; with the pause added on top of the "
                  f"speaker's own gap: {g.get('mid_cutoff_rate_added')}); after a whole list item: "
                  f"{g.get('item_cutoff_rate')}. At the {g.get('real_ends')} real ends, "
                  "the turn is confirmed (the required silence, counted from the VAD's end "
                  "of speech) this long after the labelled end of speech: median "
                  f"{g.get('median_wait_after_labelled_end_ms')} ms, p90 "
                  f"{g.get('p90_wait_after_labelled_end_ms')} ms. Gaps the VAD did not "
                  f"pause at: {g.get('gaps_without_pause')}; where it missed the next word: "
                  f"{g.get('gaps_next_word_missed')}."]
    if report.spread is not None:
        sp = report.spread
        lines += [f"\n## Run to run ({sp['runs']} runs of the main pipeline)\n",
                  f"p50 per run: {sp['p50_ms']} ms (range {sp['p50_range_ms']} ms); p90 per "
                  f"run: {sp['p90_ms']} ms. Turns whose latency moved more than {SPREAD_MS} "
                  f"ms between runs: " + (", ".join(
                      f"{name} {lo:.0f}-{hi:.0f} ms" for name, (lo, hi)
                      in sorted(sp["turns_moved"].items())) or "none") + "."]
    if report.notes:
        lines += ["\n## Notes\n", *(f"- {n}" for n in report.notes)]
    for r in report.all_runs():
        lines += _run_section(r)
    return "\n".join(lines) + "\n"


def _run_section(r: BenchResult) -> list[str]:
    sm = r.summary
    lines = [f"\n## {r.label}: {RUN_TITLES.get(r.label, r.label)}\n",
             f"![{r.label} waterfall]({r.label}_waterfall.png)\n", "Stage medians (ms): " +
             ", ".join(f"{k} {v}" for k, v in sm["stages_median_ms"].items()) + "\n",
             f"Turns held by the end-of-turn wait (the reply was ready and waited for the "
             f"turn to be confirmed): {sm.get('held_by_wait')}; by compute (the turn was "
             f"confirmed before the reply was ready): {sm.get('held_by_compute')}. "
             "\"held by\" below says which, and by how many ms; \"EOT score\" is the "
             "end-of-turn score at the turn's end and \"silence ms\" the silence it asked "
             "for.\n",
             "| scenario | turn | latency ms | event ms | confirmed ms | ready ms | held by | "
             "EOT score | silence ms | ASR ms | LLM 1st ms | TTS 1st ms | barge stop ms | "
             "heard (pipeline ASR) | whole-utterance ASR |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r.scores:
        for i, t in enumerate(s.turns):
            st = t.stages
            held = held_by(st)
            lines.append(
                f"| {s.name} | {i} | {t.latency_ms} | {t.event_latency_ms} | "
                f"{st.get('turn_confirmed_ms')} | {st.get('reply_ready_ms')} | "
                f"{f'{held[0]} {held[1]:.0f}' if held else ''} | "
                f"{st.get('eot_score', '')} | {st.get('eot_silence_ms', '')} | "
                f"{st.get('asr_final_ms')} | "
                f"{st.get('llm_first_token_ms')} | {st.get('tts_first_audio_ms')} | "
                f"{s.barge_stop_ms if s.barge_stop_ms and i == len(s.turns) - 1 else ''} | "
                f"{t.transcript} | {t.whole_asr_text if t.whole_asr_text is not None else ''} |")
    return lines


def waterfall(result: BenchResult, path: Path) -> None:
    """One row per turn: when each stage finished, relative to the end of the user's speech."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{s.name}#{i}", t) for s in result.scores for i, t in enumerate(s.turns)]
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(rows) + 1.8))
    colours = {"ASR final": "tab:blue", "LLM first token": "tab:orange",
               "TTS first audio": "tab:green"}
    seen: set[str] = set()

    def once(label: str) -> str | None:
        if label in seen:
            return None
        seen.add(label)
        return label

    for y, (_name, t) in enumerate(rows):
        st = t.stages
        spans = [("ASR final", st.get("asr_done_at_ms"), st.get("asr_final_ms")),
                 ("LLM first token", st.get("llm_first_token_at_ms"), st.get("llm_first_token_ms")),
                 ("TTS first audio", st.get("reply_ready_ms"), st.get("tts_first_audio_ms"))]
        for label, done, dur in spans:
            if done is not None and dur is not None:
                ax.barh(y, dur, left=done - dur, color=colours[label], height=0.6,
                        label=once(label))
        if st.get("turn_confirmed_ms") is not None:
            ax.plot(st["turn_confirmed_ms"], y, "k|", markersize=16, mew=2, zorder=3,
                    label=once("turn confirmed"))
        if t.latency_ms is not None:
            ax.plot(t.latency_ms, y, "r*", markersize=9, zorder=4,
                    label=once("first reply sample"))
            ax.annotate(f"{t.latency_ms:.0f}", (t.latency_ms, y), xytext=(6, -3),
                        textcoords="offset points", fontsize=7, color="darkred")
        else:
            ax.annotate("no reply", (0, y), xytext=(6, -3), textcoords="offset points",
                        fontsize=7, color="darkred")
    ax.axvline(0, color="grey", lw=0.8, label="end of user speech")
    ax.axvline(200, color="red", lw=0.6, ls="--", label="200 ms median target")
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", lw=0.3, alpha=0.5)
    ax.set_xlabel("ms after the labelled end of the user's speech (bars: compute time of "
                  "each stage, ending when it finished)")
    sm = result.summary
    ax.set_title(f"{result.label}: stage waterfall per turn (p50 {sm.get('p50_ms')} ms, "
                 f"p90 {sm.get('p90_ms')} ms, {sm.get('cores')} cores)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
