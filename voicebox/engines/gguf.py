"""GGUF header fields, read without loading the model."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from voicebox.errors import ModelError

MAGIC = b"GGUF"
"""The first four bytes of every GGUF file."""

_GGUF_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9


def read_metadata(path: Path, keys: Sequence[str]) -> dict[str, object]:
    """Scalar and string values of ``keys`` from a GGUF header, without loading the model."""
    wanted = set(keys)
    found: dict[str, object] = {}
    try:
        with path.open("rb") as f:
            if f.read(4) != MAGIC:
                raise ModelError(f"not a GGUF file: {path}")
            (version,) = struct.unpack("<I", _read(f, 4))
            if version < 2:
                raise ModelError(f"GGUF version {version} is too old: {path}")
            _tensors, kv_count = struct.unpack("<QQ", _read(f, 16))
            for _ in range(kv_count):
                key = _read_string(f)
                (vtype,) = struct.unpack("<I", _read(f, 4))
                value = _read_value(f, vtype, keep=key in wanted)
                if key in wanted:
                    found[key] = value
                    if len(found) == len(wanted):
                        break
    except (OSError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read GGUF metadata of {path}: {exc}") from exc
    return found


def _read(f: BinaryIO, n: int) -> bytes:
    if n > os.fstat(f.fileno()).st_size - f.tell():  # a corrupt length: never allocate it
        raise struct.error("unexpected end of file")
    data = f.read(n)
    if len(data) != n:
        raise struct.error("unexpected end of file")
    return data


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    return _read(f, n).decode("utf-8")


def _read_value(f: BinaryIO, vtype: int, *, keep: bool) -> object:
    if vtype == _GGUF_STRING:
        return _read_string(f)
    if vtype == _GGUF_ARRAY:
        (item_type,) = struct.unpack("<I", _read(f, 4))
        (count,) = struct.unpack("<Q", _read(f, 8))
        if item_type in _GGUF_SCALAR and not keep:
            f.seek(struct.calcsize(_GGUF_SCALAR[item_type]) * count, 1)
            return None
        items = [_read_value(f, item_type, keep=keep) for _ in range(count)]
        return items if keep else None
    fmt = _GGUF_SCALAR.get(vtype)
    if fmt is None:
        raise struct.error(f"unknown GGUF value type {vtype}")
    (value,) = struct.unpack(fmt, _read(f, struct.calcsize(fmt)))
    return value
