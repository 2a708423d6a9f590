"""The interfaces every engine implements; stages depend on these, never on a library."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatAudio = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1]."""

ASR_SAMPLE_RATE_HZ = 16_000
"""VAD and ASR engines take 16 kHz mono audio."""


class VadEngine(Protocol):
    """Frame-level speech probability (silero VAD or a fake)."""

    frame_samples: int
    """Samples per frame at 16 kHz that ``probability`` expects."""

    def probability(self, frame: FloatAudio) -> float:
        """Speech probability of one frame; keeps recurrent state between calls."""
        ...

    def reset(self) -> None:
        """Forget the recurrent state (new stream)."""
        ...


@dataclass(frozen=True, slots=True)
class Transcript:
    """What an ASR engine heard."""

    text: str
    """The words, stripped."""
    audio_s: float
    """Length of the audio that was transcribed."""


class AsrEngine(Protocol):
    """Speech to text on 16 kHz mono audio."""

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        final: bool,
        prompt: str = "",
        committed: str = "",
        draft: str = "",
        cancel: threading.Event | None = None,
    ) -> Transcript:
        """Transcribe ``audio``; ``final`` asks for the most accurate pass.

        ``prompt`` is text known to precede the audio. ``committed`` is the start of this
        audio's own text as the partial transcripts settled it, ``draft`` the latest
        partial: a final may decode only what follows (an engine is free to ignore both).
        ``cancel``, once set (from another thread), asks the engine to stop at its next
        step and return an empty transcript: a partial nobody needs any more should not
        hold up the final waiting behind it (an engine is free to finish anyway).
        """
        ...


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str


class LlmEngine(Protocol):
    """A chat model that streams its reply token by token."""

    @property
    def context_tokens(self) -> int:
        """Size of the context window in tokens."""
        ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the rendered prompt for ``messages`` takes (with the reply header)."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        """Yield the reply piece by piece; stop early once ``cancel`` is set."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


class TtsEngine(Protocol):
    """Text to speech, one call per clause."""

    @property
    def sample_rate_hz(self) -> int:
        """Rate of the audio ``synthesize`` returns."""
        ...

    def synthesize(self, text: str) -> FloatAudio:
        """Speak ``text``; returns mono float32 audio at ``sample_rate_hz``."""
        ...


@runtime_checkable
class ChunkedTts(Protocol):
    """A TTS engine that can also hand over a clause's speech a piece at a time."""

    def synthesize_chunks(self, text: str) -> Iterator[FloatAudio]:
        """Speak ``text`` in pieces at ``sample_rate_hz``, each as soon as it is decoded."""
        ...


@runtime_checkable
class EndOfTurnScorer(Protocol):
    """An LLM that can say whether the user's words so far make a finished turn."""

    def end_of_turn_probability(self, messages: Sequence[ChatMessage]) -> float:
        """Probability that the last user message is complete (0..1)."""
        ...

    def prefill(self, messages: Sequence[ChatMessage]) -> None:
        """Warm the cache with the prompt for ``messages`` (stable partial transcripts)."""
        ...


class TurnModel(Protocol):
    """An audio end-of-turn model (prosody)."""

    def probability(self, audio: FloatAudio) -> float:
        """Probability that ``audio`` (16 kHz, the turn so far) ends a finished turn."""
        ...
