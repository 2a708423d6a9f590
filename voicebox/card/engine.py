"""CardLlmEngine: the LlmEngine protocol on a card, surviving resets by resuming the reply."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from voicebox.card.driver import CardDriver, CardIdentity, StreamDone, TokenPiece
from voicebox.card.errors import (
    CardError,
    CardLinkError,
    CardProtocolError,
    CardRemoteError,
    CardResetError,
    CardTimeoutError,
)
from voicebox.card.protocol import ErrorCode
from voicebox.engines.protocols import ChatMessage

_LOGGER = logging.getLogger(__name__)


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


class CardLlmEngine:
    """A chat model that lives on a card (emulated or real), behind one CardDriver.

    The card keeps one session for this engine. If the card hangs, resets, or loses
    a token frame, the engine recovers (reset, reopen, re-prefill the conversation
    plus the reply so far) and continues the reply where it stopped, so the
    pipeline never sees a repeated or a garbage piece. After ``max_recoveries``
    failed attempts in one reply it raises CardError.
    """

    def __init__(
        self,
        driver: CardDriver,
        *,
        max_recoveries: int = 3,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._driver = driver
        self._max_recoveries = max_recoveries
        self._on_close = on_close
        self._session: int | None = None
        self.identity: CardIdentity = driver.identify()
        self.last_stats: ReplyStats | None = None
        """Statistics of the last finished reply."""
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
            except (
                CardResetError,
                CardProtocolError,
                CardTimeoutError,
                CardLinkError,
                CardRemoteError,
            ) as exc:
                if isinstance(exc, CardRemoteError) and exc.code != ErrorCode.NO_SESSION:
                    raise
                recoveries += 1
                if recoveries > self._max_recoveries:
                    raise CardError(
                        f"card at {self._driver.device} failed {recoveries} times in one reply; "
                        f"last error: {exc}"
                    ) from exc
                _LOGGER.warning(
                    "card fault (%s); recovering, then resuming at piece %d", exc, len(parts)
                )
                if not isinstance(exc, CardProtocolError):
                    self._session = None  # the card's sessions are gone (or will be)
                if isinstance(exc, CardTimeoutError | CardLinkError):
                    self._driver.recover()
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

    def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(CardError, OSError):
                self._driver.close_session(self._session)
            self._session = None
        self._driver.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
