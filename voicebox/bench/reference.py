"""The WER reference: faster-whisper's ordinary whole-utterance transcription of each turn."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from voicebox.bench.scenarios import Scenario
from voicebox.config import Config
from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ
from voicebox.errors import VoiceboxError

PAD_S = 0.3
"""Audio kept either side of the labelled speech (the pipeline's pre-roll is the same)."""


@dataclass(frozen=True, slots=True)
class WholeAsrResult:
    """faster-whisper ``transcribe`` output per scenario turn."""

    texts: dict[str, list[str]]
    """Scenario name -> one transcript per labelled turn."""
    wall_s: float
    peak_rss_mb: float


def transcribe_turns(config: Config, chosen: list[Scenario]) -> WholeAsrResult:
    """Transcribe every labelled turn (pauses and noise included) with the same ASR model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from voicebox.engines.whole_asr import WholeUtteranceAsrEngine
    from voicebox.models.locate import packaged_path

    engine = WholeUtteranceAsrEngine(config.models.asr or packaged_path("asr"),
                                     threads=config.asr_threads)
    t0 = time.monotonic()
    texts: dict[str, list[str]] = {}
    for sc in chosen:
        if sc.rate_hz != ASR_SAMPLE_RATE_HZ:
            raise VoiceboxError(f"{sc.name}: expected {ASR_SAMPLE_RATE_HZ} Hz audio")
        out = []
        for turn in sc.turns:
            a = int(max(0.0, turn["speech_start_s"] - PAD_S) * sc.rate_hz)
            b = int((turn["speech_end_s"] + PAD_S) * sc.rate_hz)
            out.append(engine.transcribe(sc.audio[a:b], final=True).text)
        texts[sc.name] = out
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return WholeAsrResult(texts, round(time.monotonic() - t0, 1), round(rss, 1))
