"""Functional stand-in models for the emulated card, and the rule that admits them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from voicebox.card.errors import StandInError
from voicebox.card.profile import FirmwareProfile
from voicebox.engines import gguf
from voicebox.engines.llama_llm import LlamaEngine, check_gguf
from voicebox.engines.protocols import ChatMessage
from voicebox.engines.requantize import DEFAULT_TARGET
from voicebox.errors import ModelError

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
        self,
        model_path: Path,
        *,
        context_tokens: int,
        threads: int | None = None,
        requantize: str | None = DEFAULT_TARGET,
        burst_threads: int | None = None,
    ) -> None:
        check_gguf(model_path)
        meta = read_gguf_metadata(model_path, ("general.architecture",))
        self.file_name = model_path.name
        self.architecture = str(meta.get("general.architecture", "unknown"))
        self.model_path = model_path
        self._context_tokens = context_tokens
        self._threads = threads
        self._requantize = requantize
        self._burst_threads = burst_threads
        self._engine: LlamaEngine | None = None

    def load(self) -> None:
        """Load the weights (after the profile check, so a refused model is never loaded)."""
        if self._engine is None:
            self._engine = LlamaEngine(
                self.model_path, context_tokens=self._context_tokens, threads=self._threads,
                requantize=self._requantize, burst_threads=self._burst_threads,
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


def read_gguf_metadata(path: Path, keys: Sequence[str]) -> dict[str, object]:
    """Scalar and string values of ``keys`` from a GGUF header (StandInError if unreadable)."""
    try:
        return gguf.read_metadata(path, keys)
    except ModelError as exc:
        raise StandInError(str(exc)) from exc
