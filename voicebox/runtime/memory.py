"""Short conversation memory that always fits the model's context window."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from voicebox.engines.protocols import ChatMessage


class Conversation:
    """The system prompt plus recent exchanges; the oldest exchanges go first.

    The system prompt stays at the front unchanged so its KV cache is re-used
    every turn. ``prompt`` runs on the LLM's thread (counting tokens may be a round trip
    to a card) while ``add`` runs on the event loop: the prompt is built from a snapshot
    of the history, and only what it trimmed is removed, under a lock held for list
    operations only.
    """

    def __init__(
        self,
        system_prompt: str,
        count_tokens: Callable[[Sequence[ChatMessage]], int],
        context_tokens: int,
        reply_tokens: int,
        max_exchanges: int = 8,
    ) -> None:
        self._system = ChatMessage("system", system_prompt)
        self._count = count_tokens
        self._budget = context_tokens - reply_tokens
        self._max = max_exchanges
        self.history: list[ChatMessage] = []
        self._lock = threading.Lock()

    def prompt(self, user_text: str) -> list[ChatMessage]:
        """Messages for a reply to ``user_text``, trimmed to fit the context."""
        user = ChatMessage("user", user_text)
        with self._lock:
            history = list(self.history)
        start = 0
        while True:
            kept = history[start:]
            messages = [self._system, *kept, user]
            if not kept or (len(kept) <= 2 * self._max and self._count(messages) <= self._budget):
                break
            start = _next_exchange(history, start)
        if start:
            with self._lock:
                if self.history[:start] == history[:start]:
                    del self.history[:start]
        if self._count(messages) > self._budget:
            # One utterance longer than the context: keep its end, the freshest words.
            words = user_text.split()
            while len(words) > 1 and self._count([self._system, user]) > self._budget:
                words = words[len(words) // 4 or 1 :]
                user = ChatMessage("user", " ".join(words))
            messages = [self._system, user]
        return messages

    def add(self, user_text: str, reply_text: str) -> None:
        """Record one exchange; an empty reply (interrupted before any audio) keeps the user."""
        exchange = [ChatMessage("user", user_text)]
        if reply_text:
            exchange.append(ChatMessage("assistant", reply_text))
        with self._lock:
            self.history.extend(exchange)


def _next_exchange(history: list[ChatMessage], start: int) -> int:
    """Index of the first user message after the one at ``start`` (the oldest dropped)."""
    i = start + 1
    while i < len(history) and history[i].role != "user":
        i += 1
    return i
