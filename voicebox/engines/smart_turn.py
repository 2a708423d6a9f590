"""Audio end-of-turn model: Smart Turn v3 (pipecat, BSD-2) as ONNX on onnxruntime.

It hears the prosody of the last 8 s of the turn (falling pitch, final lengthening)
and says whether the speaker sounds finished. The model and its feature code ship in
the pipecat-ai wheel, installed without its dependencies; the feature module is
loaded from its file (it needs only numpy), the pipecat package is never imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

from voicebox.engines.onnx_inputs import require_inputs
from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, FloatAudio
from voicebox.errors import ModelError
from voicebox.models.locate import install_hint

_WINDOW_S = 8


class SmartTurnEngine:
    """Probability that the turn audio ends a finished turn."""

    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        import onnxruntime

        features = model_path.parent.parent / "_whisper_features.py"
        if not model_path.is_file():
            raise ModelError(f"turn model file not found: {model_path}; {install_hint('turn')}")
        if not features.is_file():  # pipecat's feature code, two folders up from its model
            raise ModelError(f"turn model {model_path}: Smart Turn's feature code "
                             f"({features.name}) is not beside it; use the model in its "
                             f"pipecat-ai folder ({install_hint('turn')})")
        spec = importlib.util.spec_from_file_location("_voicebox_smart_turn_features", features)
        if spec is None or spec.loader is None:
            raise ModelError(f"cannot load {features}; {install_hint('turn')}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._features = cast(Callable[..., FloatAudio], module.compute_whisper_log_mel_features)
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load turn model {model_path}: {exc}") from exc
        require_inputs(self._session, {"input_features"}, "Smart Turn model", model_path)

    def probability(self, audio: FloatAudio) -> float:
        """``audio``: the turn so far at 16 kHz, ending where the silence began."""
        n = _WINDOW_S * ASR_SAMPLE_RATE_HZ
        x = np.asarray(audio[-n:], dtype=np.float32)
        x = np.pad(x, (n - x.shape[0], 0))
        feats = self._features(x, do_normalize=True)[None].astype(np.float32)
        out = self._session.run(None, {"input_features": feats})[0]
        return float(np.asarray(out).reshape(-1)[0])
