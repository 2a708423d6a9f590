"""Load and run every engine once, in a child process.

A native library that does not run on this machine (a wheel built for another CPU,
llama.cpp's AMX path on some Xeons) kills the process with a signal, with no Python
error to print. Run in a child, the same failure becomes one line naming the signal and
the voicebox code it happened under, and setup stops there instead of the first turn.

    python -m voicebox.models.smoke [--config FILE]   # the child: load, warm up, close
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from voicebox.errors import ModelError, VoiceboxError

TIMEOUT_S = 300.0
"""Loading and one warm-up take ~3 s here; a board with a slow SD card, up to a minute."""

_FRAME = re.compile(r'File "(?P<file>[^"]*voicebox[/\\][^"]+)", line (?P<line>\d+) in (?P<fn>\S+)')


def child_command(config: Path | None = None) -> list[str]:
    """The child: faulthandler on, so a crash leaves the Python stack on stderr."""
    extra = ["--config", str(config)] if config is not None else []
    return [sys.executable, "-X", "faulthandler", "-m", "voicebox.models.smoke", *extra]


def run_engines(command: list[str], timeout_s: float = TIMEOUT_S) -> float:
    """Run ``command`` (``child_command()``) and return its wall time in seconds;
    ModelError in one line if it crashed, failed or hung."""
    t0 = time.monotonic()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ModelError(f"engines check: loading and running the engines took over "
                         f"{timeout_s:.0f} s") from None
    if proc.returncode < 0:
        name = _signal_name(-proc.returncode)
        raise ModelError(f"engines check: the engines crashed ({name}){crash_site(proc.stderr)}; "
                         "a native library does not run on this machine")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise ModelError(f"engines check: {last.removeprefix('voicebox: ')}")
    return time.monotonic() - t0


def crash_site(stderr: str) -> str:
    """`` in FILE:LINE (FUNCTION)`` for the innermost voicebox frame of the crashing
    thread in a faulthandler dump, or ``""``."""
    current = stderr.find("Current thread")
    if current < 0:
        return ""
    match = _FRAME.search(stderr, current)
    if match is None:
        return ""
    path = match["file"].replace("\\", "/")
    rel = path[path.rfind("voicebox/"):]
    return f" in {rel}:{match['line']} ({match['fn']})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main(argv: list[str] | None = None) -> int:
    """The child: the engines ``voicebox listen`` would load, one warm-up, closed."""
    parser = argparse.ArgumentParser(prog="python -m voicebox.models.smoke")
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    from voicebox.config import load_config
    from voicebox.runtime.build import close_engines, load_engines, warm_up

    try:
        config = load_config(args.config)
        vad, engines = load_engines(config)
        try:
            warm_up(vad, engines, config.llm.system_prompt)
        finally:
            close_engines(engines)
    except VoiceboxError as exc:
        print(f"voicebox: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
