"""A clause's speech made ready to play: resampled, its silences fitted to where it was cut,
whole or a piece at a time as the synthesizer decodes it."""

from __future__ import annotations

import numpy as np

from voicebox.audio.resample import StreamResampler
from voicebox.engines.protocols import FloatAudio

SENTENCE_ENDS = (".", "?", "!", '"', ")")
BREAKS = (*SENTENCE_ENDS, ",", ";", ":")
COMMA_PAUSE_MS = 80
PHRASE_GAP_MS = 10
"""Quiet kept after a clause cut inside a phrase."""
FLOOR_DBFS = -45.0
"""Blocks quieter than this are the synthesizer's silence."""
LEAD_KEEP_MS = 5
"""Quiet kept before the onset of a clause whose lead-in is dropped."""


def fit_clause_audio(
    audio: FloatAudio, rate_hz: int, clause: str, previous: str | None
) -> FloatAudio:
    """One clause's speech, with the synthesizer's silences fitted to where it was cut.

    The first clause starts at once (its lead-in only adds latency), and so does one that
    goes on from the words of the one before (cut inside a phrase). The synthesizer ends
    every call with a sentence pause (~200 ms): kept at the end of a sentence, shortened
    at a comma, nearly gone inside a phrase, where it would sound like a stumble.
    """
    if _trims_lead(previous):
        audio = trim_leading_silence(audio, rate_hz)
    keep_ms = _tail_keep_ms(clause)
    if keep_ms is not None:
        audio = trim_trailing_silence(audio, rate_hz, keep_ms=keep_ms)
    return audio


class ClauseAudio:
    """``fit_clause_audio`` a piece at a time, with the resampling: ``feed`` each piece the
    synthesizer decodes and play what it returns at once, then what ``finish`` returns.

    Quiet is held back until louder audio follows it or the clause ends (it may be the
    lead-in or the tail to trim), so what comes out is what ``fit_clause_audio`` would
    give for the whole clause resampled with ``resample`` (libsamplerate here, soxr there:
    the same samples but near the band edge, where their filters differ).
    """

    def __init__(self, clause: str, previous: str | None, from_hz: int, to_hz: int) -> None:
        self._rate = to_hz
        self._resampler = StreamResampler(from_hz, to_hz)
        self._hop = max(1, to_hz // 400)
        self._floor = 10 ** (FLOOR_DBFS / 20)
        self._lead = _trims_lead(previous)
        """Still looking for the onset, so far nothing played (the lead-in is dropped)."""
        keep_ms = _tail_keep_ms(clause)
        self._keep = None if keep_ms is None else to_hz * keep_ms // 1000
        self._held = np.zeros(0, dtype=np.float32)
        """Audio not played yet; it starts on a block boundary (counted from the onset)."""
        self._sounded = False
        """A loud block has come (and ``_held`` begins after the last one)."""

    def feed(self, piece: FloatAudio) -> FloatAudio:
        """The audio of ``piece`` (and of earlier ones held back) ready to play now."""
        return self._take(self._resampler.process(piece), last=False)

    def finish(self) -> FloatAudio:
        """The rest of the clause, its tail fitted."""
        return self._take(self._resampler.flush(), last=True)

    def _take(self, audio: FloatAudio, *, last: bool) -> FloatAudio:
        held = np.concatenate([self._held, np.asarray(audio, dtype=np.float32)])
        if self._lead:
            loud = self._loud_blocks(held)
            if loud.size == 0:
                self._held = np.zeros(0, dtype=np.float32) if last else held
                return held if last else np.zeros(0, dtype=np.float32)
            cut = max(0, int(loud[0]) * self._hop - self._rate * LEAD_KEEP_MS // 1000)
            held, self._lead = held[cut:], False
        loud = self._loud_blocks(held)
        # Where the quiet after the last sound so far begins (``_held`` starts there).
        quiet = (int(loud[-1]) + 1) * self._hop if loud.size else (0 if self._sounded else None)
        self._sounded = self._sounded or loud.size > 0
        if last:
            self._held = np.zeros(0, dtype=np.float32)
            if self._keep is None or quiet is None:
                return held  # a sentence's end keeps its pause; nothing loud: untouched
            return held[: quiet + self._keep]
        ready = quiet or 0
        self._held = held[ready:]
        return held[:ready]

    def _loud_blocks(self, audio: FloatAudio) -> np.ndarray[tuple[int], np.dtype[np.intp]]:
        n = audio.shape[0] // self._hop * self._hop
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        rms = np.sqrt((audio[:n].reshape(-1, self._hop) ** 2).mean(axis=1))
        return np.flatnonzero(rms > self._floor)


def _trims_lead(previous: str | None) -> bool:
    return previous is None or not previous.rstrip().endswith(BREAKS)


def _tail_keep_ms(clause: str) -> int | None:
    """Quiet kept after the clause's last sound; None: all of it (a sentence's end)."""
    text = clause.rstrip()
    if text.endswith(SENTENCE_ENDS):
        return None
    return COMMA_PAUSE_MS if text.endswith(BREAKS) else PHRASE_GAP_MS


def trim_trailing_silence(
    audio: FloatAudio, rate_hz: int, floor_dbfs: float = FLOOR_DBFS, keep_ms: int = 40
) -> FloatAudio:
    """Drop the quiet after the last loud 2.5 ms but ``keep_ms`` (a clause-break pause)."""
    span = _loud_span(audio, rate_hz, floor_dbfs)
    if span is None:
        return audio
    end = span[1] + rate_hz * keep_ms // 1000
    return audio[: min(end, audio.shape[0])]


def trim_leading_silence(
    audio: FloatAudio, rate_hz: int, floor_dbfs: float = FLOOR_DBFS
) -> FloatAudio:
    """Drop the synthesizer's quiet lead-in (it only adds latency); keep 5 ms before onset."""
    span = _loud_span(audio, rate_hz, floor_dbfs)
    if span is None:
        return audio
    return audio[max(0, span[0] - rate_hz * LEAD_KEEP_MS // 1000) :]


def _loud_span(audio: FloatAudio, rate_hz: int, floor_dbfs: float) -> tuple[int, int] | None:
    """First and past-the-last sample of the 2.5 ms blocks louder than ``floor_dbfs``."""
    hop = max(1, rate_hz // 400)
    n = audio.shape[0] // hop * hop
    if n == 0:
        return None
    rms = np.sqrt((audio[:n].reshape(-1, hop) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > 10 ** (floor_dbfs / 20))
    if loud.size == 0:
        return None
    return int(loud[0]) * hop, (int(loud[-1]) + 1) * hop
