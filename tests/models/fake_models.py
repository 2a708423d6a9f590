"""Tiny stand-in model files and packages with the right headers, and catalogues naming them."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

CT2_BIN = struct.pack("<IH", 6, 12) + b"WhisperSpec\0" + b"\1" * 500
GGUF = b"GGUF" + struct.pack("<I", 3) + b"\2" * 500
ONNX = b"\x08\x08\x12\x07pytorch" + b"\3" * 500
PIPER_JSON = json.dumps({"audio": {"sample_rate": 22050}}).encode()
CONFIG_JSON = b'{"lang_ids": []}'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_package(site: Path, module: str, files: dict[str, bytes]) -> Path:
    """An importable (but never imported) package folder holding ``files``."""
    root = site / module
    root.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("raise ImportError('model packages are never imported')\n")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def make_default_packages(site: Path) -> None:
    """Fake packages for the four defaults of :data:`DEFAULTS_TOML`."""
    make_package(site, "fake_asr", {"model/model.bin": CT2_BIN, "model/config.json": CONFIG_JSON})
    make_package(site, "fake_llm", {"tiny.gguf": GGUF})
    make_package(site, "fake_tts", {"data/v.onnx": ONNX, "data/v.onnx.json": PIPER_JSON})
    make_package(site, "fake_vad", {"assets/vad.onnx": ONNX})


def _file(path: str, data: bytes, url: str | None = None) -> str:
    fields = [f'path = "{path}"', f"size_bytes = {len(data)}", f'sha256 = "{sha(data)}"']
    if url is not None:
        fields.insert(1, f'url = "{url}"')
    return "{ " + ", ".join(fields) + " }"


DEFAULTS_TOML = f"""
[[model]]
name = "asr-default"
kind = "asr"
format = "ctranslate2"
default = true
description = "fake whisper"
main = "."
package = {{ module = "fake_asr", folder = "model", install = "pip install fake-asr" }}
file = [{_file("model.bin", CT2_BIN)}, {_file("config.json", CONFIG_JSON)}]

[[model]]
name = "llm-default"
kind = "llm"
format = "gguf"
default = true
description = "fake llm"
main = "tiny.gguf"
package = {{ module = "fake_llm", folder = "", install = "pip install fake-llm" }}
file = [{_file("tiny.gguf", GGUF)}]

[[model]]
name = "tts-default"
kind = "tts"
format = "piper"
default = true
description = "fake voice"
main = "v.onnx"
package = {{ module = "fake_tts", folder = "data", install = "pip install fake-tts" }}
file = [{_file("v.onnx", ONNX)}, {_file("v.onnx.json", PIPER_JSON)}]

[[model]]
name = "vad-default"
kind = "vad"
format = "onnx"
default = true
description = "fake vad"
main = "vad.onnx"
package = {{ module = "fake_vad", folder = "assets", install = "pip install fake-vad" }}
file = [{_file("vad.onnx", ONNX)}]
"""


def hub_entry(name: str, base_url: str, *, pinned: bool = True) -> str:
    """A one-file GGUF hub model served at ``base_url/NAME.gguf``."""
    spec = _file(f"{name}.gguf", GGUF, f"{base_url}/{name}.gguf")
    if not pinned:
        spec = f'{{ path = "{name}.gguf", url = "{base_url}/{name}.gguf" }}'
    return f"""
[[model]]
name = "{name}"
kind = "llm"
format = "gguf"
description = "fake hub llm"
main = "{name}.gguf"
file = [{spec}]
"""


def write_catalogue(path: Path, extra: str = "") -> Path:
    path.write_text(DEFAULTS_TOML + extra, encoding="utf-8")
    return path
