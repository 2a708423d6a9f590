"""Commands the application knows, as sentence templates (Home Assistant's hassil).

A final transcript that is a whole sentence of one of these templates ("turn on the
lights", "set a timer for ten minutes") is a finished turn: it is confirmed after
``[intents] silence_ms`` instead of the end-of-turn curve's wait, and it reaches the
application as structured data (``IntentRecognized``: the intent's name and its slot
values). A command that could also begin a longer one of the file ("stop" beside "stop
moving") waits at most ``[intents] open_silence_ms``, longer than the mid-sentence
pauses people make (``intent_prefix``). Words that only begin a template ("turn on the")
match nothing, so they wait as any other words do. An optional ``responses`` mapping
says what to answer to an intent instead of the LLM's reply. The file is hassil's YAML::

    language: en
    intents:
      TurnOn:
        data:
          - sentences: ["turn on [the] {name}", "switch on [the] {name}"]
      Stop:
        data:
          - sentences: ["stop", "stop moving"]
    lists:
      name:
        values: ["lights", "kitchen lights", "fan"]
    responses:
      TurnOn: "Turning on the {name}."

``configs/intents-example.yaml`` holds a fuller one.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hassil import Intents, RecognizeResult, recognize
from hassil.expression import Expression, Group, ListReference, RuleReference
from unicode_rbnf import RbnfEngine

from voicebox.config import Config, ConfigError
from voicebox.errors import read_text_file
from voicebox.runtime.intent_prefix import could_go_on

SlotValue = str | int | float

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IntentMatch:
    """A transcript that is one whole sentence of an intent."""

    name: str
    slots: dict[str, SlotValue] = field(default_factory=dict)
    """Slot name -> value (a list's value, or a number for a range list)."""
    text: str = ""
    """The transcript it was read from."""
    open: bool = False
    """The words could also begin a longer sentence of the file ("stop", "stop moving")."""
    response: str | None = None
    """What to say instead of an LLM reply (the file's ``responses``, slots filled in)."""


class IntentMatcher:
    """Reads transcripts against a hassil intents file."""

    def __init__(self, intents: Intents, responses: dict[str, str] | None = None) -> None:
        self._intents = intents
        self._responses = dict(responses or {})
        self._spell = _number_speller(intents.language)

    @classmethod
    def from_file(cls, path: Path) -> IntentMatcher:
        """ConfigError (one line) unless ``path`` is a readable hassil intents file."""
        text = read_text_file(path, "intents file", ConfigError)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"intents file {path}: not YAML: {_one_line(exc)}") from None
        except RecursionError:
            raise ConfigError(f"intents file {path}: nested too deeply") from None
        if not isinstance(data, dict) or not isinstance(data.get("intents"), dict):
            raise ConfigError(f"intents file {path}: needs an 'intents:' mapping (hassil format)")
        responses = data.pop("responses", None) or {}
        shape = _shape_problem(data)
        if shape:
            raise ConfigError(f"intents file {path}: {shape}")
        try:
            intents = Intents.from_dict(data)
            missing = _missing_references(intents)
        except KeyError as exc:  # hassil reads the file's dict without checks
            raise ConfigError(f"intents file {path}: missing key {exc} (hassil format)") from None
        except Exception as exc:  # hassil raises plain errors for malformed templates
            raise ConfigError(f"intents file {path}: {_one_line(exc)}") from None
        if missing:
            raise ConfigError(f"intents file {path}: {missing}")
        if not intents.intents:
            raise ConfigError(f"intents file {path}: defines no intents")
        problem = _bad_responses(responses, intents)
        if problem:
            raise ConfigError(f"intents file {path}: responses: {problem}")
        return cls(intents, responses)

    @property
    def intent_names(self) -> list[str]:
        return list(self._intents.intents)

    def match(self, text: str) -> IntentMatch | None:
        """The intent ``text`` is a whole sentence of, if any (case and marks ignored)."""
        words = text.strip()
        if not words:
            return None
        result = self._recognize(words)
        spell = self._spell
        if result is None and spell is not None and re.search(r"\d", words):
            # Whisper writes "10" where a template's list says "ten".
            result = self._recognize(re.sub(r"\d+", lambda m: spell(int(m[0])), words))
        if result is None or result.intent is None:
            return None
        name = result.intent.name
        slots = {slot: _slot_value(e.value) for slot, e in result.entities.items()}
        template = self._responses.get(name)
        response = template.format_map(_Slots(slots)) if template else None
        return IntentMatch(name, slots, words, could_go_on(self._intents, words), response)

    def _recognize(self, words: str) -> RecognizeResult | None:
        try:
            return recognize(words, self._intents)
        except Exception as exc:  # a template hassil cannot expand: no match, not a crash
            _LOGGER.warning("intent matching failed on %r: %s", words, _one_line(exc))
            return None


def load_intents(config: Config) -> IntentMatcher | None:
    """The matcher for ``[intents] file``, or None when no file is configured."""
    path = config.intents.file
    return IntentMatcher.from_file(path) if path is not None else None


class _Slots(dict[str, SlotValue]):
    """Slot values for a response; a slot this match did not fill says nothing."""

    def __missing__(self, key: str) -> str:
        return ""


def _shape_problem(data: dict[str, object]) -> str | None:
    """What hassil would take without complaint and then never match: a word list that is
    a number, sentences that are one string, a context that is not a mapping."""
    skip = data.get("skip_words", [])
    if not _strings(skip):
        return "skip_words: must be a list of words"
    intents = data["intents"]
    assert isinstance(intents, dict)
    for name, intent in intents.items():
        if not isinstance(intent, dict) or not isinstance(intent.get("data"), list):
            return f"intent {name}: needs a 'data:' list"
        for i, block in enumerate(intent["data"]):
            where = f"intent {name}, data {i + 1}"
            if not isinstance(block, dict):
                return f"{where}: must be a mapping"
            if not _strings(block.get("sentences")) or not block["sentences"]:
                return f"{where}: sentences: must be a list of sentence templates"
            for key in ("requires_context", "excludes_context", "slots", "lists",
                        "expansion_rules"):
                if key in block and not isinstance(block[key], dict):
                    return f"{where}: {key}: must be a mapping"
    return None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _bad_responses(responses: object, intents: Intents) -> str | None:
    """Why ``responses`` (intent name -> what to say, ``{slot}`` filled in) is unusable."""
    if not isinstance(responses, dict):
        return "must map intent names to what to say"
    for name, text in responses.items():
        if name not in intents.intents:
            return f"no intent {name}"
        if not isinstance(text, str) or not text.strip():
            return f"{name}: must be a non-empty string"
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text)
                      if f is not None]
        except ValueError as exc:  # an unmatched brace
            return f"{name}: {_one_line(exc)}"
        for slot, spec, conversion in fields:
            if not slot.isidentifier() or spec or conversion:
                return (f"{name}: {{{slot}{'!' + conversion if conversion else ''}"
                        f"{':' + spec if spec else ''}}}: only plain {{slot}} names are filled in")
    return None


def _missing_references(intents: Intents) -> str | None:
    """Parse every template and rule; name the first ``{list}`` or ``<rule>`` nothing
    defines."""
    for intent in intents.intents.values():
        for data in intent.data:
            lists = {*intents.slot_lists, *data.slot_lists, *data.wildcard_list_names}
            rules = {**intents.expansion_rules, **data.expansion_rules}
            # data.sentences parses the templates (ParseError if malformed)
            for expr in [s.expression for s in (*data.sentences, *rules.values())]:
                for ref in _references(expr):
                    if isinstance(ref, ListReference) and ref.list_name not in lists:
                        return f"intent {intent.name}: no list {{{ref.list_name}}}"
                    if isinstance(ref, RuleReference) and ref.rule_name not in rules:
                        return f"intent {intent.name}: no rule <{ref.rule_name}>"
    return None


def _references(expr: Expression) -> Iterator[Expression]:
    if isinstance(expr, (ListReference, RuleReference)):
        yield expr
    elif isinstance(expr, Group):
        for item in expr.items:
            yield from _references(item)


def _number_speller(language: str) -> Callable[[int], str] | None:
    """Digits -> words in the file's language (unicode-rbnf, hassil's own), if it has one."""
    try:
        engine = RbnfEngine.for_language(language)
    except Exception:  # a language without spell-out rules: digits stay digits
        return None

    def spell(n: int) -> str:
        return str(engine.format_number(n).text).replace("-", " ")

    return spell


def _slot_value(value: Any) -> SlotValue:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return str(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
