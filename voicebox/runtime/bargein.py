"""Fast barge-in: pause the reply the moment the microphone gets loud; VAD then decides.

Silero needs two or three frames of voiced sound before it calls speech, which is
100-200 ms after a soft onset. Pausing playback is reversible, so the gate pauses on
a rise in energy within ~20 ms and lets the VAD confirm (barge-in: playback cleared,
generation cancelled) or not (playback resumes where it paused).

This only makes sense when the microphone does not hear the speaker (the virtual
device, a headset, a card's echo cancellation or ``listen --echo-cancel``); ``listen``
turns it off otherwise.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np

from voicebox.audio.ring import PlaybackBuffer
from voicebox.engines.protocols import FloatAudio

_LOGGER = logging.getLogger(__name__)

DEAD_RMS = 1e-6
"""Below -120 dBFS a block is a muted or starting stream, not the room: no floor."""
FLOOR_PERCENTILE = 10
"""The floor is this percentile of the recent block levels, not their minimum: one odd
block (the one where a stream's digital silence turns into the room's noise holds a
few samples of it) must not set it."""


class EnergyGate:
    """Tracks the noise floor and flags sudden loud input.

    The floor is a low percentile of the levels of the last ``floor_blocks`` heard while
    no reply played and no turn was open (minimum statistics): it follows a quieter room
    within ~100 ms and a steady noise that starts or grows within about a second,
    whatever its level. A floor that only rose on blocks below the threshold never
    learned a noise that began more than ``rise_db`` above it (a stream that opened on
    digital silence, a fan switched on): every reply was then paused at its start for
    ``confirm_s``. Dead blocks (digital silence, as a stream may open with) are no floor
    at all."""

    def __init__(self, *, rise_db: float = 12.0, min_dbfs: float = -45.0, blocks: int = 2,
                 confirm_s: float = 0.4, floor_blocks: int = 100) -> None:
        self._rise = 10 ** (rise_db / 20)
        self._min = 10 ** (min_dbfs / 20)
        self._need = blocks
        self.confirm_s = confirm_s
        self._floor: float | None = None
        self._recent: deque[float] = deque(maxlen=floor_blocks)
        self._run = 0
        self.ducked_at: float | None = None
        """Stream time when playback was paused, or None."""
        self.ducked_level = 0.0
        """Input level that caused the pause."""

    def level(self, block: FloatAudio) -> float:
        return math.sqrt(float((block * block).mean())) if block.size else 0.0

    def loud(self, block: FloatAudio, *, track_floor: bool) -> bool:
        """True once ``blocks`` consecutive blocks stand clearly above the noise floor. An
        empty block (a resampler that had nothing to give yet) changes nothing."""
        if block.size == 0:
            return self._run >= self._need
        rms = self.level(block)
        if self._floor is None:
            self._floor = rms
        threshold = max(self._floor * self._rise, self._min)
        self._run = self._run + 1 if rms > threshold else 0
        if track_floor and rms > DEAD_RMS:
            self._recent.append(rms)
            self._floor = float(np.percentile(self._recent, FLOOR_PERCENTILE))
        return self._run >= self._need

    def false_alarm(self, level: float) -> None:
        """The VAD did not confirm speech: ``level`` is background for the rest of this
        reply (after it the floor is tracked again)."""
        self._floor = max(self._floor or 0.0, level)

    def on_block(self, block: FloatAudio, playback: PlaybackBuffer, *, playing: bool,
                 in_turn: bool, now_s: float) -> None:
        """Pause ``playback`` on a sudden rise while a reply plays; resume if the VAD has
        not confirmed speech within ``confirm_s`` (the level then counts as background)."""
        loud = self.loud(block, track_floor=not playing and not in_turn)
        if self.ducked_at is None:
            if playing and loud:
                playback.paused = True
                self.ducked_at = now_s
                self.ducked_level = self.level(block)
                _LOGGER.debug("reply paused at %.2f s: input %.4f over floor %.4f",
                              now_s, self.ducked_level, self._floor)
        elif now_s - self.ducked_at > self.confirm_s or not playing:
            _LOGGER.debug("reply resumed at %.2f s", now_s)
            playback.paused = False
            self.ducked_at = None
            self.false_alarm(self.ducked_level)
