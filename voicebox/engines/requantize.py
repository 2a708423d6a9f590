"""Weights llama.cpp evaluates prompts fast with: a Q4_1 GGUF requantized to Q8_0 once, cached.

llama.cpp evaluates a prompt batch through llamafile's sgemm kernels, which exist for Q8_0,
Q4_0 and Q5_0 weights (x86 and ARM) but not for Q4_1 or Q5_1: those fall back to one dot
product per row. The packaged SmolLM2-135M is Q4_1. On one thread here 32 prompt tokens
took 217 ms as shipped and 115 ms requantized to Q8_0, and its end-of-turn scores moved by
less than 0.04 (BENCHMARKS.md section 9). llama.cpp repacks some weight types in memory
while it loads, but not from Q4_1, so the conversion is made once with
``llama_model_quantize`` (about a second for 135M weights) and kept in a cache folder,
keyed by the source file and the llama.cpp version. Anything else loads as it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from voicebox.engines import gguf
from voicebox.errors import ModelError

_LOGGER = logging.getLogger(__name__)

CACHE_ENV = "VOICEBOX_CACHE_DIR"
"""Where derived files go; default ``$XDG_CACHE_HOME/voicebox`` (``~/.cache/voicebox``)."""

SLOW_PROMPT_TYPES = {3: "Q4_1", 9: "Q5_1"}
"""``general.file_type`` values (llama_ftype) with no batched prompt kernel."""

TARGETS = {"Q8_0": 7}
"""Types a slow-prompt model may be requantized to, with their llama_ftype."""

DEFAULT_TARGET = "Q8_0"
"""What the engines requantize to unless told otherwise (``[llm] requantize``)."""

_QUANT_TAG = re.compile(r"[.\-_](?:[QqFf]\d+(?:_[A-Za-z0-9]+)*|BF16|bf16)$")


def cache_dir() -> Path:
    """The folder voicebox keeps derived model files in."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "voicebox"


def prompt_fast_weights(source: Path, target: str | None = DEFAULT_TARGET) -> Path:
    """The file to load for ``source``: its cached ``target`` requantization if its weight
    type has no batched prompt kernel (made now if missing), else ``source`` itself.

    ``target`` None loads every file as it is. A conversion that cannot be made (no space,
    a read-only cache, a quantizer error) is logged and ``source`` is loaded instead: the
    same model, slower prompts.
    """
    if target is None:
        return source
    if target not in TARGETS:
        raise ModelError(f"cannot requantize to {target!r}; known: {', '.join(TARGETS)}")
    try:
        meta = gguf.read_metadata(source, ("general.file_type",))
    except ModelError:
        return source  # llama.cpp names what is wrong with it when it loads
    file_type = meta.get("general.file_type")
    if file_type not in SLOW_PROMPT_TYPES:
        return source
    derived = derived_path(source, target)
    if derived.is_file():
        return derived
    try:
        _quantize(source, derived, TARGETS[target])
    except (OSError, ModelError) as exc:
        _LOGGER.warning("loading %s as it is (%s weights, slower prompts): %s",
                        source, SLOW_PROMPT_TYPES[file_type], exc)
        return source
    _LOGGER.info("requantized %s (%s) to %s: %s", source.name,
                 SLOW_PROMPT_TYPES[file_type], target, derived)
    return derived


def derived_path(source: Path, target: str) -> Path:
    """Where the ``target`` requantization of ``source`` is cached.

    The folder is keyed by the source's resolved path, size and modification time and by
    the llama.cpp version, so a replaced file or another quantizer makes a new one. The
    name keeps the source's stem (firmware profiles admit stand-ins by name).
    """
    import llama_cpp

    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{llama_cpp.__version__}"
    folder = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = _QUANT_TAG.sub("", source.stem)
    return cache_dir() / "requantized" / folder / f"{stem}.{target}.gguf"


def _quantize(source: Path, dest: Path, ftype: int) -> None:
    import llama_cpp

    from voicebox.engines.llama_llm import quiet_stderr  # it imports this module

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 1
    try:
        with quiet_stderr():  # the quantizer prints every tensor
            status = llama_cpp.llama_model_quantize(
                str(source).encode(), str(part).encode(), params)
        if status != 0 or not part.is_file():
            raise ModelError(f"llama_model_quantize returned {status}")
        os.replace(part, dest)  # atomic: a reader sees no file or a whole one
    finally:
        part.unlink(missing_ok=True)
