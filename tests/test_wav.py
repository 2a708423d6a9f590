"""WAV reading: every sensible encoding converts; everything else is a one-line error."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voicebox.audio.wav import read_wav, write_wav
from voicebox.errors import BadAudioError


def _riff(fmt_tag: int, channels: int, rate: int, bits: int, payload: bytes,
          data_size: int | None = None) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align, align, bits)
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _tone(n: int = 1600) -> np.ndarray:
    return (0.5 * np.sin(np.arange(n) * 2 * np.pi * 440 / 16000)).astype(np.float32)


def test_roundtrip_16bit(tmp_path: Path) -> None:
    x = _tone()
    write_wav(tmp_path / "a.wav", x, 16000)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000
    assert np.allclose(x, y, atol=1e-4)


@pytest.mark.parametrize(
    ("tag", "bits", "encode"),
    [
        (1, 8, lambda x: (x * 127 + 128).astype(np.uint8).tobytes()),
        (1, 24, lambda x: b"".join(int(v * 8388607).to_bytes(3, "little", signed=True)
                                   for v in x)),
        (1, 32, lambda x: (x * 2147483647).astype("<i4").tobytes()),
        (3, 32, lambda x: x.astype("<f4").tobytes()),
        (3, 64, lambda x: x.astype("<f8").tobytes()),
    ],
)
def test_other_encodings_convert(tmp_path: Path, tag: int, bits: int, encode: object) -> None:
    x = _tone(800)
    path = tmp_path / "x.wav"
    path.write_bytes(_riff(tag, 1, 16000, bits, encode(x)))  # type: ignore[operator]
    y, rate = read_wav(path)
    assert rate == 16000 and y.dtype == np.float32
    assert np.allclose(x, y, atol=0.02)


def test_stereo_44k_mixes_down_and_keeps_rate(tmp_path: Path) -> None:
    left = _tone(4410)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "s.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes((stereo * 32767).astype("<i2").tobytes())
    y, rate = read_wav(path)
    assert rate == 44100 and y.shape == (4410,)
    assert np.allclose(y, left, atol=1e-3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, I am text, not audio", "not a WAV"),
        (b"", "not a WAV"),
        (_riff(1, 1, 16000, 16, b"\x00\x01" * 100, data_size=32000), "truncated"),
        (_riff(1, 1, 16000, 16, b""), "empty"),
        (_riff(2, 1, 16000, 4, b"\x00" * 64), "unsupported WAV encoding"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "no format chunk"),
        (_riff(1, 1, 1, 16, b"\x00\x01" * 100), "sample rate 1 Hz is not supported"),
        (_riff(1, 1, 1_000_000, 16, b"\x00\x01" * 100), "1000000 Hz is not supported"),
    ],
)
def test_bad_files_raise_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(BadAudioError, match=message) as info:
        read_wav(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadAudioError, match="no such file"):
        read_wav(tmp_path / "nope.wav")
