"""ASR engine: Whisper on CTranslate2 with a short encoder window and guarded decoding."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voicebox.engines.asr_checks import (
    TIME_PRECISION_S,
    Decoded,
    inside_audio,
    is_silence,
    looks_degenerate,
    split_committed,
    tail_problem,
    tail_token_limit,
    token_cap,
    trim_loop,
)
from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, FloatAudio, Transcript
from voicebox.errors import ModelError
from voicebox.models.locate import install_hint

if TYPE_CHECKING:
    import ctranslate2

_LOGGER = logging.getLogger(__name__)

_HOP_SAMPLES = 160
"""Samples per mel frame (10 ms at 16 kHz)."""
_FULL_WINDOW_S = 30
"""The window Whisper was trained on; the fallback decodes at this size."""
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
_NO_REPEAT_TOKENS = 3
"""A degenerate final is first decoded again on the same encoder output with no token
trigram said twice (CTranslate2's ``no_repeat_ngram_size``): a loop cannot form, and it
costs a decode (~40 ms for a card command here) where the 30 s window costs an encode
and a decode (~480 ms; seconds on a Raspberry Pi)."""
_SEAM_WORDS = 3
"""Committed words decoded again in a tail final: the first is forced as the decoder's
first word (so it goes on from there instead of starting the utterance over), the rest
are decoded freely, so the last words the partials agreed on get the final's beam and the
audio after them. Over 35 pocketsphinx clips (scripts/asr_wer.py) 3 was the smallest
value not less accurate than the full final; 2 lost the words after a hard one
("is to be ill-disposed" -> "is to be old as supposed")."""

class WhisperAsrEngine:
    """Whisper via CTranslate2: encode only as much audio as there is, then decode with guards.

    Whisper pads every call to a 30 s window, which costs most of the time on short
    utterances. This engine encodes a window of ``max(floor, audio + tail_s)`` seconds
    instead, the floor being ``final_window_s`` or ``partial_window_s`` (Whisper's
    encoder accepts any even frame count). A too-short window makes the decoder repeat
    itself, so: decoding is timed (text timed past the end of the audio is dropped), the
    output length is capped by the audio duration, and a result that still looks
    degenerate (loops, too many words per second, compression ratio, low log probability)
    is trimmed at its first loop when partial; when ``final`` it is decoded again on the
    same encoder output with no token trigram repeated, and only if that still fails the
    checks on the full 30 s window. ``prompt`` goes in as Whisper's ``<|startofprev|>`` context.

    A final given ``committed`` words (settled by the partials, see ``committed_prefix``)
    first tries to decode only the rest: the committed words but the last ``seam_words``
    go in as context, the next one is forced as the first output word, and the result is
    accepted only if it passes ``tail_problem``; otherwise the ordinary final runs on the
    same encoder output.
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
        seam_words: int = _SEAM_WORDS,
    ) -> None:
        import ctranslate2
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        for window_s in (final_window_s, partial_window_s):
            if not 0 < window_s <= _FULL_WINDOW_S:
                raise ValueError(f"window floors must be in (0, {_FULL_WINDOW_S}] s: {window_s}")
        if tail_s < 0 or final_beam < 1 or partial_beam < 1 or threads < 1 or seam_words < 1:
            raise ValueError("tail_s must be >= 0; beams, threads and seam_words must be >= 1")
        for name in ("model.bin", "config.json", "tokenizer.json"):
            if not (model_dir / name).is_file():
                raise ModelError(
                    f"ASR model file not found: {model_dir / name}; {install_hint('asr')}")
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
        self._seam_words = seam_words

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
        """Transcribe ``audio``; partials decode greedily, finals with beam search and a check.

        ``committed`` (finals only; partials ignore it) is the start of this audio's text as
        the partials settled it, e.g. ``committed_prefix(previous_partial, latest_partial)``:
        the final then decodes only what follows it when it can, which costs fewer decoder
        steps than the whole utterance. It must come from partials of this same audio (the
        same turn, from the same first sample): its words are kept as they are. ``draft``,
        the latest partial, bounds the tail's length: a decoder that starts the utterance
        over then hits the bound after a few words instead of decoding it all again.
        ``cancel`` is checked before encoding and between encoding and decoding
        (CTranslate2 cannot stop a decode once started): once set, the result is empty.
        """
        samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
        audio_s = len(samples) / ASR_SAMPLE_RATE_HZ
        encoded = None
        if final and committed.strip() and self._tail_worth_trying(samples):
            window_s = self._window_s(audio_s, final=True)
            encoded = self._encode(samples, window_s)
            tail = self._transcribe_tail(
                samples, encoded, prompt=prompt, committed=committed, draft=draft
            )
            if tail is not None:
                return Transcript(text=tail, audio_s=audio_s)
        texts: list[str] = []
        start = 0
        # Audio longer than Whisper's window, or left over when the decoder stops early,
        # is decoded in further passes prompted with what came before (Whisper's own
        # long-form seeking); the VAD normally ends turns long before 30 s.
        while len(samples) - start >= _MIN_AUDIO_S * ASR_SAMPLE_RATE_HZ:
            if cancel is not None and cancel.is_set():
                return Transcript(text="", audio_s=audio_s)
            piece = samples[start : start + _FULL_WINDOW_S * ASR_SAMPLE_RATE_HZ]
            if float(np.max(np.abs(piece))) < _SILENCE_PEAK:
                start += len(piece)
                continue
            context = " ".join([prompt, *texts]).strip()
            # A failed tail attempt encoded exactly this piece (the whole audio) already.
            reuse = encoded if start == 0 else None
            text, resume_s = self._transcribe_window(
                piece, final=final, prompt=context, encoded=reuse, cancel=cancel
            )
            if cancel is not None and cancel.is_set():
                return Transcript(text="", audio_s=audio_s)
            if text:
                texts.append(text)
            start += len(piece) if resume_s is None else round(resume_s * ASR_SAMPLE_RATE_HZ)
        return Transcript(text=" ".join(texts).strip(), audio_s=audio_s)

    def _tail_worth_trying(self, samples: FloatAudio) -> bool:
        """One window of audio that the ordinary path would decode (not silent, not tiny)."""
        n = len(samples)
        return (
            _MIN_AUDIO_S * ASR_SAMPLE_RATE_HZ <= n <= _FULL_WINDOW_S * ASR_SAMPLE_RATE_HZ
            and float(np.max(np.abs(samples))) >= _SILENCE_PEAK
        )

    def _window_s(self, audio_s: float, *, final: bool) -> float:
        floor_s = self._final_window_s if final else self._partial_window_s
        return min(_FULL_WINDOW_S, max(floor_s, audio_s + self._tail_s))

    def _transcribe_tail(
        self,
        audio: FloatAudio,
        encoded: ctranslate2.StorageView,
        *,
        prompt: str,
        committed: str,
        draft: str = "",
    ) -> str | None:
        """The text of ``audio`` from the committed words and a decode of what follows
        them, or None when that decode can't be trusted.

        The committed words go in as previous-text context, so the decoder skips the audio
        they cover. Alone that is not enough (on tiny.en the decoder mostly starts the
        utterance over, timestamps or not), so the first of the last ``seam_words`` is
        forced as the first output word: the decoder goes on from there.
        """
        seam = split_committed(committed, self._seam_words)
        if seam is None:
            return None
        context, anchor = seam
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        limit = tail_token_limit(self._tokenizer.encode, context, draft)
        tail = self._decode_tail(
            audio, encoded, " ".join([prompt, context]).strip(), anchor, limit
        )
        problem = tail_problem(context, tail, audio_s, committed)
        if problem is not None:
            _LOGGER.debug(
                "tail final rejected (%s): %r + %r",
                problem,
                context,
                tail.text,
                extra={"tail_outcome": problem},
            )
            return None
        _LOGGER.debug(
            "tail final accepted: %r + %r", context, tail.text, extra={"tail_outcome": "ok"}
        )
        return f"{context} {tail.text}"

    def _decode_tail(
        self,
        audio: FloatAudio,
        encoded: ctranslate2.StorageView,
        context: str,
        anchor: str,
        limit: int | None = None,
    ) -> Decoded:
        """Beam-search the words from ``anchor`` on, with ``context`` as previous text.

        Without timestamps: with them the decoder restarts at <|0.00|> on the committed
        audio even when the first timestamp is left free (max_initial_timestamp_index).
        """
        tok = self._tokenizer
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        start = [*self._prompt_ids(context), tok.no_timestamps]
        forced = tok.encode(" " + anchor)
        # New tokens after the forced ones; max_length counts ``start`` but not them.
        cap = min(_MAX_LENGTH - len(start) - len(forced), token_cap(audio_s), limit or _MAX_LENGTH)
        result = self._model.generate(
            encoded,
            [start + forced],
            beam_size=self._final_beam,
            max_length=len(start) + cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        ids: list[int] = list(result.sequences_ids[0])
        if ids[: len(forced)] != forced:  # the forced words are normally returned too
            ids = forced + ids
        return Decoded(
            text=tok.decode(ids).strip(),
            avg_logprob=float(result.scores[0]) * len(ids) / (len(ids) + 1),
            no_speech_prob=float(result.no_speech_prob),
            hit_cap=len(ids) - len(forced) >= cap,
            resume_s=None,
        )

    def _transcribe_window(
        self,
        audio: FloatAudio,
        *,
        final: bool,
        prompt: str,
        encoded: ctranslate2.StorageView | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[str, float | None]:
        """Text of ``audio`` (at most 30 s) and where to resume if some was left over;
        ``encoded`` is the encoder output of ``audio`` on its short window, if known.
        Nothing is decoded once ``cancel`` is set."""
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        window_s = self._window_s(audio_s, final=final)
        beam = self._final_beam if final else self._partial_beam
        prompt_ids = self._prompt_ids(prompt)
        if encoded is None:
            encoded = self._encode(audio, window_s)
        if cancel is not None and cancel.is_set():
            return "", None
        short = self._decode(audio, window_s, beam, prompt_ids, encoded)
        if is_silence(short):
            return "", None
        if not looks_degenerate(short, audio_s):
            return short.text, short.resume_s
        if not final or not self._fallback or window_s >= _FULL_WINDOW_S:
            _LOGGER.debug("degenerate %r; trimming", short.text)
            return trim_loop(short.text), None
        unlooped = self._decode(
            audio, window_s, beam, prompt_ids, encoded, no_repeat=_NO_REPEAT_TOKENS)
        if not is_silence(unlooped) and not looks_degenerate(unlooped, audio_s):
            _LOGGER.debug("degenerate %r on %.1f s window; decoded without repeats: %r",
                          short.text, window_s, unlooped.text)
            return unlooped.text, unlooped.resume_s
        _LOGGER.debug("degenerate %r on %.1f s window, %r without repeats; full-window retry",
                      short.text, window_s, unlooped.text)
        full = self._decode(audio, _FULL_WINDOW_S, beam, prompt_ids)
        if is_silence(full):
            return "", None
        if looks_degenerate(full, audio_s):
            return trim_loop(max(short, full, key=lambda d: d.avg_logprob).text), None
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

    def _decode(
        self,
        audio: FloatAudio,
        window_s: float,
        beam: int,
        prompt: list[int],
        encoded: ctranslate2.StorageView | None = None,
        *,
        no_repeat: int = 0,
    ) -> Decoded:
        """One beam search over ``audio`` on a ``window_s`` window; ``no_repeat`` > 0
        forbids any token n-gram of that length from occurring twice."""
        # Decoding with timestamps: text timed after the end of the audio (a short
        # window's typical loop: the utterance said again) can be dropped, and on long
        # audio the untimed decoder tends to stop after the first sentence.
        tok = self._tokenizer
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        cap = min(_MAX_LENGTH - len(prompt), token_cap(audio_s))
        result = self._model.generate(
            self._encode(audio, window_s) if encoded is None else encoded,
            [prompt],
            beam_size=beam,
            max_length=len(prompt) + cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            no_repeat_ngram_size=no_repeat,
        )[0]
        ids: list[int] = list(result.sequences_ids[0])
        avg_logprob = float(result.scores[0]) * len(ids) / (len(ids) + 1)
        resume_s = None
        if len(ids) >= 2 and min(ids[-2:]) >= tok.timestamp_begin:
            # Ends "<|t|><|t|>": a segment closed at t and the next one did not fit.
            stop_s = (ids[-1] - tok.timestamp_begin) * TIME_PRECISION_S
            if _MIN_REST_S <= stop_s <= audio_s - _MIN_REST_S:
                resume_s = stop_s
        return Decoded(
            text=tok.decode(inside_audio(ids, tok.timestamp_begin, audio_s)).strip(),
            avg_logprob=avg_logprob,
            no_speech_prob=float(result.no_speech_prob),
            hit_cap=len(ids) >= cap,
            resume_s=resume_s,
        )
