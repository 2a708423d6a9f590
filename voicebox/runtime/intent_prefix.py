"""Whether a command's words could go on into a longer sentence of the same intents file.

"Go forward" is a whole command, and also the start of "go forward two meters": a user
who pauses after it may not be done, so it must not take the short silence of a finished
command. Every template is run over the transcript's words as a set of positions (no
sentence is enumerated, so a grammar of three-card lists costs no more than one card);
the words could go on when some template takes all of them and still expects more.
Numbers match numbers whether written as digits or words.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from hassil import Intents
from hassil.expression import (
    Alternative,
    Expression,
    Group,
    ListReference,
    Permutation,
    RuleReference,
    Sentence,
    TextChunk,
)
from hassil.intents import IntentData, RangeSlotList, SlotList, TextSlotList
from hassil.util import remove_skip_words

NUMBER = "#"
"""What every number becomes (a run of number words is one number)."""

_NUMBER_WORDS = frozenset((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy",
    "eighty", "ninety", "hundred", "thousand",
))


def normalize(text: str) -> str:
    """Lower-case words without marks, one space apart; numbers (digits or words) as
    ``NUMBER``. Spaces at either end are kept as one, so template pieces keep theirs."""
    out: list[str] = []
    for word in re.findall(r"[\w']+", text.lower()):
        tok = NUMBER if word.isdigit() or word in _NUMBER_WORDS else word
        if not (tok == NUMBER and out and out[-1] == NUMBER):
            out.append(tok)
    core = " ".join(out)
    if not core:
        return " " if text[:1].isspace() or text[-1:].isspace() else ""
    lead = " " if text[:1].isspace() else ""
    trail = " " if text[-1:].isspace() else ""
    return lead + core + trail


@dataclass(slots=True)
class _Run:
    """Templates run over ``text`` (normalized, plus one space at the end): the character
    positions a piece of a template can reach, and whether a path wanted another word
    after the last one (a piece glued to the last word, "meter[s]", is not another word)."""

    text: str
    lists: dict[str, SlotList]
    rules: dict[str, Sentence]
    wants_more: bool = False
    expanding: set[str] = field(default_factory=set)

    def expr(self, e: Expression, at: set[int]) -> set[int]:
        if not at:
            return at
        if isinstance(e, TextChunk):
            return self.chunk(normalize(e.text), at)
        if isinstance(e, ListReference):
            return self.slot(e.list_name, at)
        if isinstance(e, RuleReference):
            return self.rule(e.rule_name, at)
        if isinstance(e, Permutation):
            out: set[int] = set()
            for order in itertools.permutations(e.items):
                out |= self.sequence(list(order), at)
            return out
        if isinstance(e, Alternative):
            out = set(at) if e.is_optional else set()
            for item in e.items:
                out |= self.expr(item, at)
            return out
        if isinstance(e, Group):
            return self.sequence(e.items, at)
        return set()  # an expression type this check does not know: it reaches nothing

    def sequence(self, items: list[Expression], at: set[int]) -> set[int]:
        for item in items:
            at = self.expr(item, at)
        return at

    def chunk(self, piece: str, at: set[int]) -> set[int]:
        """``piece`` at each position; its spaces match one space, or none where a word
        boundary already is (so optional words leave no double space to match)."""
        for word in re.split(r"( )", piece):
            if word == " ":
                at = {q for p in at for q in self._space(p)}
            elif word:
                at = self._word(word, at)
        return at

    def _space(self, p: int) -> list[int]:
        text, out = self.text, []
        if p < len(text) and text[p] == " ":
            out.append(p + 1)
        if p == 0 or p == len(text) or text[p - 1] == " ":
            out.append(p)
        return out

    def _word(self, word: str, at: set[int]) -> set[int]:
        text, n = self.text, len(self.text)
        if n in at:  # after the space that follows the last word
            self.wants_more = True
        return {p + len(word) for p in at if text.startswith(word, p)}

    def slot(self, name: str, at: set[int]) -> set[int]:
        slot = self.lists.get(name)
        if isinstance(slot, RangeSlotList):
            return self._word(NUMBER, at)
        if isinstance(slot, TextSlotList):
            out: set[int] = set()
            for value in slot.values:
                out |= self.expr(value.text_in, at)
            return out
        # A wildcard (or unknown list) takes any words, and can always take more.
        text = self.text
        self.wants_more = True
        return {q for p in at for q in range(p + 1, len(text)) if text[q] == " "}

    def rule(self, name: str, at: set[int]) -> set[int]:
        rule = self.rules.get(name)
        if rule is None or name in self.expanding:
            return set()
        self.expanding.add(name)
        try:
            return self.expr(rule.expression, at)
        finally:
            self.expanding.discard(name)


def could_go_on(intents: Intents, text: str) -> bool:
    """True unless some template takes exactly these words and none expects more after
    them. Words no template takes count as able to go on (the cautious answer)."""
    # The file's skip words ("please", "could you") go as hassil's matching drops them.
    text = remove_skip_words(text, intents.skip_words, intents.settings.ignore_whitespace)
    words = normalize(text).strip() + " "
    ends = False
    for intent in intents.intents.values():
        for data in intent.data:
            run = _template_run(intents, data, words)
            for sentence in data.sentences:
                if run.expr(sentence.expression, {0}) & {len(words) - 1, len(words)}:
                    ends = True
                if run.wants_more:
                    return True
    return not ends


def _template_run(intents: Intents, data: IntentData, words: str) -> _Run:
    lists = {**intents.slot_lists, **data.slot_lists}
    rules = {**intents.expansion_rules, **data.expansion_rules}
    return _Run(words, lists, rules)
