"""Preallocated buffers shared between the audio thread and the event loop.

The audio side (a PortAudio callback or the virtual device) only copies into and out
of these; it never allocates, logs, locks or calls a model.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from voicebox.engines.protocols import FloatAudio


class InputRing:
    """Single-producer, single-consumer ring of captured samples with an absolute index."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._cap = capacity
        self.written = 0
        """Samples written since the start (absolute stream position of the next one)."""
        self._read = 0
        self.overruns = 0
        """Samples lost because the reader fell more than ``capacity`` behind."""

    def write(self, block: FloatAudio) -> None:
        n = block.shape[0]
        start = self.written % self._cap
        first = min(n, self._cap - start)
        self._buf[start : start + first] = block[:first]
        if first < n:
            self._buf[: n - first] = block[first:]
        self.written += n

    def read_new(self) -> tuple[int, FloatAudio]:
        """The absolute position of the first unread sample and the unread samples."""
        end = self.written
        if end - self._read > self._cap:
            self.overruns += end - self._read - self._cap
            self._read = end - self._cap
        start = self._read
        idx = np.arange(start, end) % self._cap
        self._read = end
        return start, self._buf[idx]


class PlaybackBuffer:
    """Reply audio waiting for the speaker, consumed block by block by the audio side.

    The loop pushes chunks tagged with their turn; the audio side fills each output
    block and records, in plain attributes, which turn is playing, the stream position
    of its first sample and how many of its samples have been played.
    """

    def __init__(self) -> None:
        self._chunks: deque[tuple[FloatAudio, int]] = deque()
        self._offset = 0
        self._flush = False
        self.playing_turn = -1
        self.first_sample_pos = -1
        self.played = 0
        self.paused = False
        """While set, the audio side plays silence and keeps its place (reversible)."""

    def push(self, audio: FloatAudio, turn: int) -> None:
        """Queue audio for ``turn`` (loop side)."""
        if audio.size:
            self._chunks.append((audio, turn))

    def clear(self) -> None:
        """Stop at once: the audio side drops everything at its next block (loop side)."""
        self._flush = True

    @property
    def idle(self) -> bool:
        return not self._chunks

    def fill(self, out: FloatAudio, stream_pos: int) -> None:
        """Fill ``out`` with queued audio, zeros past the end (audio side)."""
        if self._flush:
            self._chunks.clear()
            self._offset = 0
            self._flush = False
            # Whatever plays next starts its count anew, even a new reply to the same
            # turn (a false start): its first sample is not the dropped reply's.
            self.playing_turn = -1
        filled = 0
        n = out.shape[0]
        while filled < n and self._chunks and not self.paused:
            audio, turn = self._chunks[0]
            if turn != self.playing_turn:
                # The loop reads these between blocks; ``playing_turn`` goes last so it
                # never sees the new turn beside the last turn's position and count.
                self.first_sample_pos = stream_pos + filled
                self.played = 0
                self.playing_turn = turn
            take = min(n - filled, audio.shape[0] - self._offset)
            out[filled : filled + take] = audio[self._offset : self._offset + take]
            filled += take
            self.played += take
            self._offset += take
            if self._offset >= audio.shape[0]:
                self._chunks.popleft()
                self._offset = 0
        if filled < n:
            out[filled:] = 0.0


class DuplexCore:
    """What a duplex device does each block: capture into the ring, play from the buffer.

    Output produced while handling input block ``i`` is heard during block ``i + 1``,
    as on a real duplex sound card; positions recorded for playback say so.
    """

    def __init__(self, sample_rate_hz: int, block_samples: int, ring_s: float = 10.0) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.block_samples = block_samples
        self.input = InputRing(int(ring_s * sample_rate_hz))
        self.playback = PlaybackBuffer()
        self.blocks = 0
        self.xruns = 0

    def process(self, indata: FloatAudio, outdata: FloatAudio) -> None:
        self.input.write(indata)
        self.playback.fill(outdata, (self.blocks + 1) * self.block_samples)
        self.blocks += 1

    @property
    def stream_s(self) -> float:
        """Seconds of audio captured so far."""
        return self.blocks * self.block_samples / self.sample_rate_hz
