"""The driver against the emulator over the real protocol (fake stand-in, real socket)."""

from __future__ import annotations

import threading
from types import GeneratorType

import pytest

from tests.card.fakes import REPLY_WORDS, full_reply
from voicebox.card.answers import StreamDone, TokenPiece
from voicebox.card.driver import CardDriver
from voicebox.card.emulator import CardEmulator
from voicebox.card.engine import CardLlmEngine
from voicebox.card.errors import CardError, CardLinkError, CardRemoteError
from voicebox.card.profile import FirmwareProfile
from voicebox.card.protocol import ErrorCode
from voicebox.card.timing import CardTiming
from voicebox.engines.protocols import ChatMessage

MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hello card")]


def test_identify(driver: CardDriver, hc1: FirmwareProfile) -> None:
    identity = driver.identify()
    assert identity.profile == hc1.name
    assert identity.model == "Llama-3.1-8B-Instruct"
    assert identity.context_tokens == 1024 and identity.max_sessions == 16
    assert identity.emulated and identity.raw["stand_in"].startswith("SmolLM2")


def test_stream_in_order_with_done_stats(driver: CardDriver, hc1: FirmwareProfile) -> None:
    sid = driver.open_session()
    info = driver.prefill(sid, MESSAGES, reserve_tokens=64)
    assert info.cached_tokens == 0 and info.new_tokens == info.prompt_tokens > 0
    events = list(driver.generate(sid, 64, threading.Event()))
    pieces = [e for e in events if isinstance(e, TokenPiece)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert [p.index for p in pieces] == list(range(len(REPLY_WORDS)))
    assert "".join(p.text for p in pieces) == full_reply()
    assert done.finish == "stop" and done.tokens == len(pieces)
    timing = CardTiming(hc1)
    assert done.card_ms == pytest.approx(timing.reply_ms(info.new_tokens, done.tokens))
    assert done.card_ttft_ms == pytest.approx(timing.token_ms(info.new_tokens, 0))
    assert done.energy_mj == pytest.approx(hc1.power.card_power_w * done.card_ms)
    assert done.wall_ms > 0 and done.lag_ms == pytest.approx(max(0.0, done.wall_ms - done.card_ms))


def test_second_turn_reuses_the_cached_prefix(driver: CardDriver) -> None:
    sid = driver.open_session()
    first = driver.prefill(sid, MESSAGES, reserve_tokens=64)
    list(driver.generate(sid, 64, threading.Event()))
    history = [
        *MESSAGES,
        ChatMessage("assistant", full_reply().strip()),
        ChatMessage("user", "More"),
    ]
    second = driver.prefill(sid, history, reserve_tokens=64)
    assert second.cached_tokens >= first.prompt_tokens
    assert second.new_tokens < second.prompt_tokens


def test_max_tokens_and_cancel(driver: CardDriver) -> None:
    sid = driver.open_session()
    driver.prefill(sid, MESSAGES, reserve_tokens=3)
    events = list(driver.generate(sid, 3, threading.Event()))
    assert isinstance(events[-1], StreamDone) and events[-1].finish == "length"
    assert len(events) == 4

    driver.prefill(sid, MESSAGES, reserve_tokens=64)
    cancel = threading.Event()
    got = []
    for event in driver.generate(sid, 64, cancel):
        got.append(event)
        if len(got) == 2:
            cancel.set()
    # The fake card sends its whole reply within ~3 ms, so most of it is buffered when
    # the host cancels: not one more token may be handed over.
    assert len(got) == 3
    assert isinstance(got[-1], StreamDone) and got[-1].finish == "cancelled"
    # The stream is drained: the next command gets its own answer.
    assert driver.status()["sessions_open"] == 1


def test_engine_implements_the_llm_protocol(engine: CardLlmEngine) -> None:
    assert engine.context_tokens == 1024
    assert engine.count_tokens(MESSAGES) > 0
    text = "".join(engine.stream(MESSAGES, max_tokens=64, cancel=threading.Event()))
    assert text == full_reply()
    stats = engine.last_stats
    assert stats is not None and stats.tokens == len(REPLY_WORDS) and stats.recoveries == 0
    assert stats.card_ms > 0 and stats.wall_ms > 0


def test_closing_the_stream_early_cancels_on_the_card(engine: CardLlmEngine) -> None:
    stream = engine.stream(MESSAGES, max_tokens=64, cancel=threading.Event())
    assert isinstance(stream, GeneratorType)
    assert next(stream) == " " + REPLY_WORDS[0]
    stream.close()
    text = "".join(engine.stream(MESSAGES, max_tokens=64, cancel=threading.Event()))
    assert text == full_reply()


def test_session_limit(emulator: CardEmulator, driver: CardDriver, hc1: FirmwareProfile) -> None:
    sessions = [driver.open_session() for _ in range(hc1.sessions.max_sessions)]
    assert len(set(sessions)) == hc1.sessions.max_sessions
    with pytest.raises(CardRemoteError) as err:
        driver.open_session()
    assert err.value.code == ErrorCode.SESSIONS_EXHAUSTED
    driver.close_session(sessions[0])
    driver.open_session()  # a closed session frees its slot


def test_unknown_session_and_not_prefilled(driver: CardDriver) -> None:
    with pytest.raises(CardRemoteError) as err:
        driver.prefill(999, MESSAGES, reserve_tokens=8)
    assert err.value.code == ErrorCode.NO_SESSION
    sid = driver.open_session()
    with pytest.raises(CardRemoteError) as err:
        list(driver.generate(sid, 8, threading.Event()))
    assert err.value.code == ErrorCode.NOT_PREFILLED


def test_two_hosts_share_one_card(emulator: CardEmulator, driver: CardDriver) -> None:
    other = CardDriver(emulator.socket_path, timeouts=driver.timeouts)
    try:
        a, b = driver.open_session(), other.open_session()
        assert a != b
        assert other.status()["sessions_open"] == 2
    finally:
        other.close()


def test_missing_device_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(CardLinkError, match="not found"):
        CardDriver("/nonexistent/card0")
    with pytest.raises(CardLinkError, match="neither a card device nor a card socket"):
        CardDriver(__file__)


def test_pcie_engine_on_a_device_path(emulator: CardEmulator) -> None:
    from voicebox.card.factory import build_card_engine

    engine = build_card_engine("pcie", "hc1-llama3.1-8b", str(emulator.socket_path))
    try:
        assert "".join(engine.stream(MESSAGES, max_tokens=64, cancel=threading.Event())) == (
            full_reply()
        )
    finally:
        engine.close()
    with pytest.raises(CardError, match="runs firmware 'hc1-llama3.1-8b', not"):
        build_card_engine("pcie", "hc2-projection-thinking-fp4", str(emulator.socket_path))
