"""Sample-rate conversion with soxr (streaming for the microphone, one-shot for TTS)."""

from __future__ import annotations

import numpy as np
import soxr

from voicebox.engines.protocols import FloatAudio


def resample(audio: FloatAudio, from_hz: int, to_hz: int) -> FloatAudio:
    """Convert a whole buffer (a TTS clause) to another rate."""
    if from_hz == to_hz or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    out = soxr.resample(audio, from_hz, to_hz, quality="HQ")
    return np.asarray(out, dtype=np.float32)


class StreamResampler:
    """Convert a continuous stream block by block without edge clicks."""

    def __init__(self, from_hz: int, to_hz: int) -> None:
        self._passthrough = from_hz == to_hz
        self._stream = None if self._passthrough else soxr.ResampleStream(
            from_hz, to_hz, 1, dtype="float32", quality="HQ"
        )

    def process(self, block: FloatAudio) -> FloatAudio:
        if self._stream is None:
            return block
        return np.asarray(self._stream.resample_chunk(block), dtype=np.float32)
