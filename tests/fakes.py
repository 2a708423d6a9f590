"""Fake engines implementing the same Protocols as the real ones, for fast unit tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from voicebox.engines.protocols import ChatMessage, FloatAudio, Transcript
from voicebox.runtime.reply import Engines
from voicebox.runtime.workers import EngineWorker


class EnergyVad:
    """Speech probability from frame energy: loud frames are speech."""

    frame_samples = 512

    def probability(self, frame: FloatAudio) -> float:
        return 0.95 if float(np.sqrt((frame**2).mean())) > 0.01 else 0.02

    def reset(self) -> None:
        pass


class FixedAsr:
    """Always hears the same words (or nothing for silence, or for audio shorter than
    ``min_s``: a cough), ``delay_s`` after it is asked (a final transcript slower than
    the turn's end)."""

    def __init__(self, text: str = "turn on the lights", delay_s: float = 0.0,
                 min_s: float = 0.0) -> None:
        self.text = text
        self.delay_s = delay_s
        self.min_s = min_s
        self.calls: list[tuple[int, bool]] = []
        self.committed: list[str] = []

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
        if self.delay_s:
            time.sleep(self.delay_s)
        self.calls.append((audio.shape[0], final))
        self.committed.append(committed)
        loud = audio.size and float(np.abs(audio).max()) > 0.01
        heard = loud and audio.shape[0] >= self.min_s * 16_000
        return Transcript(self.text if heard else "", audio.shape[0] / 16_000)


class ScriptedLlm:
    """Streams a canned reply word by word, one word per ``token_s``, honouring cancel."""

    def __init__(self, reply: str = "Sure, the lights are on now. Anything else?",
                 token_s: float = 0.005) -> None:
        self.reply = reply
        self.token_s = token_s
        self.prompts: list[list[ChatMessage]] = []
        self.cancelled = 0
        self.count_threads: set[str] = set()

    @property
    def context_tokens(self) -> int:
        return 512

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # A card counts over its link: record where it is asked (never the event loop).
        self.count_threads.add(threading.current_thread().name)
        return sum(len(m.content.split()) + 4 for m in messages)

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        self.prompts.append(list(messages))
        for i, word in enumerate(self.reply.split()[:max_tokens]):
            if cancel.is_set():
                self.cancelled += 1
                return
            time.sleep(self.token_s)
            yield word if i == 0 else " " + word

    def close(self) -> None:
        pass


class ScoringLlm(ScriptedLlm):
    """A scripted LLM that also scores end of turn (always sure the user is done)."""

    def __init__(self, probability: float = 0.9, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.probability = probability
        self.scored: list[str] = []

    def end_of_turn_probability(self, messages: Sequence[ChatMessage]) -> float:
        self.scored.append(messages[-1].content)
        return self.probability

    def prefill(self, messages: Sequence[ChatMessage]) -> None:
        pass


class ToneTts:
    """A 440 Hz tone, ``seconds_per_word`` long per word."""

    def __init__(self, seconds_per_word: float = 0.25) -> None:
        self.seconds_per_word = seconds_per_word
        self.spoken: list[str] = []

    @property
    def sample_rate_hz(self) -> int:
        return 16_000

    def synthesize(self, text: str) -> FloatAudio:
        self.spoken.append(text)
        n = int(len(text.split()) * self.seconds_per_word * 16_000)
        return (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16_000)).astype(np.float32)


def fake_engines(asr: FixedAsr | None = None, llm: ScriptedLlm | None = None,
                 tts: ToneTts | None = None) -> Engines:
    return Engines(
        vad_worker=EngineWorker("vad"),
        asr=asr or FixedAsr(), asr_worker=EngineWorker("asr"),
        llm=llm or ScriptedLlm(), llm_worker=EngineWorker("llm"),
        tts=tts or ToneTts(), tts_worker=EngineWorker("tts"),
    )


def speechlike(seconds: float, rate: int = 16_000) -> FloatAudio:
    """Loud noise standing in for speech (the EnergyVad hears it as speech)."""
    rng = np.random.default_rng(0)
    return (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def silence(seconds: float, rate: int = 16_000) -> FloatAudio:
    return np.zeros(int(seconds * rate), np.float32)


class ChunkedToneTts(ToneTts):
    """``ToneTts`` handed over in pieces of ``piece_s``, the second and later ones
    ``delay_s`` after the one before (a slow decoder); ``produced`` notes for each piece
    which call it came from (counting from 0) and when it was yielded (``time.monotonic``)."""

    def __init__(self, piece_s: float = 0.1, delay_s: float = 0.0, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.piece_s = piece_s
        self.delay_s = delay_s
        self.produced: list[tuple[int, float]] = []

    def synthesize_chunks(self, text: str) -> Iterator[FloatAudio]:
        audio = self.synthesize(text)
        call = len(self.spoken) - 1
        step = int(self.piece_s * 16_000)
        for i in range(0, audio.shape[0], step):
            if i:
                time.sleep(self.delay_s)
            self.produced.append((call, time.monotonic()))
            yield audio[i : i + step]
