"""What the emulated card's firmware does: sessions, context window and eviction, generation."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace

from voicebox.card.profile import FirmwareProfile
from voicebox.card.protocol import ErrorCode
from voicebox.card.standin import StandInModel, check_stand_in
from voicebox.engines.llama_llm import (
    END_OF_TURN_MARKS,
    common_prefix,
    scoring_messages,
    strip_trailing_punctuation,
)
from voicebox.engines.protocols import ChatMessage

_LOGGER = logging.getLogger(__name__)

"""Next tokens that end a sentence; with the end-of-message marker, the end-of-turn set."""


class FirmwareError(Exception):
    """A command the firmware refuses; becomes an ERROR frame with ``code``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Prefilled:
    """Result of a PREFILL."""

    prompt_tokens: int
    """Tokens of the prompt as kept (after eviction), with the reply header and continuation."""
    cached_tokens: int
    """Leading tokens already in the session's KV cache (not prefilled again)."""
    evicted_messages: int
    """Oldest messages dropped to fit the window."""
    scoring_new_tokens: int = 0
    """Tokens an open turn also prefilled in the session's scoring sequence."""

    @property
    def new_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@dataclass(frozen=True, slots=True)
class Scored:
    """Result of a SCORE_NEXT."""

    prefilled: Prefilled
    """The scored prompt (cut after the user's words) and how much of it was cached."""
    probabilities: list[float]
    """Next-token probability of each candidate's first token, in order."""
    end_of_turn: float | None
    """Mass of the end-of-turn set, if asked for."""
    reply_new_tokens: int = 0
    """Tokens ``warm_reply`` prefilled in the reply's sequence too."""


@dataclass(slots=True)
class _Session:
    kv_tokens: list[int] = field(default_factory=list)
    """Tokens whose keys and values the session holds (the last prompt and reply)."""
    score_tokens: list[int] = field(default_factory=list)
    """The same for the scoring sequence (SCORE_NEXT's prompts, the user's words quoted)."""
    prompt: str | None = None
    stop: list[str] = field(default_factory=list)
    prefilled: Prefilled | None = None

    def hold(self, tokens: list[int]) -> int:
        """The reply's sequence now holds ``tokens``; how many of them it held already."""
        cached = common_prefix(self.kv_tokens, tokens)
        self.kv_tokens = tokens
        return cached


@dataclass(frozen=True, slots=True)
class _OpenTurn:
    """A prompt cut right after the last user message's words (the turn may go on)."""

    prompt: str
    full_prompt: str
    """The same messages rendered whole (the user's words unpunctuated), reply header too."""
    tokens: list[int]
    dropped: int

    def commit(self, session: _Session) -> Prefilled:
        """The session's KV cache now holds this prompt; no GENERATE is armed."""
        result = Prefilled(len(self.tokens), session.hold(self.tokens), self.dropped)
        session.prompt, session.prefilled = None, None
        return result

    def commit_scoring(self, session: _Session) -> Prefilled:
        """The session's scoring sequence now holds this prompt (the reply's is untouched)."""
        result = Prefilled(
            len(self.tokens), common_prefix(session.score_tokens, self.tokens), self.dropped
        )
        session.score_tokens = self.tokens
        return result


def evict_to_fit(
    messages: Sequence[ChatMessage], fits: Callable[[list[ChatMessage]], bool]
) -> tuple[list[ChatMessage], int]:
    """Drop the oldest exchanges until ``fits(kept)``; the eviction policy.

    Leading system messages and the last message are never dropped. The oldest other
    message goes first, together with the assistant message that answers it, so the
    history keeps whole exchanges. Returns the kept messages and how many were dropped.
    """
    kept = list(messages)
    head = 0
    while head < len(kept) and kept[head].role == "system":
        head += 1
    dropped = 0
    while not fits(kept):
        if len(kept) - head <= 1:
            break
        n = 2 if kept[head].role == "user" and kept[head + 1].role == "assistant" else 1
        n = min(n, len(kept) - head - 1)
        del kept[head : head + n]
        dropped += n
    return kept, dropped


class EmulatedFirmware:
    """The card's state machine, independent of transport, pacing and faults.

    Thread-safe: one lock guards the sessions; the stand-in model runs one reply at a time.
    """

    def __init__(self, profile: FirmwareProfile, stand_in: StandInModel) -> None:
        check_stand_in(profile, stand_in.file_name, stand_in.architecture)
        self.profile = profile
        self.stand_in = stand_in
        self._sessions: dict[int, _Session] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self.model_lock = threading.Lock()
        """Held while the stand-in generates (it runs one reply at a time)."""

    @property
    def sessions_open(self) -> int:
        return len(self._sessions)

    def identity(self) -> dict[str, object]:
        p = self.profile
        return {
            "profile": p.name,
            "firmware": p.firmware_version,
            "model": p.model.name,
            "context_tokens": p.context.context_tokens,
            "max_sessions": p.sessions.max_sessions,
            "vendor_id": p.pcie.vendor_id,
            "device_id": p.pcie.device_id,
            "projection": p.projection,
            "emulated": True,
            "stand_in": self.stand_in.file_name,
        }

    def open(self) -> int:
        with self._lock:
            limit = self.profile.sessions.max_sessions
            if len(self._sessions) >= limit:
                raise FirmwareError(ErrorCode.SESSIONS_EXHAUSTED, f"all {limit} sessions are open")
            sid = self._next_id
            self._next_id = self._next_id % 0xFFFF + 1
            while sid in self._sessions:  # wrapped around onto a live id
                sid = self._next_id
                self._next_id = self._next_id % 0xFFFF + 1
            self._sessions[sid] = _Session()
            return sid

    def close(self, sid: int) -> None:
        with self._lock:
            if self._sessions.pop(sid, None) is None:
                raise FirmwareError(ErrorCode.NO_SESSION, f"no open session {sid}")

    def reset(self) -> None:
        """Forget every session (and its KV cache)."""
        with self._lock:
            self._sessions.clear()

    def session(self, sid: int) -> _Session:
        with self._lock:
            session = self._sessions.get(sid)
        if session is None:
            raise FirmwareError(ErrorCode.NO_SESSION, f"no open session {sid}")
        return session

    def count(self, messages: Sequence[ChatMessage]) -> int:
        prompt, _ = self.stand_in.render(messages)
        return len(self.stand_in.tokenize(prompt))

    def prefill(
        self,
        sid: int,
        messages: Sequence[ChatMessage],
        *,
        reserve_tokens: int,
        continuation: str = "",
        open_turn: bool = False,
    ) -> Prefilled:
        """Set the session's prompt, evicting old exchanges so prompt + reserve fits.

        ``open_turn``: the user is still speaking; put the prompt cut after the last user
        message's words in the KV cache (on the stand-in too) and arm no GENERATE.
        """
        session = self.session(sid)
        if open_turn:
            turn = self._open_turn(messages, reserve_tokens)
            quoted = self._open_turn(scoring_messages(messages), reserve_tokens)
            with self.model_lock:
                self.stand_in.evaluate(turn.prompt)
                self.stand_in.evaluate(quoted.prompt, scoring=True)
            scoring = quoted.commit_scoring(session)
            return replace(turn.commit(session), scoring_new_tokens=scoring.new_tokens)
        kept, dropped, prompt, stop, tokens = self._fit(messages, reserve_tokens, continuation)
        if dropped:
            window = self.profile.context.context_tokens
            _LOGGER.info(
                "session %d: evicted %d oldest messages to fit %d tokens", sid, dropped, window
            )
        result = Prefilled(len(tokens), session.hold(tokens), dropped)
        session.prompt, session.stop, session.prefilled = prompt, stop, result
        return result

    def score(
        self,
        sid: int,
        messages: Sequence[ChatMessage],
        *,
        reserve_tokens: int,
        candidates: Sequence[str] = (),
        end_of_turn: bool = False,
        warm_reply: bool = False,
    ) -> Scored:
        """Next-token probabilities right after the last user message's words (SCORE_NEXT).

        The user's words are quoted (``scoring_messages``) and evaluated in the session's
        scoring sequence, which an open turn's PREFILL keeps warm; the reply's sequence is
        untouched unless ``warm_reply``: then it takes, at the same time, the prompt the
        reply's PREFILL would set, header included (the reply to these messages usually
        comes next, and its PREFILL then finds every token cached).
        Each candidate scores the probability of its first token.
        ``end_of_turn`` adds the mass of the end-of-turn set: the closing quote, ``.``,
        ``?``, ``!`` and the template's end-of-message marker (the first token after the
        user's words in the full prompt).
        """
        if not candidates and not end_of_turn:
            raise FirmwareError(ErrorCode.BAD_REQUEST, "nothing to score: no candidates")
        session = self.session(sid)
        ids: list[int] = []
        for c in candidates:
            first = self.stand_in.tokenize(c)[:1]
            if not first:
                raise FirmwareError(ErrorCode.BAD_REQUEST, f"candidate {c!r} has no token")
            ids += first
        turn = self._open_turn(scoring_messages(messages), reserve_tokens)
        eot_ids: list[int] = []
        if end_of_turn:
            marker = turn.full_prompt[len(turn.prompt) :].lstrip()
            marks = [*END_OF_TURN_MARKS, *([marker] if marker else [])]
            eot_ids = sorted({t for m in marks for t in self.stand_in.tokenize(m)[:1]})
        # The reply's prompt as its PREFILL will put it (header included), so that PREFILL
        # finds it all cached.
        reply_prompt, reply_tokens = "", list[int]()
        if warm_reply:
            _, _, reply_prompt, _, reply_tokens = self._fit(messages, reserve_tokens, "")
        with self.model_lock:
            probs = self.stand_in.next_token_probabilities(
                turn.prompt, [*ids, *eot_ids], warm_reply=reply_prompt)
        # A faulty model's numbers go out as they are: the host validates every answer.
        eot = math.fsum(probs[len(ids) :]) if end_of_turn else None
        warmed = len(reply_tokens) - session.hold(reply_tokens) if warm_reply else 0
        return Scored(turn.commit_scoring(session), probs[: len(ids)], eot, warmed)

    def _fit(
        self, messages: Sequence[ChatMessage], reserve_tokens: int, continuation: str
    ) -> tuple[list[ChatMessage], int, str, list[str], list[int]]:
        """The eviction policy applied: kept messages, dropped count, prompt, stop, tokens."""
        if not messages:
            raise FirmwareError(ErrorCode.BAD_REQUEST, "prefill needs at least one message")
        window = self.profile.context.context_tokens
        reserve = max(1, min(reserve_tokens, window // 2))
        rendered: dict[int, tuple[str, list[str], list[int]]] = {}

        def fits(kept: list[ChatMessage]) -> bool:
            prompt, stop = self.stand_in.render(kept)
            prompt += continuation
            tokens = self.stand_in.tokenize(prompt)
            rendered[len(kept)] = (prompt, stop, tokens)
            return len(tokens) + reserve <= window

        kept, dropped = evict_to_fit(messages, fits)
        prompt, stop, tokens = rendered[len(kept)]
        if len(tokens) + reserve > window:
            raise FirmwareError(
                ErrorCode.CONTEXT_OVERFLOW,
                f"prompt of {len(tokens)} tokens plus {reserve} reserved for the reply exceeds "
                f"the {window}-token window even with only the system prompt and last message",
            )
        return kept, dropped, prompt, stop, tokens

    def _open_turn(self, messages: Sequence[ChatMessage], reserve_tokens: int) -> _OpenTurn:
        """Evict as PREFILL would for these messages, then cut after the user's words."""
        if not messages or messages[-1].role != "user":
            raise FirmwareError(ErrorCode.BAD_REQUEST, "the last message must be the user's")
        words = strip_trailing_punctuation(messages[-1].content)
        if not words:
            raise FirmwareError(ErrorCode.BAD_REQUEST, "the last user message has no words")
        kept, dropped, _, _, _ = self._fit(messages, reserve_tokens, "")
        full, _ = self.stand_in.render([*kept[:-1], ChatMessage("user", words)])
        at = full.rfind(words)
        if at < 0:
            raise FirmwareError(ErrorCode.INTERNAL, "the chat template dropped the user's words")
        prompt = full[: at + len(words)]
        return _OpenTurn(prompt, full, self.stand_in.tokenize(prompt), dropped)

    def generate(
        self, sid: int, max_tokens: int, cancel: threading.Event
    ) -> tuple[Prefilled, int, Generator[str, None, None]]:
        """The session's prefill, the token budget, and the reply pieces (one per token).

        The budget is ``max_tokens`` clipped to what is left of the window, so the
        session never overflows its context.
        """
        session = self.session(sid)
        if session.prompt is None or session.prefilled is None:
            raise FirmwareError(ErrorCode.NOT_PREFILLED, f"session {sid} has no prefilled prompt")
        if max_tokens < 1:
            raise FirmwareError(
                ErrorCode.BAD_REQUEST, f"max_tokens must be >= 1 (got {max_tokens})"
            )
        prefilled = session.prefilled
        budget = min(max_tokens, self.profile.context.context_tokens - prefilled.prompt_tokens)
        prompt, stop = session.prompt, session.stop
        session.prompt = None  # a GENERATE consumes the prefill

        def pieces() -> Generator[str, None, None]:
            reply: list[str] = []
            try:
                for piece in self.stand_in.stream_prompt(
                    prompt, stop, max_tokens=budget, cancel=cancel
                ):
                    reply.append(piece)
                    yield piece
            finally:
                session.kv_tokens = self.stand_in.tokenize(prompt + "".join(reply))

        return prefilled, budget, pieces()

