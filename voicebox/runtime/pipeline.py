"""The voice pipeline: device -> VAD -> turn detection -> ASR -> LLM -> TTS -> device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from voicebox.audio.resample import StreamResampler
from voicebox.audio.ring import DuplexCore
from voicebox.config import Config
from voicebox.engines.protocols import (
    ASR_SAMPLE_RATE_HZ,
    FloatAudio,
    VadEngine,
)
from voicebox.events import (
    AudioHealth,
    EndOfTurnScored,
    Event,
    EventLog,
    IntentRecognized,
    Interrupted,
    PlaybackStarted,
    ReplyCancelled,
    ReplyDone,
    SpeechEnded,
    SpeechResumed,
    SpeechStarted,
    TurnEnded,
)
from voicebox.runtime.bargein import EnergyGate
from voicebox.runtime.intents import load_intents
from voicebox.runtime.memory import Conversation
from voicebox.runtime.partials import PartialTranscriber
from voicebox.runtime.reply import Engines, Reply
from voicebox.runtime.turn_audio import TurnAudio
from voicebox.runtime.turns import (
    Decision,
    TurnDetector,
    end_of_turn_score,
    frame_level,
    required_silence_ms,
)

_LOGGER = logging.getLogger(__name__)


class DuplexDevice(Protocol):
    """A sound card or the virtual device: runs ``core`` block by block."""

    core: DuplexCore
    sample_rate_hz: int

    async def run(self, on_block: Callable[[], None], stop: asyncio.Event) -> None: ...


class Pipeline:
    """One conversation on one device, in one asyncio loop."""

    def __init__(
        self,
        *,
        config: Config,
        device: DuplexDevice,
        vad: VadEngine,
        engines: Engines,
        log: EventLog,
        stop_when_idle: Callable[[], bool] | None = None,
    ) -> None:
        self._cfg = config
        self._device = device
        self._core = device.core
        self._vad = vad
        self._eng = engines
        self._log = log
        self._stop_when_idle = stop_when_idle
        self._frame = vad.frame_samples
        self._frame_s = self._frame / ASR_SAMPLE_RATE_HZ
        self._detector = TurnDetector(config.turn, self._frame_s)
        self._resampler = StreamResampler(device.sample_rate_hz, ASR_SAMPLE_RATE_HZ)
        self._pending = np.zeros(0, dtype=np.float32)
        # Each frame with the stream time at its end, stamped as it is cut: a frame
        # dropped on overload leaves a gap in the audio, not a shift in the turn clock.
        self._frames: asyncio.Queue[tuple[FloatAudio, float]] = asyncio.Queue(maxsize=256)
        self._frames_cut = 0
        self._dropped_frames = 0
        self._audio = TurnAudio(frame_s=self._frame_s, pre_roll_ms=config.turn.pre_roll_ms,
                                min_speech_ms=config.turn.min_speech_ms,
                                end_threshold=config.turn.end_threshold)
        self._turn = -1
        self._reply: Reply | None = None
        self._partial_task: asyncio.Task[None] | None = None
        self.conversation = Conversation(
            config.llm.system_prompt, engines.llm.count_tokens,
            engines.llm.context_tokens, config.llm.max_reply_tokens,
        )
        self._partials = PartialTranscriber(
            engines, interval_s=config.turn.partial_interval_ms / 1000,
            prefill=config.turn.semantic, prompt=self.conversation.prompt, emit=self._emit,
        )
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._required_silence_ms = float(config.turn.end_of_turn_ms)
        self._gate = EnergyGate() if config.turn.fast_barge_in else None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._turn_end_s: dict[int, float] = {}
        self._intents = load_intents(config)

    # -- events -----------------------------------------------------------------

    def _emit(self, make: Callable[[float, float], Event]) -> None:
        self._log.emit(make(time.monotonic(), round(self._core.stream_s, 3)))

    # -- audio side (called once per device block, in the loop) ------------------

    def _on_block(self) -> None:
        _pos, samples = self._core.input.read_new()
        if samples.size:
            block = self._resampler.process(samples)
            self._gate_block(block)
            self._pending = np.concatenate([self._pending, block]) if self._pending.size else block
            while self._pending.shape[0] >= self._frame:
                frame, self._pending = self._pending[: self._frame], self._pending[self._frame :]
                self._frames_cut += 1
                try:
                    self._frames.put_nowait((frame.copy(), self._frames_cut * self._frame_s))
                except asyncio.QueueFull:
                    self._dropped_frames += 1
        self._watch_playback()
        if self._stop_when_idle is not None and self._idle() and self._stop_when_idle():
            self._stop.set()

    def _gate_block(self, block: FloatAudio) -> None:
        """Pause a playing reply as soon as the user seems to start speaking."""
        if self._gate is not None:
            reply, pb = self._reply, self._core.playback
            playing = reply is not None and reply.released and not pb.idle
            self._gate.on_block(block, pb, playing=playing, in_turn=self._detector.in_turn,
                                now_s=self._core.stream_s)

    def _release_gate(self) -> None:
        self._core.playback.paused = False
        if self._gate is not None:
            self._gate.ducked_at = None

    def _idle(self) -> bool:
        return (
            not self._detector.in_turn and self._reply is None and self._frames.empty()
            and self._core.playback.idle
        )

    def _watch_playback(self) -> None:
        reply, pb = self._reply, self._core.playback
        if reply is None or not reply.released:
            return
        if pb.playing_turn == reply.turn and pb.first_sample_pos >= 0 and not reply.started_playing:
            reply.started_playing = True
            first_s = pb.first_sample_pos / self._core.sample_rate_hz
            latency = (first_s - self._turn_end_s.get(reply.turn, 0.0)) * 1000
            self._emit(lambda t, s: PlaybackStarted(t, round(first_s, 3), reply.turn,
                                                    round(latency, 1)))
        played = pb.played if pb.playing_turn == reply.turn else 0
        if not reply.generating and played >= reply.pushed_samples and reply.task.done():
            self._reply = None
            if reply.user_text:  # a turn heard as nothing had no reply and joins no history
                self._emit(lambda t, s: ReplyDone(t, s, reply.turn, reply.text, reply.tokens))
                self.conversation.add(reply.user_text, reply.text)

    # -- turn handling -------------------------------------------------------------

    async def _vad_loop(self) -> None:
        vad_worker = self._eng.vad_worker
        while True:
            frame, end_s = await self._frames.get()
            prob = await vad_worker.run(self._vad.probability, frame)
            self._audio.add(frame, prob, in_turn=self._detector.in_turn)
            decision = self._detector.update(prob, end_s, frame_level(frame))
            if decision is not None:
                self._decide(decision)
            self._check_semantic_end()

    def _decide(self, decision: Decision) -> None:
        turn = self._detector.turn
        if decision is Decision.START:
            if self._continues_last_turn():
                self._resume_last_turn()
                return
            if self._reply is not None:
                self._barge_in()
            self._turn += 1
            n = self._turn
            self._audio.start()
            self._partials.new_turn()
            self._emit(lambda t, s: SpeechStarted(t, round(turn.speech_start_s, 3), n))
            self._start_partials(n)
        elif decision is Decision.PAUSE:
            self._start_reply()
        elif decision is Decision.RESUME:
            n = self._turn
            self._emit(lambda t, s: SpeechResumed(t, s, n))
            self._drop_reply("user resumed")
        elif decision is Decision.END:
            self._end_turn()

    async def _score_audio(self, reply: Reply, audio: FloatAudio) -> None:
        model, worker = self._eng.turn_model, self._eng.turn_worker
        assert model is not None and worker is not None
        reply.audio_eot_probability = await worker.run(model.probability, audio)
        self._scored(reply)

    def _scored(self, reply: Reply) -> None:
        """Once every end-of-turn signal is in, set the silence that confirms the turn."""
        if reply is self._reply and reply.released:
            self._announce_intent(reply)  # the turn ended before its words were read
        if reply is not self._reply or reply.scored:
            return
        if reply.transcribed and not reply.user_text:
            return  # nothing was understood: only the full silence ends this turn
        llm_p, audio_p = reply.eot_probability, reply.audio_eot_probability
        intent = reply.intent
        waiting = (llm_p is None and reply.scores_llm) or (
            audio_p is None and self._eng.turn_model is not None)
        if not reply.transcribed or ((intent is None or intent.open) and waiting):
            return
        reply.scored = True
        cfg = self._cfg.turn
        if intent is not None and not intent.open:  # a known command, finished
            score: float | None = 1.0
            required = min(self._cfg.intents.silence_ms, cfg.end_of_turn_ms)
        else:
            score = end_of_turn_score(cfg, llm_p, audio_p)
            required = required_silence_ms(cfg, score)
            if intent is not None:  # a known command that could go on
                required = min(required, self._cfg.intents.open_silence_ms)
        self._required_silence_ms = float(required)
        n = reply.turn
        self._emit(lambda t, s: EndOfTurnScored(
            t, s, n, round(score or 0.0, 4), None if llm_p is None else round(llm_p, 4),
            None if audio_p is None else round(audio_p, 4), required,
            None if intent is None else intent.name))
        self._check_semantic_end()

    def _check_semantic_end(self) -> None:
        reply = self._reply
        if reply is None or reply.released or not reply.scored or not self._detector.in_turn:
            return
        if self._detector.silence_ms >= self._required_silence_ms and self._detector.end_now():
            self._end_turn("semantic" if reply.intent is None else "intent")

    def _end_turn(self, reason: str = "silence") -> None:
        turn, n = self._detector.turn, self._turn
        self._turn_end_s[n] = turn.speech_end_s
        self._emit(lambda t, s: SpeechEnded(t, s, n, round(turn.speech_end_s, 3)))
        self._emit(lambda t, s: TurnEnded(t, s, n, round(turn.speech_end_s, 3),
                                          round(turn.silence_s * 1000, 1), reason))
        if self._reply is None:
            self._start_reply()
        reply = self._reply
        assert reply is not None
        reply.release()
        self._announce_intent(reply)
        self._audio.end()

    def _announce_intent(self, reply: Reply) -> None:
        """``IntentRecognized`` once for a confirmed turn whose words are a known command."""
        intent = reply.intent
        if intent is None or reply.intent_announced:
            return
        reply.intent_announced = True
        self._emit(lambda t, s: IntentRecognized(t, s, reply.turn, intent.name,
                                                 dict(intent.slots), intent.text))

    def _continues_last_turn(self) -> bool:
        """Speech soon after a turn ended, while the reply had not yet been heard or had
        only just begun: the user had only paused, so the turn goes on and the reply is
        dropped (a false start, as when two people start at once and one yields)."""
        reply = self._reply
        if reply is None or not reply.released or reply.turn != self._turn:
            return False
        gap_ms = self._audio.gap_ms
        pb = self._core.playback
        heard_ms = (pb.played / self._core.sample_rate_hz * 1000
                    if reply.started_playing and pb.playing_turn == reply.turn else 0.0)
        cfg = self._cfg.turn
        return gap_ms <= cfg.continuation_ms and heard_ms <= cfg.false_start_ms

    def _resume_last_turn(self) -> None:
        self._core.playback.clear()
        self._release_gate()
        self._drop_reply("user continued")
        n = self._turn
        self._audio.resume()
        self._turn_end_s.pop(n, None)
        self._emit(lambda t, s: SpeechResumed(t, s, n))
        self._start_partials(n)

    def _start_reply(self) -> None:
        self._partials.interrupt()
        self._drop_reply("superseded")
        audio = self._audio.samples()
        tail = self._cfg.asr_tail
        reply = Reply(
            turn=self._turn, audio=audio, committed=self._partials.committed if tail else "",
            draft=self._partials.latest if tail else "", engines=self._eng,
            conversation=self.conversation,
            playback=self._core.playback, device_rate_hz=self._core.sample_rate_hz,
            max_tokens=self._cfg.llm.max_reply_tokens, stream_tts=self._cfg.llm.stream_tts,
            score_end_of_turn=self._cfg.turn.semantic, on_scored=self._scored,
            intents=self._intents, emit=self._emit,
        )
        reply.task.add_done_callback(self._task_finished)
        self._reply = reply
        self._required_silence_ms = float(self._cfg.turn.end_of_turn_ms)
        if self._cfg.turn.semantic and self._eng.turn_model is not None and audio.size:
            task = asyncio.get_running_loop().create_task(self._score_audio(reply, audio))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
            task.add_done_callback(self._task_finished)

    def _task_finished(self, task: asyncio.Task[None]) -> None:
        """An engine that failed in a reply, a partial or a score stops the pipeline
        with its error (a partial that stopped quietly would leave every turn waiting)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._error = exc
            self._stop.set()

    def _drop_reply(self, reason: str) -> None:
        reply = self._reply
        if reply is None:
            return
        reply.cancel()
        self._reply = None
        self._emit(lambda t, s: ReplyCancelled(t, s, reply.turn, reason))

    def _barge_in(self) -> None:
        reply = self._reply
        assert reply is not None
        pb = self._core.playback
        played = pb.played if pb.playing_turn == reply.turn else 0  # before the clear
        pb.clear()
        self._release_gate()
        reply.cancel()
        self._reply = None
        heard = reply.heard_text(played)
        self._emit(lambda t, s: Interrupted(t, s, reply.turn, heard))
        if reply.user_text:
            self.conversation.add(reply.user_text, heard)

    def _start_partials(self, turn: int) -> None:
        if self._partial_task is not None:
            # A quick continuation: the last run may still be asleep and would wake to a
            # turn that is in progress again, beside this one.
            self._partial_task.cancel()

        def in_turn() -> bool:
            return self._turn == turn and self._detector.in_turn

        def speaking() -> bool:
            return in_turn() and self._reply is None and self._detector.turn.silence_s == 0

        self._partial_task = asyncio.get_running_loop().create_task(self._partials.run(
            turn, audio=lambda: self._audio.frames, in_turn=in_turn, speaking=speaking))
        self._partial_task.add_done_callback(self._task_finished)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or, in simulation, until the input is done)."""
        device_stop = self._stop
        tasks = [
            asyncio.create_task(self._device.run(self._on_block, device_stop), name="device"),
            asyncio.create_task(self._vad_loop(), name="vad"),
        ]
        waiters = [asyncio.create_task(device_stop.wait())]
        if stop is not None:
            waiters.append(asyncio.create_task(stop.wait()))
        try:
            done, _ = await asyncio.wait([*tasks, *waiters], return_when=asyncio.FIRST_COMPLETED)
            device_stop.set()
            for task in done:
                if task in tasks and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tasks[0], timeout=1.0)
            if self._error is not None:
                raise self._error
        finally:
            late = int(getattr(self._device, "late_blocks", 0))
            self._emit(lambda t, s: AudioHealth(t, s, self._dropped_frames, self._core.xruns,
                                                late, self._core.input.overruns))
            if self._reply is not None:
                self._reply.cancel()
            if self._partial_task is not None:
                self._partial_task.cancel()
            for side in list(self._side_tasks):
                side.cancel()
            for task in [*tasks, *waiters]:
                task.cancel()
            await asyncio.gather(*tasks, *waiters, return_exceptions=True)
