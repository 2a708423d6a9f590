"""Partial transcripts while the user speaks: shown, prefilled into the LLM, agreed on."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from voicebox.engines.asr_checks import committed_prefix
from voicebox.engines.protocols import ChatMessage, EndOfTurnScorer, FloatAudio
from voicebox.events import Event, TranscriptPartial
from voicebox.runtime.reply import Engines


class PartialTranscriber:
    """Every ``interval_s`` of speech, transcribe the turn so far (fast, greedy).

    Each partial is emitted as an event, and its words are prefilled into the LLM's KV
    cache so the reply later prefills only the tail. The words two successive partials
    agree on (``committed``) let the final transcript decode only what follows them.
    """

    def __init__(
        self,
        engines: Engines,
        *,
        interval_s: float,
        prefill: bool,
        prompt: Callable[[str], Sequence[ChatMessage]],
        emit: Callable[[Callable[[float, float], Event]], None],
    ) -> None:
        self._eng = engines
        self._interval_s = interval_s
        llm = engines.llm
        self._scorer = llm if prefill and isinstance(llm, EndOfTurnScorer) else None
        self._prompt = prompt
        self._emit = emit
        self._texts: list[str] = []
        self._frames_done = 0
        self._cancel = threading.Event()

    def new_turn(self) -> None:
        self._texts = []
        self._frames_done = 0

    def interrupt(self) -> None:
        """The user paused: the partial in progress, if any, stops before its decoding
        (the final transcript is next on the same thread and should not wait for it)."""
        self._cancel.set()

    @property
    def latest(self) -> str:
        """The latest non-empty partial of this turn ("" before the first)."""
        return self._texts[-1] if self._texts else ""

    @property
    def committed(self) -> str:
        """Words the last two partials agree on, less the last one (LocalAgreement-2)."""
        if len(self._texts) < 2:
            return ""
        return committed_prefix(self._texts[-2], self._texts[-1])

    async def run(
        self,
        turn: int,
        *,
        audio: Callable[[], list[FloatAudio]],
        in_turn: Callable[[], bool],
        speaking: Callable[[], bool],
    ) -> None:
        """Until ``in_turn()`` is false; a partial is taken only while ``speaking()`` (not
        once the user paused: the final and the reply need the CPU then)."""
        asr, worker = self._eng.asr, self._eng.asr_worker
        while in_turn():
            await asyncio.sleep(self._interval_s)
            frames = audio()
            if not in_turn() or not speaking() or len(frames) <= self._frames_done:
                continue
            self._frames_done = len(frames)
            samples = np.concatenate(frames)
            t0 = time.monotonic()
            cancel = self._cancel = threading.Event()
            text = (await worker.run(
                lambda a=samples, c=cancel: asr.transcribe(a, final=False, cancel=c))).text
            if not in_turn():
                return
            if cancel.is_set() and not text:
                continue  # interrupted by a pause before it decoded anything
            ms = round((time.monotonic() - t0) * 1000, 1)
            self._emit(_partial_event(turn, text, ms))
            if text:
                self._texts.append(text)
                if speaking():
                    await self._prefill(text)

    async def _prefill(self, text: str) -> None:
        """Warm the LLM's cache with the words so far, so the reply prefills only the tail."""
        scorer = self._scorer
        if scorer is not None:
            # The prompt is built on the LLM's thread too: counting its tokens is a round
            # trip to a card, which must not block the event loop.
            await self._eng.llm_worker.run(lambda: scorer.prefill(self._prompt(text)))


def _partial_event(turn: int, text: str, ms: float) -> Callable[[float, float], Event]:
    return lambda t, s: TranscriptPartial(t, s, turn, text, ms)
