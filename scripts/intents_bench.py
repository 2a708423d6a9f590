"""Voice-to-voice latency of spoken commands, with and without an intents file.

The bench's scenario set is read speech, where no command file applies. This runs short
commands through the same `simulate` path and the judge's latency rule, once with the
default end-of-turn rule and once with `--intents FILE` (default
`configs/intents-example.yaml`), and prints one row per command:

  .venv/bin/python scripts/intents_bench.py [--intents F] [--engine emulated --profile P]
                                            [--silence-ms MS] [--report reports/intents]

The commands: the one real recording of a command in Debian's pocketsphinx-testdata
(`goforward.raw`, "go forward ten meters"), and commands of the example file spoken by
the default Piper voice (synthetic speech: the ASR hears it more cleanly than a person).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicebox.bench.run import run_bench  # noqa: E402
from voicebox.bench.scenarios import TESTDATA, Scenario, speech_bounds  # noqa: E402
from voicebox.config import IntentsConfig, load_config  # noqa: E402
from voicebox.engines.piper_tts import PiperTtsEngine  # noqa: E402
from voicebox.models.locate import packaged_path  # noqa: E402

SPOKEN = (
    "Turn on the kitchen lights.", "Stop.", "Go forward.", "Set a timer for ten minutes.",
    "Go forward two meters.", "Switch the fan off.", "Volume up.", "Turn off the radio.",
)
RECORDED = ("goforward", TESTDATA / "goforward.raw", "go forward ten meters")


def scenario(name: str, audio: np.ndarray, rate: int, text: str) -> Scenario:
    lead, tail = np.zeros(rate // 2, np.float32), np.zeros(4 * rate, np.float32)
    audio = np.concatenate([lead, audio.astype(np.float32), tail])
    start, end = speech_bounds(audio, rate)
    return Scenario(name, audio, rate, [{"speech_start_s": start, "speech_end_s": end}],
                    texts=[text])


def commands() -> list[Scenario]:
    name, path, text = RECORDED
    raw = np.fromfile(path, dtype="<i2").astype(np.float32) / 32768  # 16 kHz, 16-bit
    out = [scenario(name, raw, 16_000, text)]
    # No noise: the same commands every run (Piper varies each call; tiny.en heard one
    # of 8 takes of "Turn on the kitchen lights." as "Card on the kitchen whites.").
    tts = PiperTtsEngine(packaged_path("tts"), noise_scale=0.0, noise_w_scale=0.0)
    for i, said in enumerate(SPOKEN):
        out.append(scenario(f"piper_{i}", tts.synthesize(said), tts.sample_rate_hz, said))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intents", type=Path,
                    default=Path(__file__).resolve().parent.parent / "configs/intents-example.yaml")
    ap.add_argument("--config", type=Path)
    ap.add_argument("--engine", choices=["llama", "emulated", "pcie"])
    ap.add_argument("--profile")
    ap.add_argument("--silence-ms", type=int, default=IntentsConfig().silence_ms,
                    help="[intents] silence_ms of the run with intents")
    ap.add_argument("--report", type=Path, help="write intents.json and intents.md here")
    args = ap.parse_args()
    base = load_config(args.config, llm__engine=args.engine, llm__profile=args.profile,
                       llm__max_reply_tokens=16)
    with_intents = replace(base, intents=IntentsConfig(file=args.intents,
                                                       silence_ms=args.silence_ms))
    chosen = commands()
    rows: dict[str, dict[str, object]] = {
        sc.name: {"said": sc.texts[0]} for sc in chosen}
    for label, config in (("default", base), ("intents", with_intents)):
        result = run_bench(config, chosen, label=label)
        for s in result.scores:
            turn = s.turns[0]
            rows[s.name][label] = turn.latency_ms
            rows[s.name][f"{label}_heard"] = turn.transcript
            rows[s.name][f"{label}_cutoffs"] = s.cutoffs
    lines = ["| command | heard (with intents) | default ms | with intents ms |",
             "|---|---|---|---|"]
    for r in rows.values():
        lines.append(f"| {r['said']} | {r.get('intents_heard', '')} | {r.get('default')} "
                     f"| {r.get('intents')} |")
    medians = {}
    for label in ("default", "intents"):
        values = [v for r in rows.values() if isinstance(v := r.get(label), (int, float))]
        medians[label] = statistics.median(values) if values else None
    lines.append(f"| **median** | | {medians['default']} | {medians['intents']} |")
    table = "\n".join(lines)
    print(table)
    summary = {"medians_ms": medians, "intents": str(args.intents),
               "silence_ms": args.silence_ms, "rows": rows}
    print(json.dumps({"medians_ms": medians}))
    if args.report:
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / "intents.json").write_text(json.dumps(summary, indent=1))
        (args.report / "intents.md").write_text(
            "# Spoken commands, with and without an intents file\n\n"
            f"Intents: `{args.intents}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
