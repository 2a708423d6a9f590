"""Whole-utterance ASR: faster-whisper's ordinary ``transcribe`` (30 s window, beam 5).

The reference the windowed engine is measured against, and the ASR of the naive
sequential pipeline in the bench.
"""

from __future__ import annotations

import threading
from pathlib import Path

from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, FloatAudio, Transcript
from voicebox.errors import ModelError


class WholeUtteranceAsrEngine:
    """faster-whisper ``WhisperModel.transcribe`` with its defaults, English, beam 5."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        from faster_whisper import WhisperModel

        if not (model_dir / "model.bin").is_file():
            raise ModelError(f"ASR model file not found: {model_dir / 'model.bin'}")
        try:
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                       cpu_threads=threads, num_workers=1)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError on bad files
            raise ModelError(f"cannot load ASR model {model_dir}: {exc}") from exc

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
        """The whole utterance in one ordinary pass (``committed``, ``draft`` and ``cancel``
        unused)."""
        segments, _ = self._model.transcribe(audio, language="en", beam_size=5,
                                             initial_prompt=prompt or None)
        text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(text, audio.shape[0] / ASR_SAMPLE_RATE_HZ)
