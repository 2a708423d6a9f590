"""The naive sequential pipeline the bench compares against, built from the main Config."""

from __future__ import annotations

from dataclasses import replace

from voicebox.config import Config

NAIVE_END_MS = 500
"""The naive pipeline's silence endpoint."""


def naive_config(config: Config) -> Config:
    """``configs/naive-sequential.toml`` applied to ``config``: same models and LLM engine.

    500 ms of silence ends a turn (no semantic end-of-turn, nothing prepared earlier),
    faster-whisper's whole-utterance transcription, the whole LLM reply before any TTS.
    """
    turn = replace(config.turn, semantic=False, speculate_after_ms=NAIVE_END_MS,
                   end_of_turn_ms=NAIVE_END_MS)
    return replace(config, turn=turn, asr_mode="whole",
                   llm=replace(config.llm, stream_tts=False))
