"""The host-card wire protocol: framing, commands, replies, error codes (docs/card-protocol.md)."""

from __future__ import annotations

import enum
import json
import logging
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voicebox.card.errors import CardProtocolError
from voicebox.engines.protocols import ChatMessage

_LOGGER = logging.getLogger(__name__)

MAGIC = b"HCv1"
"""First four bytes of every frame; the reader resynchronises on them."""
VERSION = 1
HEADER = struct.Struct(">4sBBHII")
"""magic, version, type, session, seq, payload length (big-endian, 16 bytes)."""
CRC = struct.Struct(">I")
"""CRC-32 (zlib) of header and payload, after the payload."""
MAX_PAYLOAD_BYTES = 64 * 1024
NO_SESSION = 0
"""Session id of frames that concern the whole card."""


class Command(enum.IntEnum):
    """Frames the host sends."""

    IDENTIFY = 0x01
    OPEN = 0x02
    CLOSE = 0x03
    PREFILL = 0x04
    GENERATE = 0x05
    CANCEL = 0x06
    RESET = 0x07
    STATUS = 0x08
    COUNT = 0x09
    SCORE_NEXT = 0x0A


class Reply(enum.IntEnum):
    """Frames the card sends: the answer to a command is ``command | 0x80``."""

    IDENTITY = 0x81
    OPENED = 0x82
    CLOSED = 0x83
    PREFILLED = 0x84
    TOKEN = 0x85
    """One streamed text piece of a GENERATE; zero or more, then DONE."""
    CANCELLED = 0x86
    RESET_DONE = 0x87
    STATUS = 0x88
    COUNTED = 0x89
    SCORED = 0x8A
    """Next-token probabilities at the end of the user's words (SCORE_NEXT)."""
    DONE = 0x90
    """End of a GENERATE stream, with the reply's timing and energy."""
    RESET_EVENT = 0xA0
    """Unsolicited: the card reset itself; every session is gone."""
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    """Codes in ERROR frames."""

    BAD_FRAME = 1
    UNKNOWN_COMMAND = 2
    BAD_REQUEST = 3
    NO_SESSION = 4
    SESSIONS_EXHAUSTED = 5
    CONTEXT_OVERFLOW = 6
    BUSY = 7
    NOT_PREFILLED = 8
    INTERNAL = 9


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame; ``body`` is the JSON payload (TOKEN frames too)."""

    type: int
    session: int
    seq: int
    body: dict[str, Any]


def encode(type_: int, session: int, seq: int, body: dict[str, Any] | None = None) -> bytes:
    """Bytes of one frame."""
    payload = json.dumps(body or {}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CardProtocolError(f"frame payload too large: {len(payload)} bytes")
    header = HEADER.pack(MAGIC, VERSION, type_, session, seq & 0xFFFFFFFF, len(payload))
    return header + payload + CRC.pack(zlib.crc32(header + payload))


class FrameDecoder:
    """Turns a byte stream into frames, skipping garbage and corrupt or truncated frames.

    A frame is accepted only if the magic, version, length bound and CRC all check;
    otherwise the decoder drops one byte and scans for the next magic.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped_bytes = 0
        """Bytes skipped while resynchronising (garbage, bad frames)."""
        self.bad_frames = 0
        """Frames that had a magic but failed the CRC, version or JSON check."""

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next good frame in the buffer, or None if more bytes are needed."""
        while True:
            start = self._buf.find(MAGIC)
            if start < 0:
                keep = len(MAGIC) - 1  # a magic may straddle two reads
                self._drop(max(0, len(self._buf) - keep))
                return None
            self._drop(start)
            if len(self._buf) < HEADER.size:
                return None
            _, version, type_, session, seq, length = HEADER.unpack_from(self._buf)
            if version != VERSION or length > MAX_PAYLOAD_BYTES:
                self._reject()
                continue
            end = HEADER.size + length + CRC.size
            if len(self._buf) < end:
                # A truncated frame is followed by the next one; if the next magic
                # shows up inside this frame's span and the span fails its CRC once
                # complete, the reject below resyncs on it.
                return None
            (crc,) = CRC.unpack_from(self._buf, HEADER.size + length)
            if zlib.crc32(self._buf[: HEADER.size + length]) != crc:
                self._reject()
                continue
            try:
                body = json.loads(self._buf[HEADER.size : HEADER.size + length].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._reject()
                continue
            if not isinstance(body, dict):
                self._reject()
                continue
            del self._buf[:end]
            return Frame(type_, session, seq, body)

    def _drop(self, n: int) -> None:
        if n:
            self.dropped_bytes += n
            del self._buf[:n]

    def _reject(self) -> None:
        self.bad_frames += 1
        self._drop(1)


def error_name(code: int) -> str:
    """Symbolic name of an error code (``UNKNOWN`` if not in this protocol version)."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def wire_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Messages as they travel in PREFILL, SCORE_NEXT and COUNT payloads."""
    return [{"role": m.role, "content": m.content} for m in messages]


def parse_messages(body: dict[str, Any]) -> list[ChatMessage]:
    """The ``messages`` of a request payload; TypeError/ValueError if malformed."""
    raw = body["messages"]
    if not isinstance(raw, list):
        raise TypeError("messages must be a list")
    out = []
    for m in raw:
        role, content = m["role"], m["content"]
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValueError(f"bad message {m!r}")
        out.append(ChatMessage(role, content))
    return out
