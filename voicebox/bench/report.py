"""Write the bench report: a Markdown table and a PNG waterfall of each turn's stages."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from voicebox.bench.run import BenchResult


def machine() -> str:
    import os

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def markdown(results: list[BenchResult], command: str, extra: dict[str, Any]) -> str:
    lines = [f"# voicebox bench\n\nCommand: `{command}`  \nMachine: {machine()}\n"]
    keys = ["turns", "replied", "p50_ms", "p90_ms", "cutoffs", "barge_stop_ms", "wer",
            "idle_cpu_pct", "peak_rss_mb", "event_minus_judge_ms_median"]
    lines.append("| run | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---|" * len(keys))
    for r in results:
        lines.append(f"| {r.label} | " + " | ".join(str(r.summary.get(k)) for k in keys) + " |")
    for k, v in extra.items():
        lines.append(f"\n{k}: {v}")
    for r in results:
        lines.append(f"\n## {r.label}: stage medians (ms)\n")
        for k, v in r.summary["stages_median_ms"].items():
            lines.append(f"- {k}: {v}")
        lines.append(f"\n| scenario | turn | latency ms | event ms | confirmed ms | ASR ms | "
                     "LLM 1st ms | TTS 1st ms | heard |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for s in r.scores:
            for i, t in enumerate(s.turns):
                st = t.stages
                lines.append(
                    f"| {s.name} | {i} | {t.latency_ms} | {t.event_latency_ms} | "
                    f"{st.get('turn_confirmed_ms')} | {st.get('asr_final_ms')} | "
                    f"{st.get('llm_first_token_ms')} | {st.get('tts_first_audio_ms')} | "
                    f"{t.transcript} |")
    return "\n".join(lines) + "\n"


def waterfall(result: BenchResult, path: Path) -> None:
    """One row per turn: when each stage finished, relative to the end of the user's speech."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{s.name}#{i}", t) for s in result.scores for i, t in enumerate(s.turns)]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    colours = {"ASR final": "tab:blue", "LLM first token": "tab:orange",
               "TTS first audio": "tab:green"}
    for y, (_name, t) in enumerate(rows):
        st = t.stages
        spans = [("ASR final", st.get("asr_done_at_ms"), st.get("asr_final_ms")),
                 ("LLM first token", st.get("llm_first_token_at_ms"), st.get("llm_first_token_ms")),
                 ("TTS first audio", st.get("reply_ready_ms"), st.get("tts_first_audio_ms"))]
        for label, done, dur in spans:
            if done is not None and dur is not None:
                ax.barh(y, dur, left=done - dur, color=colours[label], height=0.6,
                        label=label if y == 0 else None)
        if st.get("turn_confirmed_ms") is not None:
            ax.plot(st["turn_confirmed_ms"], y, "k|", markersize=12,
                    label="turn confirmed" if y == 0 else None)
        if t.latency_ms is not None:
            ax.plot(t.latency_ms, y, "r*", label="first reply sample" if y == 0 else None)
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(200, color="red", lw=0.5, ls="--")
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms after the end of the user's speech")
    ax.set_title(f"{result.label}: stage waterfall per turn")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
