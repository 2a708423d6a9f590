"""Real recorded speech for tests: Debian's pocketsphinx-testdata (LibriVox and cards)."""

from __future__ import annotations

import pytest

from voicebox.audio.wav import read_wav
from voicebox.bench.scenarios import TESTDATA
from voicebox.engines.protocols import FloatAudio

needs_testdata = pytest.mark.skipif(
    not (TESTDATA / "cards" / "001.wav").is_file(),
    reason="apt package pocketsphinx-testdata missing",
)


def read_clip(name: str) -> FloatAudio:
    """``name`` relative to the test data, without ``.wav`` (e.g. ``cards/001``)."""
    return read_wav(TESTDATA / f"{name}.wav")[0]
