"""A fake functional stand-in: deterministic words, resumable, instant (or slowed down)."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator, Sequence

from voicebox.engines.protocols import ChatMessage

REPLY_WORDS = [
    "The",
    "card",
    "says",
    "hello",
    ",",
    "and",
    "every",
    "word",
    "of",
    "this",
    "reply",
    "arrives",
    "in",
    "order",
    ".",
]
HEADER = "<|assistant|>"


class FakeStandIn:
    """Implements StandInModel: one token per word, a fixed reply, continuation-aware."""

    def __init__(
        self,
        *,
        file_name: str = "SmolLM2-135M-Instruct.Q4_1.gguf",
        architecture: str = "llama",
        token_delay_s: float = 0.0,
    ) -> None:
        self.file_name = file_name
        self.architecture = architecture
        self.token_delay_s = token_delay_s
        self.prompts: list[str] = []

    def render(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        body = "".join(f"<|{m.role}|> {m.content} <|end|> " for m in messages)
        return body + HEADER, ["<|end|>"]

    def tokenize(self, text: str) -> list[int]:
        return [zlib.crc32(w.encode()) & 0xFFFF for w in text.split()]

    def stream_prompt(
        self, prompt: str, stop: list[str], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        self.prompts.append(prompt)
        done = len(prompt.rsplit(HEADER, 1)[-1].split())  # words of a resumed reply
        for word in REPLY_WORDS[done : done + max_tokens]:
            if cancel.is_set():
                return
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
            yield " " + word

    def close(self) -> None:
        pass


def full_reply() -> str:
    return "".join(" " + w for w in REPLY_WORDS)
