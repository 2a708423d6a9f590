"""Every pause in the bench's scenario set, with its end-of-turn signals and its length.

Replays each scenario's audio through the same VAD, turn detector and turn-audio rules
as the pipeline (offline, no real-time pacing). At each speculative pause it runs the
final ASR, the LLM's end-of-turn probability and Smart Turn on what the pipeline would
have, then records how long the silence lasted: until speech resumed (a pause inside
the turn) or the end of the labelled turn (a real end). With the table, a mapping from
signals to required silence can be checked for cut-offs and wait before it is run live:

  .venv/bin/python scripts/eot_table.py [--json reports/eot_table.json]

It prints one row per pause and, for the configured mapping, the cut-offs it would make
(pauses inside a turn longer than the silence it requires) and the silence it requires
at the real ends.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicebox.bench.gaps import (  # noqa: E402
    Models,
    Pause,
    is_real_end,
    replay,
    required_silence,
)
from voicebox.bench.scenarios import all_scenarios  # noqa: E402
from voicebox.config import Config, load_config  # noqa: E402


def pauses(config: Config) -> list[Pause]:
    models = Models.load(config)
    return [p for sc in all_scenarios() for p in replay(config, models, sc)]


def evaluate(config: Config, rows: list[Pause]) -> dict[str, object]:
    cut, waits, lags = [], [], []
    for p in rows:
        need = required_silence(config, p)
        if is_real_end(p):
            waits.append(need)
            lags.append(p.vad_lag_ms or 0.0)
        elif p.silence_ms > need:
            cut.append(f"{p.scenario}@{p.at_s} ({p.silence_ms} ms > {need} ms: {p.text!r})")
    return {"cutoffs": cut, "real_ends": len(waits),
            "median_wait_ms": statistics.median(waits) if waits else None,
            "max_wait_ms": max(waits) if waits else None,
            "median_vad_lag_ms": statistics.median(lags) if lags else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="a voicebox TOML config")
    ap.add_argument("--json", type=Path, help="write the table here")
    ap.add_argument("--table", type=Path, help="read a table written before (no models run)")
    args = ap.parse_args()
    config = load_config(args.config)
    if args.table:
        rows = [Pause(**r) for r in json.loads(args.table.read_text())]
    else:
        rows = pauses(config)
    for p in rows:
        kind = "END  " if p.real_end else "pause"
        print(f"{kind} {p.scenario:18} {p.at_s:6.2f}s llm={p.llm:.3f} audio={p.audio:.3f} "
              f"silence={p.silence_ms:6.0f} ms  {p.text!r}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(p) for p in rows], indent=1))
    print(json.dumps(evaluate(config, rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
