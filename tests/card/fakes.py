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
END = "<|end|>"
OPEN_WORDS = frozenset({"to", "the", "and", "a", "of", "if", "but"})
"""Words after which the fake thinks a sentence cannot end."""


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
        """Prompts given to stream_prompt, in order."""
        self.evaluated: list[str] = []
        """Prompts given to evaluate and next_token_probabilities, in order."""
        self.forced: list[list[float]] = []
        """Answers next_token_probabilities gives (one per call, first first) before its own."""

    def render(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        body = "".join(f"<|{m.role}|> {m.content} {END} " for m in messages)
        return body + HEADER, [END]

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

    def evaluate(self, prompt: str, *, scoring: bool = False) -> None:
        self.evaluated.append(prompt)

    def next_token_probabilities(
        self, prompt: str, token_ids: Sequence[int], *, warm_reply: str = ""
    ) -> list[float]:
        """Deterministic: a sentence may end after any word but a few function words."""
        if warm_reply:
            self.evaluated.append(warm_reply)
        self.evaluated.append(prompt)
        if self.forced:
            return self.forced.pop(0)
        last_word = prompt.split()[-1].lower().lstrip('"')  # the score quotes the words
        table = fake_next_token_table(finished=last_word not in OPEN_WORDS)
        by_id = {self.tokenize(text)[0]: p for text, p in table.items()}
        return [by_id.get(t, 0.0) for t in token_ids]

    def close(self) -> None:
        pass


def fake_next_token_table(*, finished: bool) -> dict[str, float]:
    """The fake's next-token probabilities of a few tokens (every other token: 0)."""
    if finished:
        return {".": 0.5, "?": 0.1, "!": 0.05, END: 0.2, ",": 0.05, "and": 0.05}
    return {".": 0.02, "?": 0.01, "!": 0.0, END: 0.01, ",": 0.1, "and": 0.2}


def fake_end_of_turn(*, finished: bool) -> float:
    """What the card should answer for the fake's end-of-turn set."""
    table = fake_next_token_table(finished=finished)
    return table["."] + table["?"] + table["!"] + table[END]


def full_reply() -> str:
    return "".join(" " + w for w in REPLY_WORDS)
