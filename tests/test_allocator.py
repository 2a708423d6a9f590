"""The ``voicebox`` program runs on jemalloc when it is installed (``cli._preload_jemalloc``)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from tests.needs import needs
from voicebox import cli

JEMALLOC = ctypes.util.find_library("jemalloc")

# What a program run of the CLI sees once ``main`` returns: whether jemalloc is mapped.
_PROGRAM = (
    "import sys\n"
    "from voicebox import cli\n"
    "code = cli.main()\n"
    "print('jemalloc' in open('/proc/self/maps').read())\n"
    "sys.exit(code)\n"
)


def _run_program(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LD_PRELOAD", cli.ALLOCATOR_ENV)}
    return subprocess.run([sys.executable, "-c", _PROGRAM, "profiles"], capture_output=True,
                          text=True, timeout=120, env={**clean, **env}, check=False)


@needs(JEMALLOC is not None and sys.platform.startswith("linux"), "libjemalloc2")
def test_the_program_restarts_itself_on_jemalloc() -> None:
    run = _run_program()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "True"
    assert sum("hc1-llama3.1-8b" in line for line in lines) == 1  # the command ran, once


@needs(JEMALLOC is not None and sys.platform.startswith("linux"), "libjemalloc2")
def test_voicebox_malloc_system_keeps_glibc_s() -> None:
    run = _run_program(**{cli.ALLOCATOR_ENV: "system"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "False"


def test_an_unknown_voicebox_malloc_is_a_one_line_error() -> None:
    run = _run_program(**{cli.ALLOCATOR_ENV: "tcmalloc"})
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"voicebox: {cli.ALLOCATOR_ENV}='tcmalloc': must be jemalloc or system")


def test_main_with_arguments_never_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called with ``argv`` (by tests, by other code) the CLI runs in this process."""
    def refuse(*args: object) -> None:
        raise AssertionError("execve")

    monkeypatch.setattr(os, "execve", refuse)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert cli.main(["profiles"]) == 0


def test_a_failed_restart_says_so_and_goes_on(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object) -> None:
        raise OSError("exec format error")

    monkeypatch.setattr(os, "execve", fail)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libjemalloc.so.2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(cli.ALLOCATOR_ENV, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    cli._preload_jemalloc()
    assert "running on glibc's malloc" in capsys.readouterr().err


@pytest.mark.parametrize(("given", "expected"), [(None, "background_thread:true"),
                                                 ("narenas:1", "narenas:1")])
def test_the_restart_preloads_jemalloc_with_its_background_thread(
        monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str) -> None:
    """jemalloc gives pages back from its own thread (not the audio callback's); a
    ``MALLOC_CONF`` the user set is kept."""
    seen: dict[str, object] = {}

    def record(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.update(path=path, argv=argv, env=env)

    monkeypatch.setattr(os, "execve", record)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libjemalloc.so.2")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    monkeypatch.delenv(cli.ALLOCATOR_ENV, raising=False)
    if given is None:
        monkeypatch.delenv("MALLOC_CONF", raising=False)
    else:
        monkeypatch.setenv("MALLOC_CONF", given)
    cli._preload_jemalloc()
    env = seen["env"]
    assert isinstance(env, dict)
    assert env["LD_PRELOAD"] == "libjemalloc.so.2 libother.so"
    assert env["MALLOC_CONF"] == expected
    assert seen["path"] == sys.executable and seen["argv"] == list(sys.orig_argv)
