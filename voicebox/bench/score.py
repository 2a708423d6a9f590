"""Score a simulate run the way ../shared/bench/v2v.py does, plus stage timings from events."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicebox.engines.protocols import FloatAudio
from voicebox.events import (
    AudioHealth,
    EndOfTurnScored,
    Event,
    Interrupted,
    LlmFirstToken,
    PlaybackStarted,
    TranscriptFinal,
    TtsFirstAudio,
    TurnEnded,
)

LOUD = 10 ** (-40 / 20)


@dataclass(slots=True)
class TurnScore:
    """One user turn, times in ms from the labelled end of speech."""

    latency_ms: float | None
    """First loud 10 ms frame of the reply (the judge's rule)."""
    event_latency_ms: float | None
    """First reply sample according to the PlaybackStarted event."""
    stages: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    """The pipeline's final (streaming) transcript."""
    reference: str = ""
    """What was said (the clip's transcription)."""
    whole_asr_text: str | None = None
    """faster-whisper's ordinary whole-utterance transcript of the same turn audio."""


@dataclass(slots=True)
class ScenarioScore:
    """One scenario: its turns, cut-offs and barge-in stop times (ms)."""

    name: str
    turns: list[TurnScore]
    cutoffs: int
    barge_stop_ms: list[float | None]
    wall_s: float = 0.0
    pause_cutoffs: int = 0
    """Replies that started inside a labelled mid-sentence pause (part of ``cutoffs``)."""
    audio_faults: int = 0
    """Dropped VAD frames, xruns and late device blocks (0 on a healthy run)."""


def loud_onsets(audio: FloatAudio, rate_hz: int) -> tuple[list[float], np.ndarray]:
    hop = rate_hz // 100
    frames = audio[: audio.shape[0] // hop * hop].reshape(-1, hop)
    loud = np.sqrt((frames**2).mean(axis=1)) > LOUD
    onsets = [i / 100 for i in range(len(loud)) if loud[i] and (i == 0 or not loud[i - 1])]
    return onsets, loud


def score(name: str, labels: dict[str, Any], output: FloatAudio, rate_hz: int,
          events: list[Event]) -> ScenarioScore:
    onsets, loud = loud_onsets(output, rate_hz)
    turns = labels["turns"]
    texts = labels.get("texts", [])
    cutoffs = 0
    scored: list[TurnScore] = []
    owned = assign_turns(events, [t["speech_start_s"] for t in turns])
    for i, turn in enumerate(turns):
        start, end = turn["speech_start_s"], turn["speech_end_s"]
        cutoffs += sum(1 for o in onsets if start + 0.05 < o < end - 0.05)
        until = min(end + 5, turns[i + 1]["speech_start_s"] if i + 1 < len(turns) else end + 5)
        after = [o for o in onsets if end - 0.05 <= o < until]
        lat = round((after[0] - end) * 1000) if after else None
        ts = TurnScore(lat, None, reference=texts[i] if i < len(texts) else "")
        _stages(ts, events, owned[i], end)
        scored.append(ts)
    barge: list[float | None] = []
    for b in labels.get("barge", []):
        i0 = int(b * 100)
        if i0 < len(loud) and loud[max(0, i0 - 5): i0 + 1].any():
            quiet, stop = 0, None
            for i in range(i0, len(loud)):
                quiet = quiet + 1 if not loud[i] else 0
                if quiet >= 10:
                    stop = round(((i - 9) / 100 - b) * 1000)
                    break
            barge.append(stop)
    faults = sum(e.dropped_frames + e.xruns + e.late_blocks
                 for e in events if isinstance(e, AudioHealth))
    return ScenarioScore(name, scored, cutoffs, barge, audio_faults=faults)


PRE_START_S = 0.5
"""A pipeline turn that starts this long before a labelled turn still belongs to it."""


def assign_turns(events: list[Event], starts_s: list[float]) -> list[list[int]]:
    """The pipeline's turn numbers that belong to each labelled turn, by start time.

    A pipeline can split one spoken turn (a 500 ms endpoint inside a pause starts a new
    turn when the user goes on), so a labelled turn may own several pipeline turns.
    """
    began: dict[int, float] = {}
    for e in events:
        n = getattr(e, "turn", None)
        if isinstance(n, int):
            began[n] = min(began.get(n, e.stream_s), e.stream_s)
    owned: list[list[int]] = [[] for _ in starts_s]
    for n, at in sorted(began.items()):
        i = max((k for k, s in enumerate(starts_s) if s - PRE_START_S <= at), default=0)
        if i < len(owned):
            owned[i].append(n)
    return owned


def _stages(ts: TurnScore, events: list[Event], owned: list[int], end_s: float) -> None:
    """Stage timings from the owned pipeline turn that replied (else the last one); the
    transcript joins the last final transcript of each owned pipeline turn."""
    finals: dict[int, str] = {}
    for e in events:
        if isinstance(e, TranscriptFinal) and e.turn in owned:
            finals[e.turn] = e.text
    ts.transcript = " ".join(t for t in finals.values() if t)
    played = [e.turn for e in events if isinstance(e, PlaybackStarted) and e.turn in owned]
    turn = played[-1] if played else (owned[-1] if owned else None)
    mine = [e for e in events if turn is not None and getattr(e, "turn", None) == turn]

    def last(kind: type) -> Any:
        found = [e for e in mine if isinstance(e, kind)]
        return found[-1] if found else None

    ended, play, scored = last(TurnEnded), last(PlaybackStarted), last(EndOfTurnScored)
    final, tok, tts = last(TranscriptFinal), last(LlmFirstToken), last(TtsFirstAudio)
    inter = last(Interrupted)
    if final is not None:
        ts.stages["asr_final_ms"] = final.compute_ms
        ts.stages["asr_done_at_ms"] = round((final.stream_s - end_s) * 1000)
    if tok is not None:
        ts.stages["llm_first_token_ms"] = tok.compute_ms
        ts.stages["llm_first_token_at_ms"] = round((tok.stream_s - end_s) * 1000)
    if tts is not None:
        ts.stages["tts_first_audio_ms"] = tts.compute_ms
        ts.stages["reply_ready_ms"] = round((tts.stream_s - end_s) * 1000)
    if ended is not None:
        ts.stages["vad_end_error_ms"] = round((ended.speech_end_s - end_s) * 1000)
        ts.stages["turn_confirmed_ms"] = round((ended.stream_s - end_s) * 1000)
    if scored is not None:  # the last: the one at the turn's end, not at a pause before it
        ts.stages["eot_score"] = scored.score
        ts.stages["eot_silence_ms"] = scored.required_silence_ms
    if play is not None:
        ts.event_latency_ms = round((play.stream_s - end_s) * 1000)
    if inter is not None:
        ts.stages["interrupted_at_s"] = inter.stream_s


def held_by(stages: dict[str, float]) -> tuple[str, float] | None:
    """What the first reply sample waited for last: ``("wait", ms)`` when the reply was
    ready that long before the turn was confirmed (the end-of-turn wait held it),
    ``("compute", ms)`` when the turn was confirmed that long before the reply was ready.
    None without both times."""
    ready, confirmed = stages.get("reply_ready_ms"), stages.get("turn_confirmed_ms")
    if ready is None or confirmed is None:
        return None
    return ("wait", confirmed - ready) if confirmed > ready else ("compute", ready - confirmed)


def wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """Word edits and reference length, after normalising case, punctuation and numbers."""
    ref = normalise(reference)
    return word_edits(ref, normalise(hypothesis)), len(ref)


def word_edits(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)]


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SPELLING = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def number_words(n: int) -> str:
    """0..999 in words (enough for spoken commands); larger numbers stay digits."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)


def normalise(text: str) -> list[str]:
    """Lowercase words without punctuation, digits as words, abbreviations spelled out."""
    words: list[str] = []
    for word in re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split():
        word = word.strip("'")
        if word.isdigit():
            words.extend(number_words(int(word)).split())
        elif word:
            words.append(_SPELLING.get(word, word))
    return words
