"""Faults the emulated card can inject, and their command-line spelling (``hang@3``)."""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass

from voicebox.card.errors import CardError

_LOGGER = logging.getLogger(__name__)


class FaultKind(enum.Enum):
    """What goes wrong (docs/card-protocol.md, "Fault injection")."""

    HANG = "hang"
    """Mid-stream the card stops sending and ignores every command but RESET."""
    DEAD = "dead"
    """Mid-stream the card stops answering anything, RESET included."""
    GARBAGE = "garbage"
    """Random bytes (with a false magic) before one frame."""
    TRUNCATE = "truncate"
    """One token frame is cut short: that token is lost on the wire."""
    RESET = "reset"
    """Mid-stream the card resets itself: every session is gone."""
    THROTTLE = "throttle"
    """Thermal throttling: rates drop to ``power.throttle_rate_factor`` while armed."""
    EXHAUST = "exhaust"
    """OPEN fails with SESSIONS_EXHAUSTED while armed (other users hold every session)."""


PERSISTENT = frozenset({FaultKind.THROTTLE, FaultKind.EXHAUST})
"""Faults that stay armed until cleared; the others fire once."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One armed fault."""

    kind: FaultKind
    at_token: int = 2
    """For one-shot stream faults: index of the reply token at which it fires."""

    def __post_init__(self) -> None:
        if self.at_token < 0:
            raise ValueError(f"at_token must be >= 0 (got {self.at_token})")


def parse_fault(spec: str) -> Fault:
    """``KIND`` or ``KIND@TOKEN`` (e.g. ``hang@3``, ``throttle``); CardError if malformed."""
    kind_text, _, at_text = spec.partition("@")
    try:
        kind = FaultKind(kind_text.strip().lower())
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise CardError(f"unknown fault {kind_text!r} (known: {known})") from None
    if not at_text:
        return Fault(kind)
    try:
        return Fault(kind, int(at_text))
    except ValueError:
        raise CardError(
            f"fault {spec!r}: the token index after @ must be an integer >= 0"
        ) from None


class ArmedFaults:
    """The faults armed on one emulated card (thread-safe: tests arm them while it serves)."""

    def __init__(self) -> None:
        self._faults: dict[FaultKind, Fault] = {}
        self._lock = threading.Lock()

    def arm(self, fault: Fault) -> None:
        with self._lock:
            self._faults[fault.kind] = fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, kind: FaultKind, token: int | None = None) -> bool:
        """True if ``kind`` is armed (and due at ``token``); a one-shot fault is used up."""
        with self._lock:
            fault = self._faults.get(kind)
            if fault is None or (token is not None and token != fault.at_token):
                return False
            if kind not in PERSISTENT:
                del self._faults[kind]
            return True

    @property
    def throttled(self) -> bool:
        with self._lock:
            return FaultKind.THROTTLE in self._faults
