"""The pipeline with fake engines: turn taking, speculation, barge-in, alignment."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from tests.fakes import (
    EnergyVad,
    FixedAsr,
    ScoringLlm,
    ScriptedLlm,
    ToneTts,
    fake_engines,
    silence,
    speechlike,
)
from voicebox.config import Config, TurnConfig
from voicebox.engines.protocols import Transcript
from voicebox.events import (
    AudioHealth,
    Event,
    EventLog,
    Interrupted,
    PlaybackStarted,
    ReplyCancelled,
    ReplyDone,
    SpeechStarted,
    TranscriptFinal,
    TurnEnded,
)
from voicebox.runtime.session import SimulationResult, simulate

RATE = 16_000


def _run(audio: np.ndarray, *, config: Config | None = None, speed: float = 4.0,
         **engines: object) -> tuple[SimulationResult, object]:
    eng = fake_engines(**engines)  # type: ignore[arg-type]

    async def go() -> SimulationResult:
        return await asyncio.wait_for(
            simulate(audio, RATE, config=config or Config(), vad=EnergyVad(), engines=eng,
                     log=EventLog(), speed=speed),
            timeout=60,
        )

    try:
        return asyncio.run(go()), eng
    finally:
        for w in (eng.vad_worker, eng.asr_worker, eng.llm_worker, eng.tts_worker):
            w.close()


def _names(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def _loud_from(out: np.ndarray, start_s: float) -> float | None:
    idx = np.flatnonzero(np.abs(out[int(start_s * RATE):]) > 0.01)
    return None if idx.size == 0 else start_s + idx[0] / RATE


def test_single_turn_reply_is_time_aligned() -> None:
    audio = np.concatenate([silence(0.5), speechlike(1.0), silence(3.0)])
    result, _ = _run(audio)
    ev = result.events
    names = _names(ev)
    # The reply is prepared speculatively (LLM may start before the turn is confirmed),
    # but nothing plays before the turn ends.
    order = ["SpeechStarted", "TranscriptFinal", "LlmFirstToken", "TtsFirstAudio",
             "PlaybackStarted", "ReplyDone"]
    assert [n for n in names if n in order] == order
    assert names.index("TurnEnded") < names.index("PlaybackStarted")
    assert result.output.shape[0] >= audio.shape[0]
    start = next(e for e in ev if isinstance(e, PlaybackStarted))
    first = _loud_from(result.output, 1.5)
    # The event names the sample where the reply starts in the output WAV.
    assert first is not None and abs(first - start.stream_s) < 0.002
    ended = next(e for e in ev if isinstance(e, TurnEnded))
    assert start.stream_s >= ended.speech_end_s
    assert np.abs(result.output[: int(1.5 * RATE)]).max() == 0.0
    done = next(e for e in ev if isinstance(e, ReplyDone))
    assert done.text == "Sure, the lights are on now. Anything else?"


def test_pause_shorter_than_end_of_turn_cancels_the_speculative_reply() -> None:
    config = Config(turn=TurnConfig(speculate_after_ms=96, end_of_turn_ms=700))
    audio = np.concatenate([silence(0.3), speechlike(0.8), silence(0.45), speechlike(0.8),
                            silence(3.0)])
    result, eng = _run(audio, config=config)
    names = _names(result.events)
    assert "ReplyCancelled" in names and "SpeechResumed" in names
    assert names.count("PlaybackStarted") == 1 and names.count("SpeechStarted") == 1
    # Nothing played before the user's last word plus the end-of-turn silence.
    assert _loud_from(result.output, 0.0) >= 0.3 + 0.8 + 0.45 + 0.8 + 0.6  # type: ignore[operator]
    cancel = next(e for e in result.events if isinstance(e, ReplyCancelled))
    assert cancel.reason == "user resumed"
    # Only the confirmed turn went into the conversation.
    assert len(eng.llm.prompts[-1]) == 2  # type: ignore[attr-defined]


def test_barge_in_stops_playback_and_keeps_only_what_was_heard() -> None:
    llm = ScriptedLlm("One two three four five six. Seven eight nine ten eleven twelve. "
                      "Thirteen fourteen fifteen sixteen.")
    tts = ToneTts(seconds_per_word=0.3)
    audio = np.concatenate([silence(0.3), speechlike(0.8), silence(2.5), speechlike(0.8),
                            silence(4.0)])
    result, eng = _run(audio, llm=llm, tts=tts, asr=FixedAsr("count for me"))
    ev = result.events
    inter = next(e for e in ev if isinstance(e, Interrupted))
    assert inter.turn == 0
    assert inter.heard_text and inter.heard_text != llm.reply
    assert inter.heard_text.startswith("One two")
    barge_at = 0.3 + 0.8 + 2.5
    # Output goes quiet right after the barge-in was detected.
    stop = inter.stream_s + 0.02
    assert np.abs(result.output[int(stop * RATE): int((barge_at + 1.0) * RATE)]).max() == 0.0
    starts = [e for e in ev if isinstance(e, SpeechStarted)]
    assert len(starts) == 2
    # The second prompt holds the first exchange with the heard part only.
    second = eng.llm.prompts[-1]  # type: ignore[attr-defined]
    assert [m.role for m in second] == ["system", "user", "assistant", "user"]
    assert second[2].content == inter.heard_text


def test_silence_only_gives_silence() -> None:
    audio = silence(1.5)
    result, _ = _run(audio)
    assert [type(e).__name__ for e in result.events] == ["AudioHealth"]
    health = result.events[0]
    assert isinstance(health, AudioHealth) and health.dropped_frames == 0
    assert result.output.shape[0] >= audio.shape[0]
    assert np.abs(result.output).max() == 0.0


def test_noise_heard_as_nothing_gets_no_reply() -> None:
    audio = np.concatenate([silence(0.3), speechlike(0.5), silence(1.5)])
    result, eng = _run(audio, asr=FixedAsr(""))
    names = _names(result.events)
    assert "TranscriptFinal" in names and "PlaybackStarted" not in names
    assert eng.llm.prompts == []  # type: ignore[attr-defined]
    finals = [e for e in result.events if isinstance(e, TranscriptFinal)]
    assert all(f.text == "" for f in finals)
    assert "ReplyDone" not in names


def test_a_turn_heard_as_nothing_leaves_no_empty_message_in_the_next_prompt() -> None:
    audio = np.concatenate([silence(0.3), speechlike(0.3), silence(1.5), speechlike(1.5),
                            silence(2.0)])
    result, eng = _run(audio, asr=FixedAsr("hello there", min_s=1.2))
    assert [e.text for e in result.events if isinstance(e, TranscriptFinal)] == ["", "hello there"]
    prompts = eng.llm.prompts  # type: ignore[attr-defined]
    assert len(prompts) == 1
    assert [(m.role, m.content) for m in prompts[0][1:]] == [("user", "hello there")]


def test_semantic_end_confirms_early_and_a_quick_continuation_keeps_the_turn() -> None:
    """A confident end-of-turn score ends the turn after a short silence; speech
    that resumes before any reply audio is heard continues the same turn."""
    config = Config(turn=TurnConfig(silence_curve=((0.5, 400), (0.8, 160)), end_of_turn_ms=1500))
    # First word 40 ms per token: the reply is not ready before the user goes on.
    llm = ScoringLlm(probability=0.9, token_s=0.04)
    audio = np.concatenate([silence(0.3), speechlike(0.8), silence(0.35), speechlike(0.6),
                            silence(3.0)])
    result, eng = _run(audio, config=config, llm=llm)
    ev = result.events
    names = _names(ev)
    ended = [e for e in ev if isinstance(e, TurnEnded)]
    assert ended and all(e.reason == "semantic" for e in ended)
    assert all(e.silence_ms < 400 for e in ended)
    assert names.count("SpeechStarted") == 1
    cancels = [e for e in ev if isinstance(e, ReplyCancelled)]
    assert any(c.reason == "user continued" for c in cancels)
    # Nothing played before the user's last word; one reply after it.
    last_word_end = 0.3 + 0.8 + 0.35 + 0.6
    assert _loud_from(result.output, 0.0) >= last_word_end  # type: ignore[operator]
    assert names.count("PlaybackStarted") == 1
    assert len(eng.llm.prompts[-1]) == 2  # type: ignore[attr-defined]


def test_final_transcript_gets_the_words_the_partials_agree_on() -> None:
    """Two partials that agree settle all but their last word; the final is told so."""
    asr = FixedAsr("turn on the kitchen lights")
    audio = np.concatenate([silence(0.3), speechlike(1.5), silence(2.0)])
    # Partials come every 400 ms of wall time.
    result, _ = _run(audio, asr=asr, speed=1.0, config=Config(asr_tail=True))
    partials = [c for c in asr.calls if not c[1]]
    finals = [k for k, (_, final) in enumerate(asr.calls) if final]
    assert len(partials) >= 2 and finals
    assert asr.committed[finals[-1]] == "turn on the kitchen"
    assert "PlaybackStarted" in _names(result.events)


class SlowPartialAsr(FixedAsr):
    """A partial takes 3 s unless cancelled; records what happened, in order."""

    def __init__(self) -> None:
        super().__init__("turn on the kitchen lights")
        self.log: list[str] = []

    def transcribe(self, audio: np.ndarray, *, final: bool, prompt: str = "",
                   committed: str = "", draft: str = "",
                   cancel: threading.Event | None = None) -> Transcript:
        if final:
            self.log.append("final")
        else:
            self.log.append("partial")
            if cancel is not None and cancel.wait(3.0):
                self.log.append("partial cancelled")
                return Transcript("", audio.shape[0] / RATE)
            self.log.append("partial done")
        return super().transcribe(audio, final=final, prompt=prompt, committed=committed,
                                  draft=draft)


def test_a_pause_interrupts_the_partial_in_progress() -> None:
    # The final runs on the partials' thread: a partial started just before the user
    # paused would hold it up until it finished. The pause cancels it instead.
    asr = SlowPartialAsr()
    audio = np.concatenate([silence(0.3), speechlike(1.5), silence(2.0)])
    result, _ = _run(audio, asr=asr, speed=1.0)
    assert asr.log[:3] == ["partial", "partial cancelled", "final"]
    assert "partial done" not in asr.log
    assert "PlaybackStarted" in _names(result.events)


def test_a_single_partial_commits_nothing() -> None:
    asr = FixedAsr("lights")
    audio = np.concatenate([silence(0.3), speechlike(0.5), silence(2.0)])
    _run(audio, asr=asr, config=Config(asr_tail=True))
    finals = [k for k, (_, final) in enumerate(asr.calls) if final]
    assert finals and all(asr.committed[k] == "" for k in finals)


def test_tail_finals_are_off_by_default() -> None:
    asr = FixedAsr("turn on the kitchen lights")
    audio = np.concatenate([silence(0.3), speechlike(1.5), silence(2.0)])
    _run(audio, asr=asr, speed=1.0)
    assert [c for c in asr.committed if c] == []


def test_token_counting_stays_off_the_event_loop() -> None:
    """On a card, counting tokens is a round trip: never on the event loop's thread."""
    audio = np.concatenate([silence(0.3), speechlike(1.5), silence(2.0)])
    result, eng = _run(audio, speed=1.0)
    assert "PlaybackStarted" in _names(result.events)
    counted = eng.llm.count_threads  # type: ignore[attr-defined]
    assert counted and threading.main_thread().name not in counted
