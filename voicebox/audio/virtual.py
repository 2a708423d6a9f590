"""A virtual duplex sound card: plays a WAV into the pipeline in real time, records the reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from voicebox.audio.ring import DuplexCore
from voicebox.engines.protocols import FloatAudio


class VirtualDuplexDevice:
    """Feeds ``audio`` block by block at real-time pace (or as fast as asked).

    Everything the pipeline plays is recorded, time-aligned with the input: sample 0
    of both is the same instant. After the input runs out it keeps feeding silence
    until ``stop`` is set or ``max_tail_s`` passes.
    """

    def __init__(
        self,
        audio: FloatAudio,
        sample_rate_hz: int,
        *,
        block_ms: float = 10.0,
        speed: float = 1.0,
        max_tail_s: float = 30.0,
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        block = max(1, round(sample_rate_hz * block_ms / 1000))
        self.core = DuplexCore(sample_rate_hz, block)
        self._audio = audio
        self._speed = speed
        self._max_tail_blocks = int(max_tail_s * sample_rate_hz / block)
        self._out: list[FloatAudio] = []
        self.input_done = asyncio.Event()
        self.late_blocks = 0
        """Blocks handled more than one block late (the loop was too busy)."""

    @property
    def block_samples(self) -> int:
        return self.core.block_samples

    async def run(self, on_block: Callable[[], None], stop: asyncio.Event) -> None:
        core, b = self.core, self.core.block_samples
        n_in = -(-self._audio.shape[0] // b)
        padded = np.zeros(n_in * b, dtype=np.float32)
        padded[: self._audio.shape[0]] = self._audio
        silence = np.zeros(b, dtype=np.float32)
        block_s = b / self.sample_rate_hz / self._speed
        t0 = time.monotonic()
        i = 0
        while True:
            if i >= n_in:
                self.input_done.set()
                if stop.is_set() or i >= n_in + self._max_tail_blocks:
                    break
            due = t0 + (i + 1) * block_s
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -block_s:
                self.late_blocks += 1
            out = np.zeros(b, dtype=np.float32)
            core.process(padded[i * b : (i + 1) * b] if i < n_in else silence, out)
            self._out.append(out)
            on_block()
            i += 1

    def recording(self) -> FloatAudio:
        """What was played, aligned with the input (the first block is the card's delay)."""
        b = self.core.block_samples
        parts = [np.zeros(b, dtype=np.float32), *self._out]
        out = np.concatenate(parts)
        return out[: max(out.shape[0] - b, self._audio.shape[0])]
