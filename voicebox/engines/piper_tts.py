"""Piper TTS engine: one clause in, mono float32 audio out, whole or a piece at a time."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from voicebox.engines.onnx_inputs import require_inputs
from voicebox.engines.piper_split import GRAPH_INPUTS, cached_split, split_paths
from voicebox.engines.protocols import FloatAudio
from voicebox.errors import ModelError
from voicebox.models.locate import install_hint

_LOGGER = logging.getLogger(__name__)

CONTEXT_FRAMES = 8
"""Latent frames decoded on each side of a piece and then dropped (~93 ms at 22.05 kHz):
the decoder's reach, so a piece's samples are the whole clause's (within 1e-3 here)."""

LATER_CHUNK_FRAMES = 48
"""Frames a piece after the first holds: fewer decoder calls, each re-decoding its context."""

CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog."
"""Spoken once at load without noise: the voice's gain puts its peak at full scale."""

LIMIT_KNEE = 0.9
"""Above this level the gain is eased off smoothly (``soft_limit``) instead of clipping."""


class PiperTtsEngine:
    """A Piper voice (.onnx with its .onnx.json beside it).

    Audio is scaled by one gain per voice, measured at load (``CALIBRATION_TEXT``), not
    peak-normalized per clause as Piper does: a clause's peak is known only once all of it
    is decoded, and clauses of one reply keep their relative loudness.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        threads: int = 1,
        chunk_frames: int = 12,
    ) -> None:
        """``length_scale``, ``noise_scale`` and ``noise_w_scale`` are Piper's own
        settings (None: the voice's). Piper draws fresh noise for every call, so the same
        text never sounds quite the same twice; both noise scales at 0 make it repeatable
        (input speech for tests and benches). ``chunk_frames``: latent frames (256
        samples each) in the first piece ``synthesize_chunks`` decodes; 0 synthesizes
        whole clauses (so does a voice that cannot be split, ``piper_split``)."""
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        if chunk_frames < 0:
            raise ValueError(f"chunk_frames must be >= 0: {chunk_frames}")
        config_path = Path(f"{model_path}.json")
        for path in (model_path, config_path):
            if not path.is_file():
                raise ModelError(f"TTS voice file not found: {path}; {install_hint('tts')}")
        try:
            config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except Exception as exc:  # corrupt JSON: say which file
            raise ModelError(f"cannot load TTS voice {model_path}: {exc}") from exc
        self._encoder: Any = None
        self._decoder: Any = None
        self._whole: Any = None
        if chunk_frames and config.num_speakers <= 1:
            self._load_halves(model_path, threads, cached_only=True)
        if self._encoder is None:
            try:
                self._whole = _session(model_path, threads)
            except Exception as exc:  # corrupt ONNX: say which file
                raise ModelError(f"cannot load TTS voice {model_path}: {exc}") from exc
            require_inputs(self._whole, set(GRAPH_INPUTS), "Piper voice", model_path)
            if chunk_frames and config.num_speakers <= 1:
                self._load_halves(model_path, threads, cached_only=False)
            if self._encoder is not None:
                self._whole = None  # the halves hold the same weights
        self._voice = PiperVoice(config=config, session=self._whole or self._encoder)
        self._syn = SynthesisConfig(
            length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale
        )
        self._chunk_frames = chunk_frames
        self._rate = int(config.sample_rate)
        self._gain = 1.0
        steady = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
        peak = max((float(np.max(np.abs(a))) for a in self._raw(CALIBRATION_TEXT, steady, 0)),
                   default=0.0)
        if peak > 1e-4:
            self._gain = 1.0 / peak

    def _load_halves(self, model_path: Path, threads: int, *, cached_only: bool) -> None:
        """The voice's two halves (``piper_split``), cut now unless ``cached_only``; left
        None when there are none or they do not load (a damaged cache is cut again)."""
        halves = split_paths(model_path)
        if cached_only and not (halves.encoder.is_file() and halves.decoder.is_file()):
            return
        split = halves if cached_only else cached_split(model_path)
        if split is None:
            return
        try:
            encoder, decoder = _session(split.encoder, threads), _session(split.decoder, threads)
            require_inputs(encoder, set(GRAPH_INPUTS), "Piper voice encoder", split.encoder)
        except Exception as exc:
            _LOGGER.warning("TTS voice halves %s do not load (%s): cut again", split.encoder, exc)
            split.encoder.unlink(missing_ok=True)
            split.decoder.unlink(missing_ok=True)
            return
        self._encoder, self._decoder = encoder, decoder

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    @property
    def chunked(self) -> bool:
        """Whether ``synthesize_chunks`` yields a clause in pieces (the voice was split)."""
        return self._decoder is not None and self._chunk_frames > 0

    def synthesize(self, text: str) -> FloatAudio:
        pieces = list(self._raw(text, self._syn, 0))
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return soft_limit(np.concatenate(pieces) * self._gain)

    def synthesize_chunks(self, text: str) -> Iterator[FloatAudio]:
        """Speak ``text`` a piece at a time: the first piece is ``chunk_frames`` frames,
        and comes after the encoder and a short decode instead of the whole clause. The
        pieces put together are ``synthesize``'s audio (but for Piper's noise)."""
        for piece in self._raw(text, self._syn, self._chunk_frames if self.chunked else 0):
            yield soft_limit(piece * self._gain)

    def _raw(self, text: str, syn: Any, first_frames: int) -> Iterator[FloatAudio]:
        """The voice's audio for each sentence of ``text``, unscaled, in pieces of
        ``first_frames`` and then ``LATER_CHUNK_FRAMES`` frames (0: a sentence a piece)."""
        for phonemes in self._voice.phonemize(text):
            if not phonemes:
                continue
            ids = self._voice.phonemes_to_ids(phonemes)
            if self._decoder is None:
                audio = self._voice.phoneme_ids_to_audio(ids, syn)
                yield np.asarray(audio, dtype=np.float32).reshape(-1)
                continue
            latent = self._encoder.run(None, self._inputs(ids, syn))[0]
            yield from self._decode(latent, first_frames)

    def _inputs(self, ids: list[int], syn: Any) -> dict[str, np.ndarray[Any, Any]]:
        cfg = self._voice.config
        scales = [cfg.noise_scale if syn.noise_scale is None else syn.noise_scale,
                  cfg.length_scale if syn.length_scale is None else syn.length_scale,
                  cfg.noise_w_scale if syn.noise_w_scale is None else syn.noise_w_scale]
        return {"input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32)}

    def _decode(self, latent: np.ndarray[Any, Any], first_frames: int) -> Iterator[FloatAudio]:
        """Decode ``latent`` (1, channels, frames) in pieces, each with ``CONTEXT_FRAMES``
        of context either side that are decoded and dropped."""
        frames = int(latent.shape[2])
        name = self._decoder.get_inputs()[0].name
        start, size = 0, first_frames or frames
        while start < frames:
            end = frames if frames - start < size * 3 // 2 else start + size
            lo, hi = max(0, start - CONTEXT_FRAMES), min(frames, end + CONTEXT_FRAMES)
            span = np.ascontiguousarray(latent[:, :, lo:hi])
            audio = np.asarray(self._decoder.run(None, {name: span})[0], np.float32).reshape(-1)
            hop = audio.shape[0] // (hi - lo)
            yield audio[(start - lo) * hop : (end - lo) * hop]
            start, size = end, LATER_CHUNK_FRAMES


def soft_limit(audio: FloatAudio) -> FloatAudio:
    """``audio`` as float32 with levels above ``LIMIT_KNEE`` eased below 1.0 (tanh)."""
    out = np.asarray(audio, dtype=np.float32)
    over = np.abs(out) > LIMIT_KNEE
    if over.any():
        out = out.copy()
        room = 1.0 - LIMIT_KNEE
        out[over] = np.sign(out[over]) * (
            LIMIT_KNEE + room * np.tanh((np.abs(out[over]) - LIMIT_KNEE) / room))
    return out


def _session(path: Path, threads: int) -> Any:
    import onnxruntime

    # Piper's own loader leaves onnxruntime at one spinning thread per core,
    # which starves the other engines on a small board: quiet threads here.
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
    return onnxruntime.InferenceSession(
        str(path), sess_options=opts, providers=["CPUExecutionProvider"])
