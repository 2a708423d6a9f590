"""Short conversation memory that always fits the model's context window."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from voicebox.engines.protocols import ChatMessage


class Conversation:
    """The system prompt plus recent exchanges; the oldest exchanges go first.

    The system prompt stays at the front unchanged so its KV cache is re-used
    every turn.
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

    def prompt(self, user_text: str) -> list[ChatMessage]:
        """Messages for a reply to ``user_text``, trimmed to fit the context."""
        user = ChatMessage("user", user_text)
        while True:
            messages = [self._system, *self.history, user]
            if not self.history or (
                len(self.history) <= 2 * self._max and self._count(messages) <= self._budget
            ):
                break
            self._drop_oldest()
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
        self.history.append(ChatMessage("user", user_text))
        if reply_text:
            self.history.append(ChatMessage("assistant", reply_text))

    def _drop_oldest(self) -> None:
        self.history.pop(0)
        while self.history and self.history[0].role != "user":
            self.history.pop(0)
