"""One reply: final transcript, LLM tokens, clauses, speech; held until the turn is confirmed."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from voicebox.audio.ring import PlaybackBuffer
from voicebox.engines.protocols import (
    AsrEngine,
    ChunkedTts,
    EndOfTurnScorer,
    FloatAudio,
    LlmEngine,
    TtsEngine,
    TurnModel,
)
from voicebox.events import (
    Event,
    LlmFirstToken,
    ReplyText,
    TranscriptFinal,
    TtsFirstAudio,
)
from voicebox.runtime.clause_audio import ClauseAudio
from voicebox.runtime.clauses import ClauseSplitter, clean
from voicebox.runtime.intents import IntentMatch, IntentMatcher
from voicebox.runtime.memory import Conversation
from voicebox.runtime.workers import EngineWorker


@dataclass(slots=True)
class Engines:
    """The engines a pipeline runs (ASR, LLM, TTS, the optional audio turn model) and
    their worker threads, the VAD's included."""

    vad_worker: EngineWorker
    asr: AsrEngine
    asr_worker: EngineWorker
    llm: LlmEngine
    llm_worker: EngineWorker
    tts: TtsEngine
    tts_worker: EngineWorker
    turn_model: TurnModel | None = None
    turn_worker: EngineWorker | None = None


class Reply:
    """Produces the reply to one user turn.

    Audio is kept back while ``released`` is false (the turn is not yet confirmed);
    ``release`` sends what is ready to the speaker and lets the rest follow.
    """

    def __init__(
        self,
        *,
        turn: int,
        audio: FloatAudio,
        committed: str = "",
        draft: str = "",
        engines: Engines,
        conversation: Conversation,
        playback: PlaybackBuffer,
        device_rate_hz: int,
        max_tokens: int,
        stream_tts: bool = True,
        score_end_of_turn: bool = False,
        on_scored: Callable[[Reply], None] | None = None,
        intents: IntentMatcher | None = None,
        emit: Callable[[Callable[[float, float], Event]], None],
    ) -> None:
        self.turn = turn
        self.user_text = ""
        self.transcribed = False
        """The final transcript is in (``user_text``, possibly empty)."""
        self.released = False
        self.generating = True
        self.pushed_samples = 0
        self.clauses: list[tuple[str, int]] = []
        self.tokens = 0
        self.started_playing = False
        self._audio = audio
        self._committed = committed
        self._draft = draft
        self._engines = engines
        self._conversation = conversation
        self._playback = playback
        self._rate = device_rate_hz
        self._max_tokens = max_tokens
        self._stream_tts = stream_tts
        self.scores_llm = score_end_of_turn and isinstance(engines.llm, EndOfTurnScorer)
        """The LLM will score the end of turn (the pipeline waits for it)."""
        self.scored = False
        """The pipeline has combined the end-of-turn signals for this reply."""
        self._on_scored = on_scored
        self.eot_probability: float | None = None
        """The LLM's end-of-turn probability, once scored (None: not scored)."""
        self.audio_eot_probability: float | None = None
        """The audio turn model's probability, once scored (set by the pipeline)."""
        self._intents = intents
        self.intent: IntentMatch | None = None
        """The known command the final transcript is a whole sentence of, if any (then the
        LLM does not score the end of turn, unless the words could go on)."""
        self.intent_announced = False
        """The pipeline has emitted ``IntentRecognized`` for it."""
        self._emit = emit
        self._held: list[FloatAudio] = []
        self._cancel = threading.Event()
        self._llm_go = threading.Event()
        """Cleared while the first clause is synthesized: the LLM waits, so the TTS has
        both cores for the audio the user is waiting for (the next clause has the whole
        first clause's playing time to come)."""
        self._llm_go.set()
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._run())

    def release(self) -> None:
        """The turn is confirmed: play what is ready, and the rest as it comes."""
        self.released = True
        for chunk in self._held:
            self._push(chunk)
        self._held.clear()

    def cancel(self) -> None:
        """Stop generation and synthesis (the worker threads stop at their next step)."""
        self._cancel.set()
        self._llm_go.set()
        self.task.cancel()

    @property
    def text(self) -> str:
        return " ".join(text for text, _ in self.clauses)

    def heard_text(self, played_samples: int) -> str:
        """The words the user heard, given how many reply samples reached the speaker."""
        heard: list[str] = []
        left = played_samples
        for text, samples in self.clauses:
            if left >= samples:
                heard.append(text)
                left -= samples
                continue
            words = text.split()
            n = int(len(words) * left / samples) if samples else 0
            if n:
                heard.append(" ".join(words[:n]) + "...")
            break
        return " ".join(heard)

    async def _run(self) -> None:
        eng = self._engines
        t0 = time.monotonic()
        transcript = await eng.asr_worker.run(self._transcribe)
        self.user_text = transcript
        self.transcribed = True
        self._emit(lambda t, s: TranscriptFinal(t, s, self.turn, transcript, _ms(t0)))
        if not transcript:
            self.generating = False
            return
        if self._intents is not None:
            self.intent = await eng.asr_worker.run(self._intents.match, transcript)
            if self.intent is not None and not self.intent.open:
                self.scores_llm = False
        response = self.intent.response if self.intent is not None else None
        messages = []
        if self.scores_llm or response is None:
            # On the LLM's thread: trimming counts tokens, which on a card is a round trip
            # that must neither block the event loop nor cross a stream on the same link.
            messages = await eng.llm_worker.run(self._conversation.prompt, transcript)
        if self.scores_llm:
            llm = eng.llm
            assert isinstance(llm, EndOfTurnScorer)
            self.eot_probability = await eng.llm_worker.run(llm.end_of_turn_probability, messages)
        if self._on_scored is not None:
            self._on_scored(self)
        if response is not None:  # the intents file says what to answer: no LLM reply
            await self._speak(response)
            self.generating = False
            return
        splitter = ClauseSplitter()
        whole: list[str] = []
        t1 = time.monotonic()
        pieces = eng.llm_worker.stream(
            lambda: eng.llm.stream(messages, max_tokens=self._max_tokens, cancel=self._cancel),
            self._cancel,
            self._llm_go,
        )
        async for piece in pieces:
            if self.tokens == 0:
                self._emit(lambda t, s: LlmFirstToken(t, s, self.turn, _ms(t1)))
            self.tokens += 1
            if not self._stream_tts:
                whole.append(piece)
                continue
            for clause in splitter.feed(piece):
                if not self.clauses:
                    self._llm_go.clear()
                try:
                    await self._speak(clause)
                finally:
                    self._llm_go.set()
        if whole:
            text = clean("".join(whole))
            if text:
                await self._speak(text, whole=True)
        for clause in splitter.flush():
            await self._speak(clause)
        self.generating = False

    def _transcribe(self) -> str:
        return self._engines.asr.transcribe(
            self._audio, final=True, committed=self._committed, draft=self._draft).text

    async def _speak(self, clause: str, *, whole: bool = False) -> None:
        """Synthesize ``clause`` and play it (or hold it) piece by piece as it is decoded;
        ``whole``: in one piece (the naive pipeline's TTS)."""
        eng = self._engines
        self._emit(lambda t, s: ReplyText(t, s, self.turn, clause))
        t0 = time.monotonic()
        previous = self.clauses[-1][0] if self.clauses else None
        fitter = ClauseAudio(clause, previous, eng.tts.sample_rate_hz, self._rate)
        index = len(self.clauses)
        self.clauses.append((clause, 0))
        tts = eng.tts
        if whole or not isinstance(tts, ChunkedTts):
            audio = await eng.tts_worker.run(tts.synthesize, clause)
            self._play(fitter.feed(audio), index, t0)
        else:
            # Its own stop event, set when the stream closes (at its end, or at once when
            # the reply is cancelled): the decoder stops after the piece it is on.
            stream = eng.tts_worker.stream(lambda: tts.synthesize_chunks(clause),
                                           threading.Event())
            async with contextlib.aclosing(stream) as pieces:
                async for piece in pieces:
                    self._play(fitter.feed(piece), index, t0)
        self._play(fitter.finish(), index, t0)

    def _play(self, audio: FloatAudio, index: int, t0: float) -> None:
        if not audio.shape[0]:
            return
        if index == 0 and self.clauses[0][1] == 0:
            self._emit(lambda t, s: TtsFirstAudio(t, s, self.turn, _ms(t0)))
        text, samples = self.clauses[index]
        self.clauses[index] = (text, samples + audio.shape[0])
        if self.released:
            self._push(audio)
        else:
            self._held.append(audio)

    def _push(self, audio: FloatAudio) -> None:
        self._playback.push(audio, self.turn)
        self.pushed_samples += audio.shape[0]


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)
