"""Turn detection: VAD probabilities in, start / pause / resume / end decisions out."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import numpy as np

from voicebox.config import TurnConfig

FLOOR_FRAMES = 94
"""VAD-silent frames the energy hold's noise floor is taken over (~3 s)."""
FLOOR_PERCENTILE = 10
DEAD_RMS = 1e-6
"""Digital silence (a muted or starting stream) is no floor."""


class Decision(enum.Enum):
    """What the detector concluded from the latest frame."""

    START = "start"
    """The user started speaking (a new turn)."""
    PAUSE = "pause"
    """Silence long enough to prepare a reply speculatively."""
    RESUME = "resume"
    """Speech again after a PAUSE: the prepared reply is stale."""
    END = "end"
    """Silence long enough to confirm the end of the turn."""


class _State(enum.Enum):
    IDLE = 0
    SPEECH = 1


@dataclass(slots=True)
class TurnState:
    """Where the current turn stands, in stream seconds."""

    speech_start_s: float = 0.0
    speech_end_s: float = 0.0
    """End of the last speech frame."""
    silence_s: float = 0.0
    """Silence since then (or since the last sound the energy hold heard, if later)."""
    sound_s: float = 0.0
    """End of the last frame after the speech end that the energy hold took for the user
    going on (0: none)."""


class TurnDetector:
    """Hysteresis on frame probabilities, with a speculative pause before the end."""

    def __init__(self, config: TurnConfig, frame_s: float) -> None:
        self._cfg = config
        self._frame_s = frame_s
        self._state = _State.IDLE
        self._run = 0
        self._paused = False
        self.turn = TurnState()
        self._quiet_levels: deque[float] = deque(maxlen=FLOOR_FRAMES)
        self._dipped = False
        """The level has fallen to the floor since the VAD's end of speech."""

    @property
    def in_turn(self) -> bool:
        return self._state is _State.SPEECH

    @property
    def silence_ms(self) -> float:
        return self.turn.silence_s * 1000

    def update(
        self, prob: float, frame_end_s: float, level: float | None = None
    ) -> Decision | None:
        """Feed one frame's probability; ``frame_end_s`` is its end in stream time;
        ``level`` its RMS, for the energy hold (``[turn] energy_hold``)."""
        cfg = self._cfg
        sound = self._sound(prob, level)
        if self._state is _State.IDLE:
            self._run = self._run + 1 if prob >= cfg.start_threshold else 0
            if self._run * self._frame_s * 1000 >= cfg.min_speech_ms:
                self._state = _State.SPEECH
                self._paused = False
                self.turn = TurnState(
                    speech_start_s=frame_end_s - self._run * self._frame_s,
                    speech_end_s=frame_end_s,
                )
                self._run = 0
                return Decision.START
            return None
        speaking = prob >= (cfg.start_threshold if self.turn.silence_s > 0 else cfg.end_threshold)
        if speaking:
            self.turn.speech_end_s = frame_end_s
            self.turn.silence_s = 0.0
            self._dipped = False
            if self._paused:
                self._paused = False
                return Decision.RESUME
            return None
        if sound and frame_end_s - self.turn.speech_end_s < cfg.end_of_turn_ms / 1000:
            # Held at most once the longest wait: a noisy room (a clock, a keyboard) the
            # VAD rightly calls silence must not keep a finished turn open.
            self.turn.sound_s = frame_end_s
        self.turn.silence_s = frame_end_s - max(self.turn.speech_end_s, self.turn.sound_s)
        silence_ms = self.turn.silence_s * 1000
        if silence_ms >= cfg.end_of_turn_ms:
            self._state = _State.IDLE
            self._paused = False
            return Decision.END
        if not self._paused and silence_ms >= cfg.speculate_after_ms:
            self._paused = True
            return Decision.PAUSE
        return None

    def _sound(self, prob: float, level: float | None) -> bool:
        """The energy hold: after the VAD's end of speech, a frame clearly above the noise
        floor once the level has fallen to it. Silero is late on soft word onsets (and
        a pause it hears ends only when it calls speech again), so a resumed sentence
        could be answered before the VAD noticed; this restarts the silence count at the
        first loud frame instead, and the VAD then resumes the turn or does not (a cough:
        the count runs on from it). The floor is a low percentile of the levels of the
        frames the VAD called silence (minimum statistics)."""
        if level is None or not self._cfg.energy_hold:
            return False
        threshold = max(
            10 ** (self._cfg.hold_min_dbfs / 20),
            self._floor() * 10 ** (self._cfg.hold_rise_db / 20),
        )
        if prob < self._cfg.end_threshold and level > DEAD_RMS:
            self._quiet_levels.append(level)
        if self._state is not _State.SPEECH:
            return False
        if level <= threshold:
            self._dipped = True
            return False
        return self._dipped

    def _floor(self) -> float:
        if not self._quiet_levels:
            return 0.0
        return float(np.percentile(self._quiet_levels, FLOOR_PERCENTILE))

    def end_now(self) -> bool:
        """Confirm the end of the turn early (a semantic end-of-turn decision)."""
        if self._state is not _State.SPEECH or self.turn.silence_s <= 0:
            return False
        self._state = _State.IDLE
        self._paused = False
        return True


def frame_level(frame: np.ndarray) -> float:
    """RMS of one VAD frame."""
    return float(np.sqrt(np.mean(np.square(frame, dtype=np.float64)))) if frame.size else 0.0


def end_of_turn_score(
    config: TurnConfig, llm_probability: float | None, audio_probability: float | None
) -> float | None:
    """The mean of the available signals, the LLM's scaled so ``llm_eot_full`` counts as 1."""
    signals = []
    if llm_probability is not None:
        signals.append(min(1.0, llm_probability / config.llm_eot_full))
    if audio_probability is not None and config.audio_model:
        signals.append(audio_probability)
    return sum(signals) / len(signals) if signals else None


def required_silence_ms(config: TurnConfig, score: float | None) -> int:
    """Silence after the last speech frame that confirms a turn with this score."""
    curve = config.silence_curve
    if score is None or score < curve[0][0]:
        return config.end_of_turn_ms
    ms = curve[-1][1]
    for (s0, ms0), (s1, ms1) in zip(curve, curve[1:], strict=False):
        if score <= s1:
            ms = round(ms0 + (ms1 - ms0) * (score - s0) / (s1 - s0))
            break
    return min(ms, config.end_of_turn_ms)
