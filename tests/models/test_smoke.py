"""``voicebox models check --run``: the engines loaded and run once in a child process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.needs import skip_or_fail
from voicebox.errors import ModelError
from voicebox.models.smoke import child_command, crash_site, run_engines

DUMP = """Fatal Python error: Segmentation fault

Thread 0x00007fa64435c6c0 (most recent call first):
  File "/srv/x/site-packages/llama_cpp/_internals.py", line 303 in kv_cache_seq_rm
  File "/srv/x/voicebox/engines/llama_llm.py", line 253 in _eval_reply_context

Current thread 0x00007fa6493206c0 (most recent call first):
  File "/srv/x/.venv/lib/python3.11/site-packages/llama_cpp/_internals.py", line 329 in decode
  File "/srv/x/voicebox/engines/llama_llm.py", line 283 in probabilities
  File "/srv/x/voicebox/card/standin.py", line 138 in next_token_probabilities
"""


def test_crash_site_is_the_innermost_voicebox_frame_of_the_crashing_thread() -> None:
    assert crash_site(DUMP) == " in voicebox/engines/llama_llm.py:283 (probabilities)"
    assert crash_site("Segmentation fault") == ""


def test_a_native_crash_is_one_line_naming_the_signal() -> None:
    crash = [sys.executable, "-X", "faulthandler", "-c",
             "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    with pytest.raises(ModelError, match=r"^engines check: the engines crashed \(SIGSEGV\); "
                                         "a native library does not run on this machine$"):
        run_engines(crash)


def test_a_failing_child_gives_its_last_line() -> None:
    fail = [sys.executable, "-c",
            "import sys; print('loading', file=sys.stderr); "
            "print('voicebox: LLM model file not found: x.gguf', file=sys.stderr); sys.exit(2)"]
    with pytest.raises(ModelError, match=r"^engines check: LLM model file not found: x\.gguf$"):
        run_engines(fail)


def test_a_hung_child_times_out() -> None:
    with pytest.raises(ModelError, match="took over 1 s"):
        run_engines([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1.0)


def _need_default_models() -> None:
    from voicebox.models.locate import packaged_path

    try:
        for kind in ("vad", "asr", "llm", "tts"):
            packaged_path(kind)
    except ModelError:
        skip_or_fail("the default models")


def test_the_real_engines_load_and_run_once_in_a_child() -> None:
    _need_default_models()
    assert run_engines(child_command()) > 0


def test_a_bad_config_is_reported_by_the_child(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[turn]\nend_of_turn_ms = -1\n")
    with pytest.raises(ModelError, match=r"^engines check: config: end_of_turn_ms must be"):
        run_engines(child_command(config))


def test_models_check_run_on_the_command_line() -> None:
    import subprocess

    _need_default_models()
    proc = subprocess.run([sys.executable, "-m", "voicebox", "models", "check", "--run"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "ok  every engine loaded and ran once" in proc.stdout


def test_models_check_run_takes_the_config(tmp_path: Path) -> None:
    import subprocess

    _need_default_models()
    config = tmp_path / "bad.toml"
    config.write_text("[llm]\nthreads = 0\n")
    proc = subprocess.run([sys.executable, "-m", "voicebox", "models", "check", "--run",
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "voicebox: engines check: config: threads must be >= 1"
