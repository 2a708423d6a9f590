"""Split a token stream into speakable clauses so TTS can start before the reply is done."""

from __future__ import annotations

import re

_END = re.compile(r"[.!?;:](?=\s)|\n")
_SOFT = re.compile(r",(?=\s)")
_WORD_END = re.compile(r"\S+(?=\s)")
_PHRASE_STARTS = frozenset(
    [
        "who",
        "which",
        "that",
        "and",
        "but",
        "or",
        "because",
        "so",
        "when",
        "while",
        "if",
        "to",
        "for",
        "with",
        "about",
        "as",
        "than",
        "where",
        "since",
        "although",
        "though",
        "until",
    ]
)
_UNSPEAKABLE = re.compile(r"[*_#`~<>\[\]{}|]|[\U0001F000-\U0001FAFF\u2600-\u27BF]")


class ClauseSplitter:
    """Feed text pieces; get clauses back as soon as they end.

    A sentence end always closes a clause. A comma closes one once it holds
    ``min_words`` words. The first clause of a reply closes earlier, at a comma after
    ``first_min_words`` or, failing punctuation, after ``first_max_words`` words, so the
    first audio is short and quick. No clause runs past ``max_words``: Piper's working
    memory grows with the length of what it speaks at once (joe-medium: +98 MB for 6
    words, +116 MB for 9, +160 MB for 13, +500 MB for 40, two threads), and a shorter
    clause also starts sooner.
    """

    def __init__(
        self,
        *,
        first_min_words: int = 2,
        min_words: int = 6,
        first_max_words: int = 3,
        max_words: int = 9,
    ) -> None:
        self._buf = ""
        self._first = True
        self._first_min = first_min_words
        self._min = min_words
        self._first_max = first_max_words
        self._max = max_words

    def feed(self, piece: str) -> list[str]:
        self._buf += piece
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                return out
            clause, self._buf = self._buf[:cut], self._buf[cut:]
            text = clean(clause)
            if text:
                out.append(text)
                self._first = False

    def flush(self) -> list[str]:
        text = clean(self._buf)
        self._buf = ""
        return [text] if text else []

    def _abbreviation(self, dot: int) -> bool:
        """A full stop that ends "Mr", "Dr", "e.g" and the like does not end a clause."""
        if self._buf[dot] != ".":
            return False
        word = self._buf[:dot].rsplit(None, 1)[-1] if self._buf[:dot].strip() else ""
        return word.lower().lstrip("\"'(") in _ABBREVIATIONS

    def _find_cut(self) -> int | None:
        end = next((m for m in _END.finditer(self._buf) if not self._abbreviation(m.start())), None)
        need = self._first_min if self._first else self._min
        for soft in _SOFT.finditer(self._buf):
            if end is not None and soft.start() > end.start():
                break
            if len(self._buf[: soft.start()].split()) >= need:
                return soft.end()
        if end is not None:
            return end.end()
        if self._first and self._first_max:
            # No punctuation yet: end the first clause after ``first_max`` words, as soon
            # as the next word begins (a word is only known whole once a space follows),
            # or one word earlier before a word that starts a phrase ("to", "and", ...).
            words = list(_WORD_END.finditer(self._buf))
            for i in range(self._first_min, min(len(words), self._first_max)):
                if words[i].group().lower() in _PHRASE_STARTS:
                    return words[i - 1].end()
            if len(words) >= self._first_max:
                return words[self._first_max - 1].end()
        words = list(_WORD_END.finditer(self._buf))
        if len(words) > self._max:
            # A run-on sentence: synthesis time and memory grow with clause length.
            return words[self._max - 1].end()
        return None


_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "prof", "no", "e.g", "i.e"]
)


def clean(text: str) -> str:
    """Drop markup and emoji, squeeze spaces."""
    return " ".join(_UNSPEAKABLE.sub(" ", text).split())
