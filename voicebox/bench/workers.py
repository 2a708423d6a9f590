"""Each bench run in its own process, so peak RSS and CPU belong to that run alone.

The parent starts ``python -m voicebox bench --_worker KIND ...`` (optionally under
``taskset -c 0``); the worker loads its own models, runs and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebox.bench.naive import naive_config
from voicebox.bench.reference import transcribe_turns
from voicebox.bench.run import code_fingerprint, run_bench, scenario_set, to_dict
from voicebox.config import Config
from voicebox.errors import VoiceboxError

KINDS = ("main", "naive", "whole_asr", "gaps")


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """One run: which pipeline, on which scenarios, where."""

    kind: str
    """``main`` (the config as given), ``naive``, ``whole_asr`` (the WER reference) or
    ``gaps`` (the end-of-turn rule at every word gap, offline: ``voicebox.bench.gaps``)."""
    label: str
    scenarios: tuple[str, ...]
    """Exact scenario names."""
    idle_s: float = 0.0
    """Seconds of silence to measure idle CPU on (0 skips it)."""
    pin_core: int | None = None
    """Run under ``taskset -c N``."""


class WorkerFailed(VoiceboxError):
    """A worker process exited with an error; the message has its last output."""


def taskset_available() -> bool:
    return shutil.which("taskset") is not None


def run_job(job: WorkerJob, config_args: list[str], report: Path) -> dict[str, Any]:
    """Start the worker, wait for it and return its JSON (progress goes to stderr)."""
    out = report / f".{job.label}.worker.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "voicebox", "bench", *config_args,
           "--report", str(report), "--idle-s", str(job.idle_s),
           "--_worker", job.kind, "--_label", job.label,
           "--_scenarios", ",".join(job.scenarios), "--_out", str(out)]
    if job.pin_core is not None:
        cmd = ["taskset", "-c", str(job.pin_core), *cmd]
    what = f"{len(job.scenarios)} scenarios" if job.scenarios else "every word gap"
    print(f"bench: {job.label}: {what} in a fresh process"
          + (f" pinned to core {job.pin_core}" if job.pin_core is not None else ""),
          file=sys.stderr, flush=True)
    t0, busy0 = time.monotonic(), _machine_busy_s()
    child0 = _children_cpu_s()
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0 or not out.is_file():
        raise WorkerFailed(f"bench worker {job.label} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-600:]}")
    if proc.stderr.strip():
        print(proc.stderr.strip()[-2000:], file=sys.stderr)
    data: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    busy1 = _machine_busy_s()
    if busy0 is not None and busy1 is not None:
        other = (busy1 - busy0) - (_children_cpu_s() - child0)
        data["background_cpu_pct"] = round(max(0.0, 100 * other / max(wall, 1e-6)), 1)
    print(f"bench: {job.label} done in {time.monotonic() - t0:.0f} s", file=sys.stderr,
          flush=True)
    return data


def _machine_busy_s() -> float | None:
    """CPU seconds all processes on the machine have used since boot (/proc/stat)."""
    import os

    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def add_worker_args(p: argparse.ArgumentParser) -> None:
    """The hidden flags the parent passes to a worker."""
    p.add_argument("--_worker", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--_label", default="voicebox", help=argparse.SUPPRESS)
    p.add_argument("--_scenarios", default="", help=argparse.SUPPRESS)
    p.add_argument("--_out", type=Path, help=argparse.SUPPRESS)


def worker_main(args: argparse.Namespace, config: Config) -> int:
    """Run one job in this process and write its JSON to ``args._out``."""
    chosen = scenario_set(args._scenarios, exact=True)
    data: dict[str, Any]
    if args._worker == "whole_asr":
        data = {**dataclasses.asdict(transcribe_turns(config, chosen)),
                "code": code_fingerprint()}
    elif args._worker == "gaps":
        from voicebox.bench.gaps import evaluate, measure, write_table

        gaps, ends = measure(config)
        write_table(args.report / "eot_gaps.json", gaps, ends)
        data = evaluate(config, gaps, ends)
    else:
        cfg = naive_config(config) if args._worker == "naive" else config
        result = run_bench(cfg, chosen, label=args._label, idle_s=args.idle_s,
                           events_dir=args.report / "events" / args._label, progress=True)
        data = to_dict(result)
    args._out.write_text(json.dumps(data))
    return 0
