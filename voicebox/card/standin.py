"""Functional stand-in models for the emulated card, and the rule that admits them."""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from voicebox.card.errors import StandInError
from voicebox.card.profile import FirmwareProfile
from voicebox.engines.llama_llm import LlamaEngine, check_gguf
from voicebox.engines.protocols import ChatMessage

_LOGGER = logging.getLogger(__name__)


class StandInModel(Protocol):
    """What the emulated firmware needs from the model that makes its text."""

    file_name: str
    """Model file name (matched against the profile's stand-in patterns)."""
    architecture: str
    """GGUF ``general.architecture`` of the model."""

    def render(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        """Prompt text with the assistant header, and the stop strings."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens parsed)."""
        ...

    def stream_prompt(
        self, prompt: str, stop: list[str], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        """Continue ``prompt``, one text piece per generated token."""
        ...

    def evaluate(self, prompt: str, *, scoring: bool = False) -> None:
        """Put ``prompt`` in the KV cache (re-using its cached prefix), generating nothing;
        ``scoring``: in the cache ``next_token_probabilities`` reads, not the reply's."""
        ...

    def next_token_probabilities(
        self, prompt: str, token_ids: Sequence[int], *, warm_reply: str = ""
    ) -> list[float]:
        """Evaluate ``prompt`` as ``evaluate(scoring=True)`` does; the probability of each
        id coming next. ``warm_reply``: a prompt to put in the reply's cache meanwhile, as
        ``evaluate(warm_reply)`` would."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


def check_stand_in(profile: FirmwareProfile, file_name: str, architecture: str) -> None:
    """StandInError unless the file is one of the profile's functional stand-ins.

    The rule: the file name matches a pattern in ``model.stand_in.files`` and the GGUF
    architecture is in ``model.stand_in.architectures``. A card serves one model only.
    """
    spec = profile.model.stand_in
    if not spec.accepts_file(file_name):
        raise StandInError(
            f"card {profile.name} serves only {profile.model.name}; {file_name} is not an "
            f"accepted stand-in (model.stand_in.files: {', '.join(spec.files)})"
        )
    if architecture not in spec.architectures:
        raise StandInError(
            f"card {profile.name} serves only {profile.model.name}; {file_name} has architecture "
            f"{architecture!r}, not one of {', '.join(spec.architectures)}"
        )


class LlamaStandIn:
    """A GGUF model on llama.cpp as the card's functional stand-in."""

    def __init__(
        self, model_path: Path, *, context_tokens: int, threads: int | None = None
    ) -> None:
        check_gguf(model_path)
        meta = read_gguf_metadata(model_path, ("general.architecture",))
        self.file_name = model_path.name
        self.architecture = str(meta.get("general.architecture", "unknown"))
        self.model_path = model_path
        self._context_tokens = context_tokens
        self._threads = threads
        self._engine: LlamaEngine | None = None

    def load(self) -> None:
        """Load the weights (after the profile check, so a refused model is never loaded)."""
        if self._engine is None:
            self._engine = LlamaEngine(
                self.model_path, context_tokens=self._context_tokens, threads=self._threads
            )

    def _loaded(self) -> LlamaEngine:
        if self._engine is None:
            self.load()
        assert self._engine is not None
        return self._engine

    def render(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        return self._loaded().render(messages)

    def tokenize(self, text: str) -> list[int]:
        return self._loaded().tokenize(text)

    def stream_prompt(
        self, prompt: str, stop: list[str], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        return self._loaded().stream_prompt(prompt, stop, max_tokens=max_tokens, cancel=cancel)

    def evaluate(self, prompt: str, *, scoring: bool = False) -> None:
        engine = self._loaded()
        tokens = engine.tokenize(prompt)
        if not tokens:
            return
        if scoring:
            engine.warm_scoring(tokens)
        else:
            # The engine's own prefix-cached evaluation, so the following stream_prompt
            # (llama.cpp's prefix match) prefills only the tail.
            engine._eval_cached(tokens)

    def next_token_probabilities(
        self, prompt: str, token_ids: Sequence[int], *, warm_reply: str = ""
    ) -> list[float]:
        engine = self._loaded()
        tokens = engine.tokenize(prompt)
        if not tokens:
            raise StandInError("cannot score an empty prompt")
        warm = engine.tokenize(warm_reply) if warm_reply else []
        probs = engine.next_token_probabilities(tokens, warm_reply=warm)
        return [float(probs[t]) for t in token_ids]

    @property
    def engine(self) -> LlamaEngine:
        """The loaded llama.cpp engine (to compare the card with direct calls)."""
        return self._loaded()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


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


def read_gguf_metadata(path: Path, keys: Sequence[str]) -> dict[str, object]:
    """Scalar and string values of ``keys`` from a GGUF header, without loading the model."""
    wanted = set(keys)
    found: dict[str, object] = {}
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise StandInError(f"not a GGUF file: {path}")
            (version,) = struct.unpack("<I", _read(f, 4))
            if version < 2:
                raise StandInError(f"GGUF version {version} is too old: {path}")
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
        raise StandInError(f"cannot read GGUF metadata of {path}: {exc}") from exc
    return found


def _read(f: BinaryIO, n: int) -> bytes:
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
