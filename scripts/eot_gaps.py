"""Cut-offs and wait of the end-of-turn rule over every word gap of every test clip.

The bench's scenario set has four inserted mid-sentence pauses; a silence curve fitted
on them can look safe and still cut people off at the next gap. This inserts a pause at
every word gap of every clip (LibriVox and cards, plain and under noise; gaps from
faster-whisper's word timestamps on the same Whisper model), replays each through the
pipeline's VAD and turn detector with the scores the pipeline would compute at that
pause (``voicebox.bench.gaps``), and counts, for pauses of 300, 450 and 600 ms, how many
the configured ``[turn] silence_curve`` would answer (a cut-off), beside the silence it
requires at the real ends of the clips. ``--fit RATE`` also fits the curve with the
least wait for that cut-off rate and checks it on each clip left out of the fit:

  .venv/bin/python scripts/eot_gaps.py [--config F] [--json reports/eot_gaps.json]
  .venv/bin/python scripts/eot_gaps.py --table reports/eot_gaps.json [--config F] [--fit 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicebox.bench.gaps import (  # noqa: E402
    FIT_MS,
    evaluate,
    fit_curve,
    leave_one_clip_out,
    measure,
    read_table,
    write_table,
)
from voicebox.config import load_config  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="a voicebox TOML config")
    ap.add_argument("--json", type=Path, help="write the measured gaps and ends here")
    ap.add_argument("--table", type=Path, help="read gaps and ends written before")
    ap.add_argument("--fit", type=float, metavar="RATE",
                    help="also fit the curve with the least wait for this cut-off rate "
                         "(e.g. 0.05), and check it leaving each clip out")
    args = ap.parse_args()
    config = load_config(args.config)
    gaps, ends = read_table(args.table) if args.table else measure(config, progress=True)
    if args.json:
        write_table(args.json, gaps, ends)
    print(json.dumps(evaluate(config, gaps, ends), indent=1))
    if args.fit is not None:
        fit = fit_curve(config, gaps, ends, args.fit)
        if fit is None:
            print(f"no curve from {FIT_MS[0]}-{FIT_MS[-1]} ms keeps cut-offs under {args.fit}")
            return 1
        rate, median, p90 = leave_one_clip_out(config, gaps, ends, args.fit)
        print("[turn]")
        print(f"end_of_turn_ms = {fit.curve[0][1]}")
        print("silence_curve = [" + ", ".join(f"[{s}, {ms}]" for s, ms in fit.curve) + "]")
        print(f"# cut-off rate {fit.cutoff_rate:.3f}, wait after the end of speech: median "
              f"{fit.median_wait_ms:.0f} ms, p90 {fit.p90_wait_ms:.0f} ms")
        print(f"# each clip left out of the fit: cut-off rate {rate:.3f}, median wait "
              f"{median:.0f} ms, p90 {p90:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
