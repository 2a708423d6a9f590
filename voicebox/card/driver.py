"""The card driver: one command at a time over the host-card protocol, every wait bounded."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from voicebox.card.answers import (
    CardIdentity,
    PrefillInfo,
    Scored,
    StreamDone,
    TokenPiece,
    parse_done,
    parse_identity,
    parse_prefilled,
    parse_scored,
)
from voicebox.card.errors import (
    CardError,
    CardLinkError,
    CardProtocolError,
    CardRemoteError,
    CardResetError,
    CardTimeoutError,
)
from voicebox.card.protocol import (
    NO_SESSION,
    Command,
    Frame,
    FrameDecoder,
    Reply,
    encode,
    error_name,
    wire_messages,
)
from voicebox.card.transport import Transport, open_transport
from voicebox.engines.protocols import ChatMessage

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriverTimeouts:
    """How long the driver waits for the card before it calls it hung."""

    command_s: float = 2.0
    """Reply to any command but GENERATE."""
    first_token_s: float = 30.0
    """First frame of a GENERATE stream (an emulated card prefills on the host CPU)."""
    token_s: float = 10.0
    """Gap between two frames of a stream."""
    reset_s: float = 5.0
    """RESET_DONE after RESET."""
    poll_s: float = 0.05
    """Slice of a wait after which the cancel flag is checked."""


@dataclass(slots=True)
class DriverCounters:
    """What the driver had to put up with."""

    timeouts: int = 0
    dropped_bytes: int = 0
    bad_frames: int = 0
    stale_frames: int = 0
    resets: int = 0
    card_resets_seen: int = 0
    reconnects: int = 0
    lost_tokens: int = 0


@dataclass(slots=True)
class _Wait:
    deadline: float
    cancel: threading.Event | None = None
    started: float = field(default_factory=time.monotonic)


class CardDriver:
    """Talks to one card at a device path; the same code for the emulator and a real card."""

    def __init__(self, device: str | Path, *, timeouts: DriverTimeouts | None = None) -> None:
        self.device = str(device)
        self.timeouts = timeouts or DriverTimeouts()
        self.counters = DriverCounters()
        self._transport: Transport = open_transport(self.device)
        self._decoder = FrameDecoder()
        self._seq = 0

    # -- framing ---------------------------------------------------------------------

    def _send(self, command: Command, session: int, body: dict[str, Any] | None = None) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1  # 0 is left for unsolicited frames
        self._transport.write(encode(command, session, self._seq, body), self.timeouts.command_s)
        return self._seq

    def _next_frame(self, wait: _Wait) -> Frame | None:
        """Next good frame before the deadline; None if ``wait.cancel`` got set first."""
        dropped_before = self._decoder.dropped_bytes
        while True:
            frame = self._decoder.next_frame()
            self.counters.dropped_bytes = self._decoder.dropped_bytes
            self.counters.bad_frames = self._decoder.bad_frames
            if frame is not None:
                return frame
            if wait.cancel is not None and wait.cancel.is_set():
                return None
            remaining = wait.deadline - time.monotonic()
            if remaining <= 0:
                self.counters.timeouts += 1
                waited = time.monotonic() - wait.started
                garbage = self._decoder.dropped_bytes - dropped_before
                if garbage:
                    raise CardTimeoutError(
                        f"card at {self.device} sent {garbage} bytes but no valid frame in "
                        f"{waited:.1f} s (not a voicebox card, or a garbled link?)")
                raise CardTimeoutError(f"card at {self.device} sent nothing for {waited:.1f} s")
            self._decoder.feed(self._transport.read_some(min(remaining, self.timeouts.poll_s)))

    def _request(
        self,
        command: Command,
        session: int,
        body: dict[str, Any] | None,
        expect: Reply,
        *,
        timeout_s: float | None = None,
    ) -> Frame:
        seq = self._send(command, session, body)
        wait = _Wait(time.monotonic() + (timeout_s or self.timeouts.command_s))
        while True:
            frame = self._next_frame(wait)
            assert frame is not None
            if frame.type == Reply.RESET_EVENT:
                self.counters.card_resets_seen += 1
                if session != NO_SESSION:
                    raise CardResetError(
                        f"card at {self.device} reset itself; session {session} lost"
                    )
                continue
            if frame.seq != seq:
                self.counters.stale_frames += 1
                continue
            if frame.type == Reply.ERROR:
                raise _remote(frame)
            if frame.type != expect:
                raise CardProtocolError(
                    f"card answered {command.name} with frame {frame.type:#x}, not {expect.name}"
                )
            return frame

    # -- commands --------------------------------------------------------------------

    def identify(self) -> CardIdentity:
        frame = self._request(Command.IDENTIFY, NO_SESSION, None, Reply.IDENTITY)
        return parse_identity(frame.body)

    def open_session(self) -> int:
        return self._request(Command.OPEN, NO_SESSION, None, Reply.OPENED).session

    def close_session(self, session: int) -> None:
        self._request(Command.CLOSE, session, None, Reply.CLOSED)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        body = {"messages": wire_messages(messages)}
        return int(self._request(Command.COUNT, NO_SESSION, body, Reply.COUNTED).body["tokens"])

    def prefill(
        self,
        session: int,
        messages: Sequence[ChatMessage],
        *,
        reserve_tokens: int,
        continuation: str = "",
        open_turn: bool = False,
    ) -> PrefillInfo:
        """Set the session's prompt; the card may evict old exchanges (PrefillInfo says).

        ``open_turn``: only warm the KV cache with the prompt cut after the last user
        message's words (the user is still speaking); no GENERATE may follow it.
        """
        body: dict[str, Any] = {
            "messages": wire_messages(messages),
            "reserve_tokens": reserve_tokens,
            "continuation": continuation,
        }
        if open_turn:
            body["open_turn"] = True
        # Prefill on an emulated card tokenizes on the host: allow the first-token budget.
        b = self._request(
            Command.PREFILL, session, body, Reply.PREFILLED, timeout_s=self.timeouts.first_token_s
        ).body
        return parse_prefilled(b)

    def score_next(
        self,
        session: int,
        messages: Sequence[ChatMessage],
        *,
        reserve_tokens: int,
        candidates: Sequence[str] = (),
        end_of_turn: bool = False,
        warm_reply: bool = False,
    ) -> Scored:
        """Next-token probabilities right after the last user message's words.

        The card evicts as PREFILL would for ``messages`` and ``reserve_tokens`` and keeps
        the scored prompt in the session's scoring sequence; ``warm_reply`` also puts the
        reply's prompt (bare words and header) in the reply's sequence, for the reply's
        PREFILL that follows. A malformed answer (wrong count, a probability outside 0..1
        or NaN) is a CardProtocolError.
        """
        body: dict[str, Any] = {
            "messages": wire_messages(messages),
            "reserve_tokens": reserve_tokens,
            "candidates": list(candidates),
            "end_of_turn": end_of_turn,
            "warm_reply": warm_reply,
        }
        b = self._request(
            Command.SCORE_NEXT, session, body, Reply.SCORED, timeout_s=self.timeouts.first_token_s
        ).body
        return parse_scored(b, len(candidates), end_of_turn)

    def generate(
        self, session: int, max_tokens: int, cancel: threading.Event
    ) -> Iterator[TokenPiece | StreamDone]:
        """Stream the reply: TokenPiece in order, then one StreamDone.

        Raises CardProtocolError if a token frame was lost (after cancelling the stream),
        CardTimeoutError if the card goes quiet, CardResetError if it resets itself.
        Stopping early (``cancel`` or closing the iterator) cancels the stream on the card.
        """
        seq = self._send(Command.GENERATE, session, {"max_tokens": max_tokens})
        expected, settled = 0, False
        try:
            while True:
                gap = self.timeouts.first_token_s if expected == 0 else self.timeouts.token_s
                # Checked before every frame, buffered ones too: the card may have sent
                # the whole reply already, and not one token may follow the host's cancel.
                frame = None if cancel.is_set() else self._next_frame(
                    _Wait(time.monotonic() + gap, cancel))
                if frame is None:  # cancelled by the host
                    done = self._abort(session, seq)
                    settled = True
                    if done is not None:
                        yield done
                    return
                if frame.type == Reply.RESET_EVENT:
                    self.counters.card_resets_seen += 1
                    settled = True
                    raise CardResetError(f"card at {self.device} reset itself mid-reply")
                if frame.seq != seq or frame.type == Reply.CANCELLED:
                    self.counters.stale_frames += frame.seq != seq
                    continue
                if frame.type == Reply.ERROR:
                    settled = True
                    raise _remote(frame)
                if frame.type == Reply.TOKEN:
                    index, text = frame.body.get("i"), frame.body.get("t")
                    if index != expected or not isinstance(text, str):
                        self.counters.lost_tokens += 1
                        raise CardProtocolError(
                            f"token stream broken: expected token {expected}, got {index!r}"
                        )
                    expected += 1
                    yield TokenPiece(index, text)
                elif frame.type == Reply.DONE:
                    settled = True
                    done = parse_done(frame.body)
                    if done.tokens != expected:
                        self.counters.lost_tokens += 1
                        raise CardProtocolError(
                            f"token stream broken: {done.tokens} tokens sent, {expected} arrived"
                        )
                    yield done
                    return
                else:
                    raise CardProtocolError(f"unexpected frame type {frame.type:#x} in a stream")
        except CardTimeoutError:
            settled = True  # a hung card does not answer CANCEL either; recovery resets it
            raise
        finally:
            if not settled:
                with contextlib.suppress(CardError):
                    self._abort(session, seq)

    def _abort(self, session: int, seq: int) -> StreamDone | None:
        """Cancel stream ``seq`` and drain it up to its DONE (None if the card stays quiet)."""
        self._send(Command.CANCEL, session)
        wait = _Wait(time.monotonic() + self.timeouts.command_s)
        with contextlib.suppress(CardTimeoutError):
            while True:
                frame = self._next_frame(wait)
                if frame is not None and frame.seq == seq and frame.type == Reply.DONE:
                    # The card may have finished before CANCEL reached it; to the host,
                    # which stopped reading, the stream was cancelled all the same.
                    return replace(parse_done(frame.body), finish="cancelled")
        return None

    def status(self) -> dict[str, Any]:
        return self._request(Command.STATUS, NO_SESSION, None, Reply.STATUS).body

    def reset(self) -> None:
        """RESET the card: every session on it is gone."""
        self.counters.resets += 1
        self._request(
            Command.RESET, NO_SESSION, None, Reply.RESET_DONE, timeout_s=self.timeouts.reset_s
        )

    def reconnect(self) -> None:
        """Close and reopen the device path (a fresh byte stream)."""
        self.counters.reconnects += 1
        with contextlib.suppress(OSError):
            self._transport.close()
        self._transport = open_transport(self.device)
        self._decoder = FrameDecoder()

    def recover(self) -> None:
        """Bring a card that timed out or dropped the link back: RESET, else reopen and RESET.

        CardError if the card still does not answer.
        """
        try:
            self.reset()
            return
        except (CardTimeoutError, CardLinkError, CardProtocolError) as exc:
            _LOGGER.warning("card reset failed (%s); reopening %s", exc, self.device)
        try:
            self.reconnect()
            self.reset()
        except CardError as exc:
            raise CardError(f"card at {self.device} does not recover: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._transport.close()


def _remote(frame: Frame) -> CardRemoteError:
    code = int(frame.body.get("code", 0))
    return CardRemoteError(code, error_name(code), str(frame.body.get("message", "")))
