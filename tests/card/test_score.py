"""SCORE_NEXT and open-turn PREFILL over the real protocol (fake stand-in, real socket)."""

from __future__ import annotations

import math
import threading

import pytest

from tests.card.conftest import FAST, HC1
from tests.card.fakes import END, FakeStandIn, fake_end_of_turn, full_reply
from voicebox.card.answers import StreamDone
from voicebox.card.driver import CardDriver
from voicebox.card.emulator import CardEmulator, temp_socket_path
from voicebox.card.engine import CardLlmEngine
from voicebox.card.errors import CardError, CardProtocolError, CardRemoteError
from voicebox.card.faults import Fault, FaultKind
from voicebox.card.profile import FirmwareProfile, find_profile
from voicebox.card.protocol import ErrorCode
from voicebox.card.timing import CardTiming
from voicebox.engines.llama_llm import SCORING_SYSTEM_PROMPT
from voicebox.engines.protocols import ChatMessage, EndOfTurnScorer

SYSTEM = ChatMessage("system", "Be brief.")
DONE_TURN = [SYSTEM, ChatMessage("user", "Tell me about the card.")]
OPEN_TURN = [SYSTEM, ChatMessage("user", "Tell me about the")]


def _fake(emulator: CardEmulator) -> FakeStandIn:
    stand_in = emulator.firmware.stand_in
    assert isinstance(stand_in, FakeStandIn)
    return stand_in


def test_score_next_answers_the_fakes_probabilities(
    emulator: CardEmulator, driver: CardDriver, hc1: FirmwareProfile
) -> None:
    sid = driver.open_session()
    done = driver.score_next(
        sid, DONE_TURN, reserve_tokens=64, candidates=[",", "and"], end_of_turn=True
    )
    assert done.probabilities == (0.05, 0.05)
    assert done.end_of_turn == pytest.approx(fake_end_of_turn(finished=True))
    # The prompt is cut right after the user's words, quoted: no punctuation, no end marker.
    assert _fake(emulator).evaluated[-1].endswith('<|user|> I said: "Tell me about the card')
    assert done.cached_tokens == 0 and done.new_tokens == done.prompt_tokens > 0
    assert done.card_ms == pytest.approx(CardTiming(hc1).token_ms(done.new_tokens, 0))
    assert done.energy_mj == pytest.approx(hc1.power.card_power_w * done.card_ms)

    still = driver.score_next(sid, OPEN_TURN, reserve_tokens=64, end_of_turn=True)
    assert still.probabilities == () and still.end_of_turn is not None
    assert still.end_of_turn == pytest.approx(fake_end_of_turn(finished=False))


def test_growing_prefix_is_charged_only_for_new_tokens(driver: CardDriver) -> None:
    sid = driver.open_session()
    words = ["so", "I", "was", "thinking", "about", "the", "weather", "tomorrow"]
    last = None
    for n in range(1, len(words) + 1):
        messages = [SYSTEM, ChatMessage("user", " ".join(words[:n]))]
        scored = driver.score_next(sid, messages, reserve_tokens=64, end_of_turn=True)
        if last is not None:
            assert scored.cached_tokens == last.prompt_tokens
            assert scored.new_tokens == 1  # one word, one fake token
        last = scored


def test_reply_after_a_score_prefills_only_the_tail(
    driver: CardDriver, hc1: FirmwareProfile
) -> None:
    sid = driver.open_session()
    warm = driver.prefill(sid, OPEN_TURN, reserve_tokens=64, open_turn=True)
    # The score reads the scoring sequence: the reply's keeps the words prefilled so far.
    driver.score_next(sid, DONE_TURN, reserve_tokens=64, end_of_turn=True)
    info = driver.prefill(sid, DONE_TURN, reserve_tokens=64)
    assert info.cached_tokens == warm.prompt_tokens
    assert info.new_tokens == 3  # "card.", the end marker and the reply header
    events = list(driver.generate(sid, 64, threading.Event()))
    done = events[-1]
    assert isinstance(done, StreamDone) and done.finish == "stop"
    assert done.card_ttft_ms == pytest.approx(CardTiming(hc1).token_ms(info.new_tokens, 0))


def test_score_with_warm_reply_fills_the_reply_sequence_too(
    emulator: CardEmulator, driver: CardDriver, hc1: FirmwareProfile
) -> None:
    # The final words differ from what the partials prefilled: without warm_reply the
    # reply's PREFILL would evaluate the whole user message and the header after the
    # score; with it, the score's second sequence takes the prompt that PREFILL will set.
    sid = driver.open_session()
    driver.prefill(sid, [SYSTEM, ChatMessage("user", "Sell me")], reserve_tokens=64,
                   open_turn=True)
    fake = _fake(emulator)
    fake.evaluated.clear()
    scored = driver.score_next(sid, DONE_TURN, reserve_tokens=64, end_of_turn=True,
                               warm_reply=True)
    reply = f"<|system|> Be brief. {END} <|user|> Tell me about the card. {END} <|assistant|>"
    assert fake.evaluated[0] == reply  # and the quoted prompt, scored
    assert fake.evaluated[1].endswith('I said: "Tell me about the card')
    head = f"<|system|> Be brief. {END} <|user|>"
    new_reply = len(fake.tokenize(reply)) - len(fake.tokenize(head))
    assert scored.card_ms == pytest.approx(
        CardTiming(hc1).token_ms(scored.new_tokens + new_reply, 0))
    info = driver.prefill(sid, DONE_TURN, reserve_tokens=64)
    # All of it cached: the reply's first token costs the card one forward pass; the
    # partial's "Sell me" would have cost the whole user message again.
    assert info.new_tokens == 0 and info.cached_tokens == len(fake.tokenize(reply))
    done = list(driver.generate(sid, 64, threading.Event()))[-1]
    assert isinstance(done, StreamDone)
    assert done.card_ttft_ms == pytest.approx(CardTiming(hc1).token_ms(0, 0))


def test_open_turn_prefill_warms_the_cache_and_arms_nothing(
    emulator: CardEmulator, driver: CardDriver, hc1: FirmwareProfile
) -> None:
    sid = driver.open_session()
    warm = driver.prefill(sid, OPEN_TURN, reserve_tokens=64, open_turn=True)
    # Both sequences: the reply's (bare words, its own system prompt) and the scoring one
    # (the scoring system prompt, the words quoted), both charged.
    reply = f"<|system|> Be brief. {END} <|user|> Tell me about the"
    scoring = (f"<|system|> {SCORING_SYSTEM_PROMPT} {END} "
               '<|user|> I said: "Tell me about the')
    assert _fake(emulator).evaluated == [reply, scoring]
    scoring_tokens = len(_fake(emulator).tokenize(scoring))
    assert warm.card_ms == pytest.approx(
        CardTiming(hc1).prefill_ms(warm.new_tokens + scoring_tokens))
    with pytest.raises(CardRemoteError) as err:
        list(driver.generate(sid, 8, threading.Event()))
    assert err.value.code == ErrorCode.NOT_PREFILLED
    scored = driver.score_next(sid, DONE_TURN, reserve_tokens=64, end_of_turn=True)
    assert scored.cached_tokens == scoring_tokens and scored.new_tokens == 1


def test_engine_is_an_end_of_turn_scorer(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    assert isinstance(engine, EndOfTurnScorer)
    cold = "".join(engine.stream(DONE_TURN, max_tokens=64, cancel=threading.Event()))
    cold_stats = engine.last_stats
    history = [*DONE_TURN, ChatMessage("assistant", cold.strip())]
    engine.prefill([*history, ChatMessage("user", "And what")])
    engine.prefill([*history, ChatMessage("user", "And what about the")])
    assert (
        engine.end_of_turn_probability([*history, ChatMessage("user", "And what about the")]) < 0.1
    )
    turn = [*history, ChatMessage("user", "And what about the price?")]
    p = engine.end_of_turn_probability(turn)
    assert p == pytest.approx(fake_end_of_turn(finished=True))
    score = engine.last_score
    assert score is not None and score.probability == p and score.recoveries == 0
    assert score.new_tokens == 1  # only "price": the rest was prefilled as the user spoke
    assert "".join(engine.stream(turn, max_tokens=64, cancel=threading.Event())) == full_reply()
    warm_stats = engine.last_stats
    assert cold_stats is not None and warm_stats is not None
    assert warm_stats.card_ttft_ms < cold_stats.card_ttft_ms


def test_engine_skips_the_card_without_user_words(
    emulator: CardEmulator, engine: CardLlmEngine
) -> None:
    assert engine.end_of_turn_probability([SYSTEM, ChatMessage("user", " ... ")]) == 0.0
    engine.prefill([SYSTEM, ChatMessage("user", "")])
    assert _fake(emulator).evaluated == []
    with pytest.raises(ValueError, match="must be the user's"):
        engine.end_of_turn_probability([SYSTEM, ChatMessage("assistant", "Hi")])


@pytest.mark.parametrize(
    ("messages", "kwargs", "code"),
    [
        ([SYSTEM, ChatMessage("assistant", "Hi")], {"end_of_turn": True}, ErrorCode.BAD_REQUEST),
        ([SYSTEM, ChatMessage("user", "?")], {"end_of_turn": True}, ErrorCode.BAD_REQUEST),
        (DONE_TURN, {}, ErrorCode.BAD_REQUEST),
        (DONE_TURN, {"candidates": [" "]}, ErrorCode.BAD_REQUEST),
        (
            [SYSTEM, ChatMessage("user", "word " * 2000)],
            {"end_of_turn": True},
            ErrorCode.CONTEXT_OVERFLOW,
        ),
    ],
)
def test_bad_score_requests(
    driver: CardDriver, messages: list[ChatMessage], kwargs: dict[str, object], code: ErrorCode
) -> None:
    sid = driver.open_session()
    with pytest.raises(CardRemoteError) as err:
        driver.score_next(sid, messages, reserve_tokens=64, **kwargs)  # type: ignore[arg-type]
    assert err.value.code == code


def test_score_needs_an_open_session(driver: CardDriver) -> None:
    with pytest.raises(CardRemoteError) as err:
        driver.score_next(999, DONE_TURN, reserve_tokens=64, end_of_turn=True)
    assert err.value.code == ErrorCode.NO_SESSION


def test_score_evicts_by_the_same_policy(driver: CardDriver, hc1: FirmwareProfile) -> None:
    history = [SYSTEM]
    for t in range(20):  # ~2,000 fake tokens against a 1,024-token window
        history += [ChatMessage("user", f"q{t} " + "blah " * 50), ChatMessage("assistant", "meh")]
    history.append(ChatMessage("user", "and now?"))
    sid = driver.open_session()
    scored = driver.score_next(sid, history, reserve_tokens=128, end_of_turn=True)
    info = driver.prefill(sid, history, reserve_tokens=128)
    # Whole exchanges, oldest first, until the prompt and the reserve fit; the scoring
    # prompt (its own system prompt, the words quoted) is longer here, so it may drop one
    # exchange more than the reply's.
    assert info.evicted_messages > 0 and scored.evicted_messages % 2 == 0
    assert info.evicted_messages <= scored.evicted_messages <= info.evicted_messages + 2
    assert scored.prompt_tokens + 128 <= hc1.context.context_tokens
    # The reply's PREFILL left the scoring sequence as it was.
    again = driver.score_next(sid, history, reserve_tokens=128, end_of_turn=True)
    assert again.cached_tokens == again.prompt_tokens == scored.prompt_tokens


@pytest.mark.parametrize(
    ("kind", "recoveries"),
    [
        (FaultKind.HANG, 1),
        (FaultKind.RESET, 1),
        (FaultKind.TRUNCATE, 1),
        (FaultKind.GARBAGE, 0),
    ],
)
def test_score_survives_faults(
    emulator: CardEmulator, engine: CardLlmEngine, kind: FaultKind, recoveries: int
) -> None:
    assert "".join(engine.stream(DONE_TURN, max_tokens=64, cancel=threading.Event()))
    emulator.inject(Fault(kind, 0))  # the SCORED answer counts as token 0
    assert engine.end_of_turn_probability(DONE_TURN) == pytest.approx(
        fake_end_of_turn(finished=True)
    )
    score = engine.last_score
    assert score is not None and score.recoveries == recoveries
    counters = engine.driver.counters
    if kind is FaultKind.HANG:
        assert counters.timeouts == 1 and counters.resets == 1
    if kind is FaultKind.RESET:
        assert counters.card_resets_seen == 1 and counters.resets == 0
    if kind is FaultKind.GARBAGE:
        assert counters.dropped_bytes > 0
    # The card works afterwards, reply included.
    assert "".join(engine.stream(DONE_TURN, max_tokens=64, cancel=threading.Event())) == (
        full_reply()
    )


def test_open_turn_prefill_survives_a_hang(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    emulator.inject(Fault(FaultKind.HANG, 0))
    engine.prefill(OPEN_TURN)
    assert engine.driver.counters.resets == 1
    assert engine.end_of_turn_probability(OPEN_TURN) < 0.1


def test_dead_card_during_a_score_fails_clearly(
    emulator: CardEmulator, engine: CardLlmEngine
) -> None:
    emulator.inject(Fault(FaultKind.DEAD, 0))
    with pytest.raises(CardError, match="does not recover"):
        engine.end_of_turn_probability(DONE_TURN)


@pytest.mark.parametrize(
    ("forced", "candidates"),
    [
        ([1.5, 0.0, 0.0, 0.0], ()),  # end-of-turn mass above 1
        ([math.nan, 0.1, 0.0, 0.0], ()),  # NaN
        ([-0.2, 0.0, 0.0, 0.0], ()),
        ([0.1], (",", "and")),  # one probability for two candidates
        ([0.1, math.inf], (",", "and")),
    ],
)
def test_malformed_answers_are_protocol_errors(
    emulator: CardEmulator,
    driver: CardDriver,
    forced: list[float],
    candidates: tuple[str, ...],
) -> None:
    _fake(emulator).forced = [forced]
    sid = driver.open_session()
    with pytest.raises(CardProtocolError, match="malformed SCORED"):
        driver.score_next(
            sid, DONE_TURN, reserve_tokens=64, candidates=candidates, end_of_turn=not candidates
        )
    # The next answer is good again, and the session is intact.
    again = driver.score_next(sid, DONE_TURN, reserve_tokens=64, end_of_turn=True)
    assert again.end_of_turn == pytest.approx(fake_end_of_turn(finished=True))


def test_engine_retries_a_malformed_answer_and_never_passes_it_on(
    emulator: CardEmulator, engine: CardLlmEngine
) -> None:
    _fake(emulator).forced = [[math.nan, 0.0, 0.0, 0.0]]
    assert engine.end_of_turn_probability(DONE_TURN) == pytest.approx(
        fake_end_of_turn(finished=True)
    )
    score = engine.last_score
    assert score is not None and score.recoveries == 1
    assert engine.driver.counters.resets == 0  # a bad answer costs a retry, not a reset

    _fake(emulator).forced = [[2.0, 0.0, 0.0, 0.0]] * 4
    with pytest.raises(CardError, match="failed 4 times in one score"):
        engine.end_of_turn_probability(DONE_TURN)


def test_throttled_score_takes_longer_card_time(emulator: CardEmulator, driver: CardDriver) -> None:
    normal = driver.score_next(
        driver.open_session(), DONE_TURN, reserve_tokens=64, end_of_turn=True
    )
    emulator.inject(Fault(FaultKind.THROTTLE))
    slow = driver.score_next(driver.open_session(), DONE_TURN, reserve_tokens=64, end_of_turn=True)
    assert slow.throttled and not normal.throttled
    assert slow.card_ms > normal.card_ms


def test_two_sessions_keep_their_own_prefix() -> None:
    with CardEmulator(find_profile(HC1), FakeStandIn(), temp_socket_path()) as emu:
        driver = CardDriver(emu.socket_path, timeouts=FAST)
        try:
            a, b = driver.open_session(), driver.open_session()
            driver.score_next(a, DONE_TURN, reserve_tokens=64, end_of_turn=True)
            other = driver.score_next(b, OPEN_TURN, reserve_tokens=64, end_of_turn=True)
            assert other.cached_tokens == 0  # session b's cache is its own
            again = driver.score_next(a, DONE_TURN, reserve_tokens=64, end_of_turn=True)
            assert again.new_tokens == 0 and again.cached_tokens == again.prompt_tokens
        finally:
            driver.close()
