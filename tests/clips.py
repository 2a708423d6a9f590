"""Real recorded speech for tests: Debian's pocketsphinx-testdata (LibriVox and cards),
and the level of a piece of audio."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.needs import needs
from voicebox.audio.wav import read_wav
from voicebox.bench.scenarios import TESTDATA
from voicebox.engines.protocols import FloatAudio

needs_testdata = needs((TESTDATA / "cards" / "001.wav").is_file(),
                       "apt package pocketsphinx-testdata")


def read_clip(name: str) -> FloatAudio:
    """``name`` relative to the test data, without ``.wav`` (e.g. ``cards/001``)."""
    return read_wav(TESTDATA / f"{name}.wav")[0]


def dbfs(audio: np.ndarray[Any, np.dtype[np.floating[Any]]]) -> float:
    """RMS level in dB full scale (-180 for digital silence)."""
    return float(20 * np.log10(np.sqrt(np.mean(audio**2)) + 1e-9))
