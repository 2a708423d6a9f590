"""Acoustic echo cancellation: WebRTC's audio processing module (AEC3), through the
livekit wheel, which ships it built for Linux x86_64 and aarch64.

On a loudspeaker the microphone hears the reply: the VAD takes it for the user going on,
the ASR transcribes it, and the assistant interrupts and answers itself
(scripts/listen_pulse.py --echo-db 6). The canceller gets every block the card plays
(the far end) and removes its echo from every block the card captures, on the audio
thread, in 10 ms blocks at the card's rate (~0.07 ms of compute per block here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voicebox.engines.protocols import FloatAudio
from voicebox.errors import DeviceError

BLOCK_MS = 10
"""The only block length the module takes."""
REST_AFTER_BLOCKS = 100
"""Blocks of silence played (1 s, longer than a room's echo) after which the canceller
rests: the microphone passes as it is until the card plays sound again. Each call into
the module costs ~0.2 ms of a core at 10 ms spacing (the livekit FFI, cold caches), 3-4 %
of a core while idle; resting keeps the filter it has learned for the next reply."""


class EchoCanceller:
    """Removes the played audio's echo from the captured audio, block by block."""

    def __init__(self, sample_rate_hz: int) -> None:
        try:
            from livekit import rtc
        except ImportError as exc:
            raise DeviceError(
                f"echo cancellation needs the livekit package ({exc}); pip install livekit"
            ) from None
        self._rtc: Any = rtc
        self._rate = sample_rate_hz
        self._block = sample_rate_hz * BLOCK_MS // 1000
        self._apm: Any = rtc.AudioProcessingModule(
            echo_cancellation=True, high_pass_filter=True
        )
        self._quiet_blocks = REST_AFTER_BLOCKS + 1
        """Silent blocks played in a row: nothing has been played yet."""
        # Everything the audio thread touches is allocated here, once: the frames the
        # module reads and writes in place, their int16 views, and float scratch.
        self._far, self._far_pcm = self._new_frame()
        self._near, self._near_pcm = self._new_frame()
        self._scaled = np.empty(self._block, dtype=np.float32)
        self._cleaned = np.empty(self._block, dtype=np.float32)

    @property
    def resting(self) -> bool:
        """Nothing was played for ``REST_AFTER_BLOCKS``: there is no echo to remove."""
        return self._quiet_blocks > REST_AFTER_BLOCKS

    def set_delay_ms(self, delay_ms: float) -> None:
        """The card's capture plus playback latency: a hint for the echo's delay."""
        self._apm.set_stream_delay_ms(int(round(delay_ms)))

    def played(self, block: FloatAudio) -> None:
        """A block the card is about to play (the far end)."""
        self._check(block)
        self._quiet_blocks = self._quiet_blocks + 1 if not block.any() else 0
        if not self.resting:
            self._to_pcm(block, self._far_pcm)
            self._apm.process_reverse_stream(self._far)

    def captured(self, block: FloatAudio) -> FloatAudio:
        """A block the card captured, with the echo of what was played removed (a buffer
        of the canceller's, valid until its next call)."""
        self._check(block)
        if self.resting:
            return block
        self._to_pcm(block, self._near_pcm)
        self._apm.process_stream(self._near)  # in place
        np.multiply(self._near_pcm, 1.0 / 32767.0, out=self._cleaned)
        return self._cleaned

    def _check(self, block: FloatAudio) -> None:
        if block.shape[0] != self._block:
            raise ValueError(f"echo cancellation takes {self._block}-sample blocks "
                             f"({BLOCK_MS} ms at {self._rate} Hz), not {block.shape[0]}")

    def _new_frame(self) -> tuple[Any, np.ndarray[Any, np.dtype[np.int16]]]:
        frame = self._rtc.AudioFrame(bytearray(2 * self._block), self._rate, 1, self._block)
        return frame, np.frombuffer(frame.data, dtype=np.int16)

    def _to_pcm(self, block: FloatAudio, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        np.multiply(block, 32767.0, out=self._scaled)
        np.clip(self._scaled, -32767.0, 32767.0, out=self._scaled)
        pcm[:] = self._scaled  # truncates, as astype(np.int16) does
