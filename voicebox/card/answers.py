"""What the card answers, parsed and checked: a malformed answer is a CardProtocolError."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from voicebox.card.errors import CardProtocolError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CardIdentity:
    """What the card says it is (IDENTIFY)."""

    profile: str
    firmware: str
    model: str
    context_tokens: int
    max_sessions: int
    emulated: bool
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PrefillInfo:
    """The card's answer to PREFILL."""

    prompt_tokens: int
    cached_tokens: int
    new_tokens: int
    evicted_messages: int
    card_ms: float = 0.0
    """Prefill time of an open turn (a reply's prefill is charged in its DONE)."""


@dataclass(frozen=True, slots=True)
class Scored:
    """The card's answer to SCORE_NEXT, checked: every probability is in 0..1."""

    probabilities: tuple[float, ...]
    """Next-token probability of each candidate (its first token), in order."""
    end_of_turn: float | None
    """Mass of the card's end-of-turn set (``.``, ``?``, ``!``, end of message), if asked."""
    prompt_tokens: int
    """The scored prompt, cut after the user's words, after eviction."""
    cached_tokens: int
    new_tokens: int
    evicted_messages: int
    card_ms: float
    """Prefill of the new tokens plus one forward pass, by the timing model."""
    wall_ms: float
    lag_ms: float
    energy_mj: float
    throttled: bool


@dataclass(frozen=True, slots=True)
class TokenPiece:
    """One streamed text piece, in order."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class StreamDone:
    """End of a stream with the card's own account of it (DONE)."""

    tokens: int
    finish: str
    """``stop``, ``length``, ``context`` (window full) or ``cancelled``."""
    card_ms: float
    """Reply time by the profile's timing model."""
    card_ttft_ms: float
    wall_ms: float
    """Reply time the card measured (emulator: wall clock)."""
    wall_ttft_ms: float
    lag_ms: float
    """How far the card fell behind its timing model (0 on a real card)."""
    energy_mj: float
    throttled: bool


def parse_identity(b: dict[str, Any]) -> CardIdentity:
    try:
        return CardIdentity(
            str(b["profile"]),
            str(b["firmware"]),
            str(b["model"]),
            int(b["context_tokens"]),
            int(b["max_sessions"]),
            bool(b.get("emulated")),
            b,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CardProtocolError(f"card sent a malformed IDENTITY: {exc!r}") from exc


def parse_prefilled(b: dict[str, Any]) -> PrefillInfo:
    try:
        return PrefillInfo(
            int(b["prompt_tokens"]),
            int(b["cached_tokens"]),
            int(b["new_tokens"]),
            int(b["evicted_messages"]),
            float(b.get("card_ms", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CardProtocolError(f"card sent a malformed PREFILLED: {exc!r}") from exc


def parse_done(b: dict[str, Any]) -> StreamDone:
    try:
        return StreamDone(
            int(b["tokens"]),
            str(b["finish"]),
            float(b["card_ms"]),
            float(b["card_ttft_ms"]),
            float(b["wall_ms"]),
            float(b["wall_ttft_ms"]),
            float(b["lag_ms"]),
            float(b["energy_mj"]),
            bool(b["throttled"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CardProtocolError(f"card sent a malformed DONE: {exc!r}") from exc


def parse_scored(b: dict[str, Any], candidates: int, end_of_turn: bool) -> Scored:
    """SCORED with ``candidates`` probabilities (and end_of_turn if asked), all in 0..1."""
    try:
        raw = b["probabilities"]
        if not isinstance(raw, list) or len(raw) != candidates:
            raise ValueError(f"{candidates} probabilities expected, got {raw!r}")
        eot = b["end_of_turn"]
        if end_of_turn != (eot is not None):
            raise ValueError(f"end_of_turn {'missing' if end_of_turn else 'not asked for'}")
        return Scored(
            tuple(_probability(p) for p in raw),
            None if eot is None else _probability(eot),
            int(b["prompt_tokens"]),
            int(b["cached_tokens"]),
            int(b["new_tokens"]),
            int(b["evicted_messages"]),
            float(b["card_ms"]),
            float(b["wall_ms"]),
            float(b["lag_ms"]),
            float(b["energy_mj"]),
            bool(b["throttled"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CardProtocolError(f"card sent a malformed SCORED: {exc}") from exc


def _probability(p: object) -> float:
    """``p`` if it is a probability; NaN, infinities, bools and strings are not."""
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{p!r} is not a probability")
    return float(p)
