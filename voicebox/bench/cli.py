"""``voicebox bench``: the latency bench on real recorded speech.

The main run, the WER reference, the naive sequential pipeline and the main run pinned
to one core each run in their own process (see ``workers``); this parent merges them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from voicebox.bench.compare import judge_difference, ratios
from voicebox.bench.report import BenchReport, markdown, run_spread, waterfall
from voicebox.bench.run import (
    REPRESENTATIVE,
    BenchResult,
    from_dict,
    scenario_set,
    summarise,
    write_json,
)
from voicebox.bench.targets import check
from voicebox.bench.workers import (
    WorkerFailed,
    WorkerJob,
    add_worker_args,
    run_job,
    taskset_available,
    worker_main,
)
from voicebox.config import load_config
from voicebox.errors import VoiceboxError


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("bench", help="latency bench on real recorded speech (prints + report)")
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--engine", choices=["llama", "emulated", "pcie"])
    p.add_argument("--profile")
    p.add_argument("--only", default="", help="comma-separated scenario name fragments")
    p.add_argument("--report", type=Path, default=Path("reports/bench"),
                   help="folder for bench.md, waterfall PNGs, JSON and event logs")
    p.add_argument("--idle-s", type=float, default=10.0, help="seconds of silence for idle CPU")
    p.add_argument("--no-naive", action="store_true",
                   help="skip the naive sequential pipeline run")
    p.add_argument("--no-one-core", action="store_true",
                   help="skip the main run pinned to one core (taskset -c 0)")
    p.add_argument("--no-whole-asr", action="store_true",
                   help="skip the whole-utterance faster-whisper WER reference")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the main pipeline N times (each in a fresh process) and report "
                        "the run-to-run spread of its latencies")
    p.add_argument("--no-gaps", action="store_true",
                   help="skip the end-of-turn check at every word gap of the test clips")
    p.add_argument("--variants-full", action="store_true",
                   help="run naive and one-core on every scenario, not the representative subset")
    p.add_argument("--judge-json", type=Path, nargs="+", metavar="JSON",
                   help="JSON written by ../shared/bench/v2v.py on the same scenarios (one "
                        "or more runs): report the difference of the medians, each turn at "
                        "its median over the runs (with --repeat on the bench's side)")
    add_worker_args(p)
    p.set_defaults(func=cmd_bench)


def _config_args(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for flag, value in (("--config", args.config), ("--engine", args.engine),
                        ("--profile", args.profile)):
        if value is not None:
            out += [flag, str(value)]
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("matplotlib") is None:  # before minutes of runs, not after
        raise VoiceboxError("the bench's report needs matplotlib: "
                            "pip install 'voicebox[bench]' (scripts/setup.sh installs it)")
    config = load_config(args.config, llm__engine=args.engine, llm__profile=args.profile)
    try:
        args.report.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        raise VoiceboxError(f"cannot make the report folder {args.report}: "
                            f"{exc.strerror or exc}") from None
    if args._worker:
        return worker_main(args, config)
    names = tuple(s.name for s in scenario_set(args.only))
    if not names:
        raise VoiceboxError(f"--only {args.only!r} matches no scenario")
    full_variants = bool(args.only) or args.variants_full
    variant = names if full_variants else tuple(n for n in names if n in REPRESENTATIVE)
    notes: list[str] = []
    if not full_variants:
        notes.append(f"The naive and one-core runs use a representative subset of "
                     f"{len(variant)} of the {len(names)} scenarios ({', '.join(variant)}) to "
                     "keep the bench short; their ratios compare against the main run on "
                     "the same subset. `--variants-full` runs them on every scenario.")
    cargs = _config_args(args)
    if args.repeat < 1:
        raise VoiceboxError(f"--repeat must be at least 1 (got {args.repeat})")

    main = from_dict(run_job(WorkerJob("main", "voicebox", names, args.idle_s), cargs,
                             args.report))
    repeats = [from_dict(run_job(WorkerJob("main", f"voicebox_{k}", names), cargs, args.report))
               for k in range(2, args.repeat + 1)]
    others, whole = _secondary_runs(args, names, variant, cargs, notes)
    gaps = None
    if args.no_gaps or args.only:
        notes.append("End-of-turn check at every word gap skipped ("
                     + ("--no-gaps" if args.no_gaps else "--only") + ").")
    else:
        gaps = _optional(lambda: run_job(WorkerJob("gaps", "gaps", ()), cargs, args.report),
                         notes, "every-gap end-of-turn check")
    for r in (main, *repeats, *others):
        if whole is not None:
            _attach_whole(r, whole)
        r.summary = summarise(r)
    notes += _provenance_notes([main, *repeats, *others])

    judge = judge_difference([main, *repeats], args.judge_json) if args.judge_json else None
    report = BenchReport(
        command="voicebox bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
        main=main, others=others, ratios=ratios(main, others),
        checks=check(main.summary, None if judge is None else judge["difference_ms"]),
        judge=judge, gaps=gaps, notes=notes,
        spread=run_spread([main, *repeats]) if repeats else None)
    for r in (main, *others):
        write_json(r, args.report / f"{r.label}.json")
        waterfall(r, args.report / f"{r.label}_waterfall.png")
    for r in repeats:
        write_json(r, args.report / f"{r.label}.json")
    (args.report / "bench.md").write_text(markdown(report))
    _print(report)
    print(json.dumps(report.summary_line()))
    return 0


def _secondary_runs(args: argparse.Namespace, names: tuple[str, ...], variant: tuple[str, ...],
                    cargs: list[str], notes: list[str]
                    ) -> tuple[list[BenchResult], dict[str, list[str]] | None]:
    """The WER reference, the naive pipeline and the one-core run (each optional)."""
    others: list[BenchResult] = []
    whole: dict[str, list[str]] | None = None
    if not args.no_whole_asr:
        whole = _optional(lambda: run_job(WorkerJob("whole_asr", "whole_asr", names), cargs,
                                          args.report)["texts"], notes, "whole-utterance ASR")
    if args.no_naive:
        notes.append("Naive run skipped (--no-naive).")
    else:
        data = _optional(lambda: run_job(WorkerJob("naive", "naive", variant), cargs,
                                         args.report), notes, "naive run")
        if data is not None:
            others.append(from_dict(data))
    if args.no_one_core:
        notes.append("One-core run skipped (--no-one-core).")
    elif not taskset_available():
        notes.append("One-core run skipped: `taskset` not found (util-linux).")
    else:
        data = _optional(lambda: run_job(WorkerJob("main", "one_core", variant, args.idle_s,
                                                   pin_core=0), cargs, args.report),
                         notes, "one-core run")
        if data is not None:
            others.append(from_dict(data))
    return others, whole


def _provenance_notes(runs: list[BenchResult]) -> list[str]:
    """Which code ran, and whether anything else was using the CPU meanwhile."""
    notes = []
    codes = {r.label: r.code for r in runs}
    if len(set(codes.values())) > 1:
        notes.append(f"The voicebox sources changed while the bench ran, so the runs did not "
                     f"all run the same code (source fingerprints: {codes}).")
    notes.append(f"Source fingerprint {runs[0].code} ({_git_state()}).")
    busy = {r.label: r.background_cpu_pct for r in runs if (r.background_cpu_pct or 0) > 10}
    if busy:
        notes.append(f"Other processes used CPU during these runs (% of one core: {busy}); "
                     "on a 2-core machine that inflates and spreads the latencies.")
    return notes


def _git_state() -> str:
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=repo).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, cwd=repo
                               ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"git {rev}" + (" with uncommitted changes" if dirty else "")


def _optional(run: Any, notes: list[str], what: str) -> Any:
    """A secondary run that fails is noted in the report; the bench goes on."""
    try:
        return run()
    except WorkerFailed as exc:
        notes.append(f"{what} failed: {exc}")
        print(f"bench: {what} failed: {exc}", file=sys.stderr)
        return None


def _attach_whole(result: BenchResult, texts: dict[str, list[str]]) -> None:
    for s in result.scores:
        for t, text in zip(s.turns, texts.get(s.name, []), strict=False):
            t.whole_asr_text = text


def _print(report: BenchReport) -> None:
    for r in report.all_runs():
        sm = r.summary
        print(f"== {r.label} ({sm['scenarios']} scenarios, {sm['cores']} cores)")
        for s in r.scores:
            lat = ", ".join(str(t.latency_ms) for t in s.turns)
            print(f"  {s.name:18s} latency ms: {lat:11s} cutoffs: {s.cutoffs} "
                  f"barge stop ms: {s.barge_stop_ms}")
        print(f"  p50 {sm['p50_ms']} ms, p90 {sm['p90_ms']} ms, replied {sm['replied']}/"
              f"{sm['turns']}, cutoffs {sm['cutoffs']}, WER {sm['wer']} (whole-utterance "
              f"{sm['wer_whole_asr']}), idle CPU {sm['idle_cpu_pct']}%, run CPU "
              f"{sm['run_cpu_pct']}%, peak RSS {sm['peak_rss_mb']} MB, other processes "
              f"{sm['background_cpu_pct']}%; turns held by the end-of-turn wait "
              f"{sm.get('held_by_wait')}, by compute {sm.get('held_by_compute')}")
    for name, rt in report.ratios.items():
        print(f"== {name}: p50 x{rt['p50_ratio']}, p90 x{rt['p90_ratio']} "
              f"({rt['scenarios']} scenarios: {rt['other_p50_ms']}/{rt['main_p50_ms']} ms, "
              f"{rt['other_p90_ms']}/{rt['main_p90_ms']} ms)")
    if report.judge is not None:
        j = report.judge
        print(f"== judge: v2v.py p50 {j['judge_p50_ms']} ms, bench p50 {j['bench_p50_ms']} ms, "
              f"difference {j['difference_ms']} ms ({j['judge_runs']} judge, "
              f"{j['bench_runs']} bench runs); per turn: median "
              f"{j['turn_difference_median_ms']} ms, {j['turns_within_20_ms']}/"
              f"{j['turns_compared']} within 20 ms")
    print("== targets (main run)")
    for c in report.checks:
        print(f"  {c.verdict:4s} {c.name}: {c.measured} (target {c.target})")
    for n in report.notes:
        print(f"  note: {n}")
