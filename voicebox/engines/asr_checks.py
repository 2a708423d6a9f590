"""Checks on Whisper's decoded text: loops and other degenerate decodes, the words two
partials agree on, and whether a tail final can be trusted."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

TIME_PRECISION_S = 0.02
"""Seconds per timestamp token."""
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
TAIL_SLACK_TOKENS = 8
"""Tokens a tail final may take beyond the latest partial's words (speech after that
partial: it is at most one partial interval, ~400 ms, old)."""
_RESTART_NGRAM = 3
"""A tail sharing a word n-gram this long with the context has re-transcribed it."""


@dataclass(frozen=True, slots=True)
class Decoded:
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
    return "".join(words_of(word))


def split_committed(committed: str, seam_words: int) -> tuple[str, str] | None:
    """``committed`` as (context, anchor): all words but the last ``seam_words``, then the
    first of those; None when no context would be left (the tail would be all of it)."""
    words = committed.split()
    if len(words) <= seam_words:
        return None
    return " ".join(words[:-seam_words]), words[-seam_words]


def tail_problem(context: str, tail: Decoded, audio_s: float, committed: str) -> str | None:
    """Why a tail decode (``tail``, from the forced anchor on) can't be trusted, or None.

    - "short": the tail must cover the committed words decoded again and at least one
      word more (the caller held back at least the last agreed word); fewer means the
      decoder stopped early. A context of one word is too little to tell a restart.
    - "restart": it shares a word n-gram with the context, i.e. it went back and said
      the committed words again (the decoder's usual failure with this prompt).
    - "degenerate": context + tail fails the checks every decode gets (loop, speed,
      compression, low mean log probability, token cap).
    """
    tail_words = words_of(tail.text)
    context_words = words_of(context)
    seam_words = len(words_of(committed)) - len(context_words)
    if len(tail_words) <= seam_words or len(context_words) < 2:
        return "short"
    # A context shorter than the n-gram is matched whole ("Eight of" ... "Eight of sp").
    if _shares_ngram(context_words, tail_words, min(_RESTART_NGRAM, len(context_words))):
        return "restart"
    if _begins_again(context_words, tail.text):
        return "restart"
    # An unsure tail (Whisper's usual -1.0) falls back to the ordinary final, which
    # costs a normal decode, not a 30 s one.
    if looks_degenerate(replace(tail, text=f"{context} {tail.text}"), audio_s, _LOW_LOGPROB):
        return "degenerate"
    return None


def _begins_again(context_words: list[str], tail: str) -> bool:
    """After a sentence end the tail says the context's first words again (a restart cut
    short by the token limit: "... seven of hearts. Eight")."""
    for later in re.split(r"[.?!]\s+", tail)[1:]:
        words = words_of(later)
        if words and words == context_words[: len(words)]:
            return True
    return False


def _shares_ngram(a: list[str], b: list[str], n: int) -> bool:
    grams = {tuple(a[i : i + n]) for i in range(len(a) - n + 1)}
    return any(tuple(b[i : i + n]) in grams for i in range(len(b) - n + 1))


def tail_token_limit(
    encode: Callable[[str], list[int]], context: str, draft: str
) -> int | None:
    """Tokens a tail may take: the draft's words after the context, plus slack for words
    said after the draft was taken; None without a draft that covers the context."""
    context_n, words = len(context.split()), draft.split()
    if not draft or len(words) <= context_n:
        return None
    return len(encode(" " + " ".join(words[context_n:]))) + TAIL_SLACK_TOKENS


def token_cap(audio_s: float) -> int:
    """Most tokens worth decoding for ``audio_s`` of speech."""
    return math.ceil(_TOKENS_BASE + _TOKENS_PER_S * audio_s)


def inside_audio(ids: list[int], timestamp_begin: int, audio_s: float) -> list[int]:
    """Text tokens whose latest timestamp lies inside the audio (a short window invites
    the decoder to start the utterance again after its end)."""
    limit_s = audio_s - 2 * TIME_PRECISION_S
    kept: list[int] = []
    now_s = 0.0
    for token in ids:
        if token >= timestamp_begin:
            now_s = (token - timestamp_begin) * TIME_PRECISION_S
        elif now_s < limit_s:
            kept.append(token)
    return kept


def is_silence(decoded: Decoded) -> bool:
    """faster-whisper's no-speech rule: likely no speech and not confidently decoded."""
    if not decoded.text:
        return True
    return decoded.no_speech_prob > _NO_SPEECH_PROB and decoded.avg_logprob < _LOW_LOGPROB


def words_of(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def has_loop(words: list[str]) -> bool:
    """A short n-gram ``_LOOP_REPEATS`` times in a row, or a long phrase twice in a row."""
    for n in range(1, len(words) // 2 + 1):
        repeats = 2 if n >= _LOOP_PHRASE_WORDS else _LOOP_REPEATS
        for start in range(len(words) - repeats * n + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(1, repeats)):
                return True
    return False


def looks_degenerate(
    decoded: Decoded, audio_s: float, min_logprob: float = _RETRY_LOGPROB
) -> bool:
    """Signs of a decoder that lost the audio: loops, impossible speed, low confidence."""
    words = words_of(decoded.text)
    encoded = decoded.text.encode("utf-8")
    compression = len(encoded) / len(zlib.compress(encoded)) if encoded else 0.0
    return (
        decoded.hit_cap
        or has_loop(words)
        or _STUTTER.search(decoded.text) is not None
        or len(words) > _MAX_WORDS_PER_S * max(audio_s, 1.0)
        or compression > _MAX_COMPRESSION_RATIO
        or decoded.avg_logprob < min_logprob
    )


def trim_loop(text: str) -> str:
    """Cut ``text`` where it starts repeating itself until the end (a capped loop)."""
    words = words_of(text)
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
