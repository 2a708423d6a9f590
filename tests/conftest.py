"""Shared fixtures: offline hub, real engines (loaded once), scenario audio."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from voicebox.config import Config  # noqa: E402

TESTDATA = Path("/usr/share/pocketsphinx/test/data")


@pytest.fixture(scope="session")
def real_engines() -> Iterator[tuple[object, object]]:
    """The default real models (VAD, ASR, LLM, TTS), loaded once for the session."""
    from voicebox.runtime.build import close_engines, load_engines

    vad, engines = load_engines(Config())
    yield vad, engines
    close_engines(engines)
