"""``voicebox bench``: the latency bench on real recorded speech."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from voicebox.bench.report import markdown, waterfall
from voicebox.bench.run import BenchResult, run_bench, scenario_set, write_json
from voicebox.config import load_config


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("bench", help="latency bench on real recorded speech (prints + report)")
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--engine", choices=["llama", "emulated", "pcie"])
    p.add_argument("--profile")
    p.add_argument("--only", default="", help="comma-separated scenario name fragments")
    p.add_argument("--report", type=Path, default=Path("reports/bench"),
                   help="folder for bench.md, waterfall PNGs, JSON and event logs")
    p.add_argument("--idle-s", type=float, default=10.0, help="seconds of silence for idle CPU")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    config = load_config(args.config, llm__engine=args.engine, llm__profile=args.profile)
    (args.report / "events").mkdir(parents=True, exist_ok=True)
    chosen = scenario_set(args.only)
    results: list[BenchResult] = []
    main = run_bench(config, chosen, idle_s=args.idle_s, events_dir=args.report / "events")
    results.append(main)
    for r in results:
        write_json(r, args.report / f"{r.label}.json")
        waterfall(r, args.report / f"{r.label}_waterfall.png")
    command = "voicebox bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    (args.report / "bench.md").write_text(markdown(results, command.strip(), {}))
    _print_table(results)
    print(json.dumps({r.label: r.summary for r in results}))
    return 0


def _print_table(results: list[BenchResult]) -> None:
    for r in results:
        print(f"== {r.label}")
        for s in r.scores:
            lat = ", ".join(str(t.latency_ms) for t in s.turns)
            print(f"  {s.name:24s} latency ms: {lat:14s} cutoffs: {s.cutoffs} "
                  f"barge stop ms: {s.barge_stop_ms}")
        sm = r.summary
        print(f"  p50 {sm['p50_ms']} ms, p90 {sm['p90_ms']} ms, cutoffs {sm['cutoffs']}, "
              f"WER {sm['wer']}, idle CPU {sm['idle_cpu_pct']}%, peak RSS {sm['peak_rss_mb']} MB")
