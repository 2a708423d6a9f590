"""Framing: round trip, and the decoder skipping garbage, corrupt and truncated frames."""

from __future__ import annotations

import pytest

from voicebox.card.errors import CardProtocolError
from voicebox.card.protocol import (
    MAGIC,
    MAX_PAYLOAD_BYTES,
    Command,
    FrameDecoder,
    Reply,
    encode,
)


def _decode_all(
    data: bytes, chunk: int | None = None
) -> tuple[list[tuple[int, int, dict[str, object]]], FrameDecoder]:
    dec = FrameDecoder()
    out = []
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        dec.feed(data[start : start + step])
        while (frame := dec.next_frame()) is not None:
            out.append((frame.type, frame.seq, frame.body))
    return out, dec


def test_round_trip_byte_by_byte() -> None:
    data = encode(Command.PREFILL, 7, 42, {"messages": [{"role": "user", "content": "héllo"}]})
    data += encode(Reply.TOKEN, 7, 43, {"i": 0, "t": " hi"})
    frames, dec = _decode_all(data, chunk=1)
    assert frames == [
        (Command.PREFILL, 42, {"messages": [{"role": "user", "content": "héllo"}]}),
        (Reply.TOKEN, 43, {"i": 0, "t": " hi"}),
    ]
    assert dec.dropped_bytes == 0


def test_garbage_with_false_magic_is_skipped() -> None:
    good = encode(Reply.TOKEN, 1, 5, {"i": 3, "t": "x"})
    junk = b"\x00\xff" + MAGIC + b"\x01\x85\x00\x01\x00\x00\x00\x05\x00\x00\x00\x02{}zzzz" + b"\x13"
    frames, dec = _decode_all(junk + good + junk + good)
    assert [f[2] for f in frames] == [{"i": 3, "t": "x"}] * 2
    assert dec.dropped_bytes > 0 and dec.bad_frames > 0


def test_corrupt_payload_fails_crc() -> None:
    good = bytearray(encode(Reply.TOKEN, 1, 5, {"i": 3, "t": "abc"}))
    good[-6] ^= 0x20  # flip a bit inside the payload
    frames, dec = _decode_all(bytes(good) + encode(Reply.DONE, 1, 5, {"tokens": 4}))
    assert [f[0] for f in frames] == [Reply.DONE]
    assert dec.bad_frames >= 1


def test_truncated_frame_then_good_frames() -> None:
    lost = encode(Reply.TOKEN, 1, 5, {"i": 1, "t": "lost"})
    tail = [encode(Reply.TOKEN, 1, 5, {"i": i, "t": "ok"}) for i in (2, 3)]
    frames, _ = _decode_all(lost[: len(lost) // 2] + b"".join(tail))
    assert [f[2]["i"] for f in frames] == [2, 3]


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(CardProtocolError):
        encode(Command.PREFILL, 1, 1, {"x": "a" * (MAX_PAYLOAD_BYTES + 1)})
