"""Load the real engines named by a Config."""

from __future__ import annotations

import logging
import os

from voicebox.config import Config
from voicebox.engines.protocols import AsrEngine, LlmEngine, TurnModel, VadEngine
from voicebox.models.locate import packaged_path
from voicebox.runtime.priority import new_threads_lowered
from voicebox.runtime.reply import Engines
from voicebox.runtime.workers import EngineWorker

_LOGGER = logging.getLogger(__name__)


def tts_threads(config: Config) -> int:
    """The configured TTS threads, or two when this process may run on two cores or more."""
    if config.tts_threads is not None:
        return config.tts_threads
    from voicebox.engines.llama_llm import usable_cores

    return min(2, usable_cores())


def load_vad(config: Config) -> VadEngine:
    from voicebox.engines.silero_vad import SileroVadEngine

    return SileroVadEngine(config.models.vad or packaged_path("vad"))


def load_llm(config: Config) -> LlmEngine:
    llm = config.llm
    if llm.engine == "llama":
        from voicebox.engines.llama_llm import LlamaEngine

        return LlamaEngine(
            config.models.llm or packaged_path("llm"),
            context_tokens=llm.context_tokens, threads=llm.threads,
            burst_threads=llm.burst_threads, requantize=requantize_target(config),
        )
    from voicebox.card.factory import build_card_engine

    return build_card_engine(llm.engine, llm.profile, llm.device, stand_in=config.models.llm,
                             requantize=requantize_target(config),
                             burst_threads=llm.burst_threads)


def requantize_target(config: Config) -> str | None:
    """``[llm] requantize`` as the LLM engines take it (None: load the file as it is)."""
    return None if config.llm.requantize == "off" else config.llm.requantize


def build_asr(config: Config) -> AsrEngine:
    """The configured ASR engine (windowed Whisper, or faster-whisper's whole window)."""
    asr_dir = config.models.asr or packaged_path("asr")
    if config.asr_mode == "whole":
        from voicebox.engines.whole_asr import WholeUtteranceAsrEngine

        return WholeUtteranceAsrEngine(asr_dir, threads=config.asr_threads)
    from voicebox.engines.whisper_asr import WhisperAsrEngine

    return WhisperAsrEngine(asr_dir, threads=config.asr_threads,
                            final_beam=config.asr_final_beam)


def load_engines(config: Config) -> tuple[VadEngine, Engines]:
    """The VAD and the reply engines, each with its worker thread."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from voicebox.engines.piper_tts import PiperTtsEngine

    vad = load_vad(config)
    nice = config.inference_nice or 0
    with new_threads_lowered(nice):  # the pools CTranslate2 and onnxruntime start
        asr = build_asr(config)
        tts = PiperTtsEngine(config.models.tts or packaged_path("tts"),
                             threads=tts_threads(config), chunk_frames=config.tts_chunk_frames)
        turn_model: TurnModel | None = None
        if config.turn.semantic and config.turn.audio_model:
            from voicebox.engines.smart_turn import SmartTurnEngine

            turn_model = SmartTurnEngine(config.models.turn or packaged_path("turn"))
        llm = load_llm(config)
    engines = Engines(
        vad_worker=EngineWorker("vad"),  # real time, like the audio: not niced
        asr=asr, asr_worker=EngineWorker("asr", nice=nice),
        llm=llm, llm_worker=EngineWorker("llm", nice=nice),
        tts=tts, tts_worker=EngineWorker("tts", nice=nice),
        turn_model=turn_model,
        # The audio turn model has a thread of its own: it runs on the second core while
        # the final transcript is decoded, so the end-of-turn score waits only for the
        # slower of the two (the LLM and TTS are idle at that moment).
        turn_worker=EngineWorker("turn", nice=nice) if turn_model is not None else None,
    )
    return vad, engines


CLOSE_WAIT_S = 10.0
"""How long closing waits for the LLM thread to finish the call it is in."""


def close_engines(engines: Engines) -> None:
    """Close the LLM on its own thread, after the call it may still be in (a decode for
    a cancelled reply or a partial): freeing llama.cpp's context under a running decode,
    or closing a card session beside an in-flight request, would crash or garble it."""
    try:
        engines.llm_worker.call(engines.llm.close, timeout_s=CLOSE_WAIT_S)
    except TimeoutError:
        _LOGGER.warning("the LLM was still busy after %.0f s; exiting without closing it",
                        CLOSE_WAIT_S)
    for worker in (engines.vad_worker, engines.asr_worker, engines.llm_worker, engines.tts_worker,
                   engines.turn_worker):
        if worker is not None:
            worker.close()


def warm_up(vad: VadEngine, engines: Engines, system_prompt: str) -> None:
    """Throw-away calls of the sizes a real turn makes, each on its engine's own thread.

    First calls pay for lazy allocations, page faults of memory-mapped weights, kernel
    selection and per-thread state (the first LLM call here can take seconds), and a new
    input size pays again: so the ASR hears a real sentence (spoken by the TTS) at the
    partial and final window sizes, the LLM prefills and generates a few dozen tokens and
    the TTS speaks a first clause and a sentence. The system prompt stays in the LLM's KV
    cache, so the first turn prefills only its own words.
    """
    import threading

    from voicebox.audio.resample import resample
    from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, ChatMessage, EndOfTurnScorer

    tts, asr, llm = engines.tts, engines.asr, engines.llm
    sentence = "Warming up: this sentence says a dozen words or so, then it stops."
    speech = engines.tts_worker.call(tts.synthesize, sentence)
    engines.tts_worker.call(tts.synthesize, "Sure, I can")
    speech = resample(speech, tts.sample_rate_hz, ASR_SAMPLE_RATE_HZ)
    step = vad.frame_samples
    engines.vad_worker.call(lambda: [vad.probability(speech[i : i + step])
                                     for i in range(0, speech.shape[0] - step + 1, step)])
    vad.reset()
    third = speech.shape[0] // 3
    engines.asr_worker.call(lambda: asr.transcribe(speech[:third], final=False))
    engines.asr_worker.call(lambda: asr.transcribe(speech, final=False))
    engines.asr_worker.call(lambda: asr.transcribe(speech, final=True))
    if engines.turn_model is not None and engines.turn_worker is not None:
        engines.turn_worker.call(engines.turn_model.probability, speech)
    messages = [ChatMessage("system", system_prompt), ChatMessage("user", sentence)]

    def reply() -> None:
        if isinstance(llm, EndOfTurnScorer):
            llm.prefill([messages[0], ChatMessage("user", sentence[:30])])
            llm.end_of_turn_probability(messages)
        for _ in llm.stream(messages, max_tokens=8, cancel=threading.Event()):
            pass

    engines.llm_worker.call(reply)
