"""Small timestamped events emitted by every stage; one turn's timings read off the log."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from voicebox.errors import VoiceboxError


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events."""

    t: float
    """Monotonic time in seconds (``time.monotonic()``) when the fact became true."""
    stream_s: float
    """Position in the audio stream, in seconds since the first input sample."""


@dataclass(frozen=True, slots=True)
class SpeechStarted(Event):
    """VAD saw the user start speaking."""

    turn: int
    """Index of the user turn this speech belongs to."""


@dataclass(frozen=True, slots=True)
class SpeechEnded(Event):
    """VAD saw the user stop speaking (after the configured silence)."""

    turn: int
    speech_end_s: float
    """Stream time of the last speech frame (the end of speech, before the silence)."""


@dataclass(frozen=True, slots=True)
class SpeechResumed(Event):
    """The user spoke again during a pause the turn detector had been weighing."""

    turn: int


@dataclass(frozen=True, slots=True)
class TurnEnded(Event):
    """The turn detector decided the user has finished; the reply may be played."""

    turn: int
    speech_end_s: float
    silence_ms: float
    """Silence after the last speech frame when the decision was taken."""
    reason: str
    """What decided it: ``silence``, ``semantic`` (the end-of-turn score's silence) or
    ``intent`` (the words are a whole sentence of a known command)."""


@dataclass(frozen=True, slots=True)
class IntentRecognized(Event):
    """The confirmed turn is a command the application knows (``[intents] file``)."""

    turn: int
    name: str
    """The intent's name in the intents file."""
    slots: dict[str, str | int | float]
    """Slot name -> value, e.g. ``{"device": "kitchen lights"}`` or ``{"minutes": 10}``."""
    text: str
    """The transcript it was read from. Emitted after ``TurnEnded`` (or, when the turn
    ended before its final transcript was in, as soon as it is); if the user goes on
    within ``[turn] continuation_ms`` (before the reply is heard), ``ReplyCancelled``
    ("user continued") follows and the longer turn is read again."""


@dataclass(frozen=True, slots=True)
class TranscriptPartial(Event):
    """An interim transcript while the user speaks."""

    turn: int
    text: str
    compute_ms: float


@dataclass(frozen=True, slots=True)
class TranscriptFinal(Event):
    """The transcript of the whole turn."""

    turn: int
    text: str
    compute_ms: float


@dataclass(frozen=True, slots=True)
class EndOfTurnScored(Event):
    """The LLM weighed whether the user's words make a finished turn."""

    turn: int
    score: float
    """Combined end-of-turn score (0..1) from the signals below."""
    llm_probability: float | None
    """The LLM's probability that the sentence is complete (None: not available)."""
    audio_probability: float | None
    """The audio turn model's probability that the speaker is done (None: not available)."""
    required_silence_ms: float
    """Silence after the last speech frame that will confirm the turn."""
    intent: str | None = None
    """The intent the words are a whole sentence of (its silence then applies)."""


@dataclass(frozen=True, slots=True)
class LlmFirstToken(Event):
    """The LLM produced its first token of the reply."""

    turn: int
    compute_ms: float
    """Time from the request to the first token."""


@dataclass(frozen=True, slots=True)
class ReplyText(Event):
    """A clause of the reply handed to TTS."""

    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class TtsFirstAudio(Event):
    """TTS produced the first audio of the reply."""

    turn: int
    compute_ms: float


@dataclass(frozen=True, slots=True)
class PlaybackStarted(Event):
    """The first sample of the reply reached the speaker (or the virtual device)."""

    turn: int
    latency_ms: float
    """From the end of the user's speech to this first reply sample."""


@dataclass(frozen=True, slots=True)
class ReplyDone(Event):
    """The reply finished playing."""

    turn: int
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Interrupted(Event):
    """The user barged in: playback stopped, generation and synthesis cancelled."""

    turn: int
    heard_text: str
    """The part of the reply the user heard; only this goes into history."""


@dataclass(frozen=True, slots=True)
class ReplyCancelled(Event):
    """A speculative reply was dropped before any of it played."""

    turn: int
    reason: str


@dataclass(frozen=True, slots=True)
class AudioHealth(Event):
    """Real-time health of the audio path, emitted when the pipeline stops."""

    dropped_frames: int
    """VAD frames dropped because the turn loop fell behind (its queue was full)."""
    xruns: int
    """Sound-card callbacks that reported an input overflow or output underflow."""
    late_blocks: int
    """Virtual-device blocks delivered late by more than a block (simulation only)."""
    input_overruns: int = 0
    """Captured samples overwritten before the loop read them (the loop stalled for
    longer than the input ring holds, 10 s)."""


def to_dict(event: Event) -> dict[str, Any]:
    """The event as a flat dict with its type name under ``event``."""
    data: dict[str, Any] = {"event": type(event).__name__}
    data.update(dataclasses.asdict(event))
    return data


class EventLog:
    """Collects events in memory and optionally writes them as JSON lines."""

    def __init__(
        self, path: Path | None = None, listeners: list[Callable[[Event], None]] | None = None
    ) -> None:
        self.events: list[Event] = []
        self.listeners = list(listeners or [])
        self._path = path
        self._write_error: str | None = None
        try:
            self._file: IO[str] | None = path.open("w", encoding="utf-8") if path else None
        except OSError as exc:
            raise VoiceboxError(f"cannot write event log {path}: {exc.strerror}") from None

    def emit(self, event: Event) -> None:
        self.events.append(event)
        for listener in self.listeners:
            listener(event)
        if self._file is not None:
            try:
                self._file.write(json.dumps(to_dict(event)) + "\n")
                self._file.flush()
            except OSError as exc:  # a full disk: the conversation goes on, the log stops
                self._write_error = exc.strerror or str(exc)
                self._drop_file()

    def _drop_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def close(self) -> None:
        """Close the file; VoiceboxError if writing it failed on the way."""
        self._drop_file()
        if self._write_error is not None:
            error, self._write_error = self._write_error, None
            raise VoiceboxError(f"cannot write event log {self._path}: {error}")

