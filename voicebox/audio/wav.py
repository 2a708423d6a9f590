"""Read any sensible WAV as mono float32 (with one-line errors for the rest); write 16-bit PCM."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np

from voicebox.engines.protocols import FloatAudio
from voicebox.errors import BadAudioError

MIN_RATE_HZ = 4_000
"""Half the telephone rate: below it no speech is intelligible."""
MAX_RATE_HZ = 384_000
"""The fastest rate sound cards record at; the resampler takes up to 256x its output."""
_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


def read_wav(path: Path) -> tuple[FloatAudio, int]:
    """Mono float32 samples and the sample rate of a WAV file.

    Accepts 8/16/24/32-bit PCM and 32/64-bit float, any channel count (mixed down)
    and any rate. Raises BadAudioError for anything that is not a complete WAV.
    """
    if path.exists() and not path.is_file() and not path.is_dir():
        raise BadAudioError(f"{path}: not a regular file (a device or a pipe?)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadAudioError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadAudioError(f"{path}: is a directory, not a WAV file") from None
    except OSError as exc:
        raise BadAudioError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise BadAudioError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(path, data[body : body + size])
        elif chunk_id == b"data":
            if fmt is None:
                raise BadAudioError(f"{path}: WAV data chunk comes before its format chunk")
            available = len(data) - body
            if size > available and size != 0xFFFFFFFF:
                raise BadAudioError(
                    f"{path}: truncated WAV: header promises {size} bytes of audio, "
                    f"file holds {available}"
                )
            return _decode(path, data[body : body + min(size, available)], fmt)
        pos = body + size + (size & 1)
    if fmt is None:
        raise BadAudioError(f"{path}: WAV has no format chunk (truncated?)")
    raise BadAudioError(f"{path}: WAV has no data chunk (truncated or empty)")


def _parse_fmt(path: Path, body: bytes) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise BadAudioError(f"{path}: WAV format chunk is truncated")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE and len(body) >= 26:
        (tag,) = struct.unpack_from("<H", body, 24)
    if tag not in (_PCM, _FLOAT):
        raise BadAudioError(
            f"{path}: unsupported WAV encoding (format tag {tag}); use PCM or float"
        )
    if channels < 1 or rate < 1:
        raise BadAudioError(f"{path}: WAV header has {channels} channels at {rate} Hz")
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise BadAudioError(f"{path}: sample rate {rate} Hz is not supported "
                            f"({MIN_RATE_HZ}-{MAX_RATE_HZ} Hz)")
    if (tag == _PCM and bits not in (8, 16, 24, 32)) or (tag == _FLOAT and bits not in (32, 64)):
        raise BadAudioError(f"{path}: unsupported WAV sample size: {bits}-bit")
    return tag, channels, rate, bits


def _decode(path: Path, raw: bytes, fmt: tuple[int, int, int, int]) -> tuple[FloatAudio, int]:
    tag, channels, rate, bits = fmt
    width = bits // 8
    frames = len(raw) // (width * channels)
    if frames == 0:
        raise BadAudioError(f"{path}: WAV holds no audio (empty)")
    raw = raw[: frames * width * channels]
    if tag == _FLOAT:
        x = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    elif bits == 8:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    else:
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    mono = x.reshape(frames, channels).mean(axis=1, dtype=np.float32)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False), rate


def write_wav(path: Path, audio: FloatAudio, sample_rate_hz: int) -> None:
    """Write mono float audio as 16-bit PCM (BadAudioError if it cannot be written)."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    try:
        with path.open("wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sample_rate_hz)
            w.writeframes(pcm.tobytes())
    except OSError as exc:
        raise BadAudioError(f"{path}: cannot write: {exc.strerror or exc}") from None
