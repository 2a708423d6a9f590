"""CardLlmEngine: the LlmEngine protocol on a card, surviving resets by resuming the reply."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from voicebox.card.answers import CardIdentity, StreamDone, TokenPiece
from voicebox.card.driver import CardDriver
from voicebox.card.errors import (
    CardError,
    CardLinkError,
    CardProtocolError,
    CardRemoteError,
    CardResetError,
    CardTimeoutError,
)
from voicebox.card.protocol import ErrorCode
from voicebox.engines.llama_llm import strip_trailing_punctuation
from voicebox.engines.protocols import ChatMessage

_LOGGER = logging.getLogger(__name__)

_T = TypeVar("_T")
_FAULTS = (CardResetError, CardProtocolError, CardTimeoutError, CardLinkError, CardRemoteError)
"""What the engine recovers from (a CardRemoteError only if it is NO_SESSION)."""


@dataclass(frozen=True, slots=True)
class ReplyStats:
    """One reply, in card time and in wall time, kept apart."""

    tokens: int
    """Text pieces (one per generated token) the reply had."""
    finish: str
    """``stop``, ``length``, ``context`` or ``cancelled``."""
    prompt_tokens: int
    """Prompt as the card kept it, after eviction."""
    evicted_messages: int
    """Oldest messages the card dropped to fit its window."""
    card_ms: float
    """Reply time by the profile's timing model (summed over resumed attempts)."""
    card_ttft_ms: float
    """Time to first token by the timing model."""
    wall_ms: float
    """Host-measured time from ``stream()`` to the last piece (recoveries included)."""
    wall_ttft_ms: float
    """Host-measured time to the first piece (NaN if none)."""
    emulation_lag_ms: float
    """How far the emulator fell behind the timing model (0 on a real card)."""
    energy_mj: float
    """Card energy by the power figure."""
    recoveries: int
    """Resets, resumes and reconnects this reply needed."""
    throttled: bool
    """Whether the card was thermally throttled."""


@dataclass(frozen=True, slots=True)
class ScoreStats:
    """One end-of-turn score, in card time and in wall time."""

    probability: float
    prompt_tokens: int
    """The scored prompt (cut after the user's words) as the card kept it."""
    new_tokens: int
    """Tokens the card prefilled for it (the rest was in the session's KV cache)."""
    card_ms: float
    """Prefill of the new tokens plus one forward pass, by the timing model."""
    wall_ms: float
    """Host-measured time of the call (recoveries included)."""
    emulation_lag_ms: float
    recoveries: int


class CardLlmEngine:
    """A chat model that lives on a card (emulated or real), behind one CardDriver.

    The card keeps one session for this engine. If the card hangs, resets, or loses
    a token frame, the engine recovers (reset, reopen, re-prefill the conversation
    plus the reply so far) and continues the reply where it stopped, so the
    pipeline never sees a repeated or a garbage piece. After ``max_recoveries``
    failed attempts in one reply it raises CardError. It is also an EndOfTurnScorer
    (SCORE_NEXT and open-turn PREFILL), with the same recovery rules.
    """

    def __init__(
        self,
        driver: CardDriver,
        *,
        max_recoveries: int = 3,
        reserve_tokens: int = 64,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._driver = driver
        self._max_recoveries = max_recoveries
        # Scores and open-turn prefills make room for a reply of this many tokens, as the
        # reply's PREFILL will; after the first reply, for that reply's ``max_tokens``.
        self._reserve_tokens = reserve_tokens
        self._on_close = on_close
        self._session: int | None = None
        self.identity: CardIdentity = driver.identify()
        self.last_stats: ReplyStats | None = None
        """Statistics of the last finished reply."""
        self.last_score: ScoreStats | None = None
        """Statistics of the last end-of-turn score."""
        _LOGGER.info(
            "card %s (%s, %s) at %s",
            self.identity.profile,
            self.identity.model,
            "emulated" if self.identity.emulated else "hardware",
            driver.device,
        )

    @property
    def driver(self) -> CardDriver:
        return self._driver

    @property
    def context_tokens(self) -> int:
        return self.identity.context_tokens

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        try:
            return self._driver.count_tokens(messages)
        except (CardTimeoutError, CardLinkError, CardProtocolError) as exc:
            _LOGGER.warning("card COUNT failed (%s); recovering", exc)
            self._driver.recover()
            self._session = None
            return self._driver.count_tokens(messages)

    def _ensure_session(self) -> int:
        if self._session is None:
            try:
                self._session = self._driver.open_session()
            except CardRemoteError as exc:
                if exc.code == ErrorCode.SESSIONS_EXHAUSTED:
                    raise CardError(
                        f"card {self.identity.profile} has no free session "
                        f"({self.identity.max_sessions} max): {exc.message}"
                    ) from exc
                raise
        return self._session

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        t0 = time.monotonic()
        self._reserve_tokens = max_tokens  # scores evict as this reply's PREFILL will
        parts: list[str] = []
        first_wall: float | None = None
        card_ms = lag_ms = energy_mj = 0.0
        card_ttft_ms = math.nan
        prompt_tokens = evicted = recoveries = 0
        finish, throttled = "length", False
        while True:
            try:
                session = self._ensure_session()
                remaining = max_tokens - len(parts)
                if remaining <= 0:
                    break
                info = self._driver.prefill(
                    session, messages, reserve_tokens=remaining, continuation="".join(parts)
                )
                if info.evicted_messages and not evicted:
                    _LOGGER.warning(
                        "card window full: evicted the %d oldest messages", info.evicted_messages
                    )
                prompt_tokens, evicted = info.prompt_tokens, max(evicted, info.evicted_messages)
                for event in self._driver.generate(session, remaining, cancel):
                    if isinstance(event, TokenPiece):
                        parts.append(event.text)
                        first_wall = first_wall or time.monotonic()
                        yield event.text
                    elif isinstance(event, StreamDone):
                        finish, throttled = event.finish, throttled or event.throttled
                        card_ms += event.card_ms
                        lag_ms += event.lag_ms
                        energy_mj += event.energy_mj
                        card_ttft_ms = (
                            event.card_ttft_ms if math.isnan(card_ttft_ms) else card_ttft_ms
                        )
                break
            except _FAULTS as exc:
                recoveries += 1
                self._recover(exc, recoveries, "reply", f"resuming at piece {len(parts)}")
        self.last_stats = ReplyStats(
            tokens=len(parts),
            finish=finish,
            prompt_tokens=prompt_tokens,
            evicted_messages=evicted,
            card_ms=card_ms,
            card_ttft_ms=card_ttft_ms,
            wall_ms=(time.monotonic() - t0) * 1000.0,
            wall_ttft_ms=(first_wall - t0) * 1000.0 if first_wall is not None else math.nan,
            emulation_lag_ms=lag_ms,
            energy_mj=energy_mj,
            recoveries=recoveries,
            throttled=throttled,
        )

    def end_of_turn_probability(self, messages: Sequence[ChatMessage]) -> float:
        """Probability that the last user message is a finished turn (SCORE_NEXT).

        The card cuts the prompt right after the user's words and returns the mass of
        ``.``, ``?``, ``!`` and its end-of-message token; the scored prompt stays in the
        session's scoring sequence, and the reply's prompt (bare words and header) goes
        into the reply's sequence at the same time (``warm_reply``), so the reply that
        follows finds it all cached.
        """
        if not _user_words(messages):
            return 0.0
        t0 = time.monotonic()
        scored, recoveries = self._with_recovery(
            "score",
            lambda session: self._driver.score_next(
                session, messages, reserve_tokens=self._reserve_tokens, end_of_turn=True,
                warm_reply=True,
            ),
        )
        assert scored.end_of_turn is not None  # the driver checked the answer
        self.last_score = ScoreStats(
            probability=scored.end_of_turn,
            prompt_tokens=scored.prompt_tokens,
            new_tokens=scored.new_tokens,
            card_ms=scored.card_ms,
            wall_ms=(time.monotonic() - t0) * 1000.0,
            emulation_lag_ms=scored.lag_ms,
            recoveries=recoveries,
        )
        return scored.end_of_turn

    def prefill(self, messages: Sequence[ChatMessage]) -> None:
        """Warm the session's KV cache with the prompt up to the user's words so far."""
        if not _user_words(messages):
            return
        self._with_recovery(
            "prefill",
            lambda session: self._driver.prefill(
                session, messages, reserve_tokens=self._reserve_tokens, open_turn=True
            ),
        )

    def _with_recovery(self, what: str, call: Callable[[int], _T]) -> tuple[_T, int]:
        """``call(session)`` under the recovery rules; its result and the recoveries it took."""
        recoveries = 0
        while True:
            try:
                return call(self._ensure_session()), recoveries
            except _FAULTS as exc:
                recoveries += 1
                self._recover(exc, recoveries, what, "retrying")

    def _recover(self, exc: Exception, attempt: int, what: str, then: str) -> None:
        """Bring the card back after ``exc`` (the ``attempt``-th fault), or raise."""
        if isinstance(exc, CardRemoteError) and exc.code != ErrorCode.NO_SESSION:
            raise exc
        if attempt > self._max_recoveries:
            raise CardError(
                f"card at {self._driver.device} failed {attempt} times in one {what}; "
                f"last error: {exc}"
            ) from exc
        _LOGGER.warning("card fault in %s (%s); recovering, then %s", what, exc, then)
        if not isinstance(exc, CardProtocolError):
            self._session = None  # the card's sessions are gone (or will be)
        if isinstance(exc, CardTimeoutError | CardLinkError):
            self._driver.recover()

    def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(CardError, OSError):
                self._driver.close_session(self._session)
            self._session = None
        self._driver.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


def _user_words(messages: Sequence[ChatMessage]) -> str:
    """The last user message's words (empty: nothing to score or prefill)."""
    if not messages:
        return ""
    if messages[-1].role != "user":
        raise ValueError(f"the last message must be the user's, not {messages[-1].role!r}")
    return strip_trailing_punctuation(messages[-1].content)
