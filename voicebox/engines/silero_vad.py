"""Silero VAD (v6 ONNX) run by onnxruntime: one speech probability per 32 ms frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voicebox.engines.onnx_inputs import require_inputs
from voicebox.engines.protocols import FloatAudio
from voicebox.errors import ModelError
from voicebox.models.locate import install_hint

_CONTEXT_SAMPLES = 64
_FRAME_SAMPLES = 512


class SileroVadEngine:
    """Streaming silero VAD: keeps the LSTM state and 64 samples of context between frames."""

    frame_samples = _FRAME_SAMPLES

    def __init__(self, model_path: Path) -> None:
        import onnxruntime

        if not model_path.is_file():
            raise ModelError(f"VAD model file not found: {model_path}; {install_hint('vad')}")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        try:
            self._session = onnxruntime.InferenceSession(
                str(model_path), providers=["CPUExecutionProvider"], sess_options=opts
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load VAD model {model_path}: {exc}") from exc
        require_inputs(self._session, {"input", "h", "c"}, "silero VAD model (v5 or v6)",
                       model_path)
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)

    def probability(self, frame: FloatAudio) -> float:
        if frame.shape != (_FRAME_SAMPLES,):
            raise ValueError(f"silero VAD needs {_FRAME_SAMPLES}-sample frames")
        x = np.concatenate([self._context, frame]).astype(np.float32)[None, :]
        prob, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = frame[-_CONTEXT_SAMPLES:].astype(np.float32)
        return float(np.asarray(prob).reshape(-1)[0])
