"""The audio of the turn in progress, as the ASR gets it."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from voicebox.engines.protocols import FloatAudio

KEEP_SILENT_FRAMES = 8
"""Silent frames (about 250 ms) kept of a pause inside a turn: Whisper reads across a
short gap better than across a long one."""


class TurnAudio:
    """VAD frames of the current turn: the pre-roll before its start, its speech with long
    pauses cut short, and after its end the silence since (kept in case it continues)."""

    def __init__(self, *, frame_s: float, pre_roll_ms: int, min_speech_ms: int,
                 end_threshold: float) -> None:
        frame_ms = frame_s * 1000
        self._frame_ms = frame_ms
        self._end_threshold = end_threshold
        # The pre-roll reaches ``pre_roll_ms`` before the speech start: the frames that
        # made the VAD call it (``min_speech_ms``) are in the deque too.
        start_frames = math.ceil(min_speech_ms / frame_ms)
        self._pre_roll: deque[FloatAudio] = deque(
            maxlen=max(1, int(pre_roll_ms / frame_ms) + start_frames))
        self.frames: list[FloatAudio] = []
        """The turn so far (empty between turns)."""
        self._last_turn: list[FloatAudio] = []
        self._since_end: list[FloatAudio] = []
        self._silent_run = 0

    def add(self, frame: FloatAudio, speech_probability: float, *, in_turn: bool) -> None:
        """One VAD frame, before the turn detector hears it."""
        if in_turn:
            quiet = speech_probability < self._end_threshold
            self._silent_run = self._silent_run + 1 if quiet else 0
            if self._silent_run <= KEEP_SILENT_FRAMES:
                self.frames.append(frame)
        else:
            self._since_end.append(frame)
        self._pre_roll.append(frame)

    def start(self) -> None:
        """A new turn began: it starts with the pre-roll."""
        self.frames = list(self._pre_roll)
        self._silent_run = 0

    def end(self) -> None:
        """The turn was confirmed."""
        self._last_turn = self.frames
        self._since_end = []
        self.frames = []

    @property
    def gap_ms(self) -> float:
        """Silence since the last turn ended."""
        return len(self._since_end) * self._frame_ms

    def resume(self) -> None:
        """The last turn goes on: the silence in between is cut short, as inside a turn."""
        self.frames = self._last_turn + self._since_end[-KEEP_SILENT_FRAMES:]
        self._since_end = []
        self._silent_run = 0

    def samples(self) -> FloatAudio:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.float32)
