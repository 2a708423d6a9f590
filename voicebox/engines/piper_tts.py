"""Piper TTS engine: one clause in, mono float32 audio out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voicebox.engines.onnx_inputs import require_inputs
from voicebox.engines.protocols import FloatAudio
from voicebox.errors import ModelError
from voicebox.models.locate import install_hint


class PiperTtsEngine:
    """A Piper voice (.onnx with its .onnx.json beside it)."""

    def __init__(
        self,
        model_path: Path,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        threads: int = 1,
    ) -> None:
        """``length_scale``, ``noise_scale`` and ``noise_w_scale`` are Piper's own
        settings (None: the voice's). Piper draws fresh noise for every call, so the same
        text never sounds quite the same twice; both noise scales at 0 make it repeatable
        (input speech for tests and benches)."""
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        config_path = Path(f"{model_path}.json")
        for path in (model_path, config_path):
            if not path.is_file():
                raise ModelError(f"TTS voice file not found: {path}; {install_hint('tts')}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            # Piper's own loader leaves onnxruntime at one spinning thread per core,
            # which starves the other engines on a small board: one quiet thread here.
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # Every clause has another length; an arena would keep the largest buffers
            # of each (+200 MB over a conversation). Clause-sized runs lose nothing.
            opts.enable_cpu_mem_arena = False
            # Nor a memory plan per input length: it caches one for every clause length
            # ever seen (RSS kept growing, 291 -> 358 MB over 60 clauses; 307 flat
            # without, for ~8% more synthesis time).
            opts.enable_mem_pattern = False
            opts.log_severity_level = 3
            session = onnxruntime.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            self._voice = PiperVoice(config=PiperConfig.from_dict(config), session=session)
        except Exception as exc:  # corrupt JSON or ONNX: say which file
            raise ModelError(f"cannot load TTS voice {model_path}: {exc}") from exc
        require_inputs(session, {"input", "input_lengths", "scales"}, "Piper voice", model_path)
        self._syn = SynthesisConfig(
            length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale
        )
        self._rate = int(self._voice.config.sample_rate)

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    def synthesize(self, text: str) -> FloatAudio:
        chunks = [c.audio_float_array for c in self._voice.synthesize(text, syn_config=self._syn)]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)
