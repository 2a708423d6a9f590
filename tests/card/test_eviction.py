"""The context window: the eviction policy, overflow refused, the reply clipped to the window."""

from __future__ import annotations

import threading

import pytest

from tests.card.fakes import FakeStandIn
from voicebox.card.answers import StreamDone
from voicebox.card.driver import CardDriver
from voicebox.card.emulator import CardEmulator
from voicebox.card.engine import CardLlmEngine
from voicebox.card.errors import CardRemoteError
from voicebox.card.firmware import EmulatedFirmware, FirmwareError, evict_to_fit
from voicebox.card.profile import FirmwareProfile
from voicebox.card.protocol import ErrorCode
from voicebox.engines.protocols import ChatMessage

SYSTEM = ChatMessage("system", "Be brief.")


def _history(turns: int, words: int = 50) -> list[ChatMessage]:
    out = [SYSTEM]
    for t in range(turns):
        out.append(ChatMessage("user", f"question {t} " + "blah " * words))
        out.append(ChatMessage("assistant", f"answer {t} " + "meh " * words))
    out.append(ChatMessage("user", "and now?"))
    return out


def test_policy_drops_oldest_whole_exchanges_keeps_system_and_last() -> None:
    history = _history(5)
    kept, dropped = evict_to_fit(history, lambda m: len(m) <= 6)
    assert dropped == 6
    assert kept[0] == SYSTEM and kept[-1] == history[-1]
    assert kept[1:-1] == history[7:-1]  # the two newest exchanges, whole
    assert kept[1].role == "user"


def test_policy_stops_at_system_plus_last() -> None:
    history = _history(3)
    kept, dropped = evict_to_fit(history, lambda m: False)
    assert kept == [SYSTEM, history[-1]] and dropped == len(history) - 2


def test_card_evicts_and_reports(driver: CardDriver, hc1: FirmwareProfile) -> None:
    sid = driver.open_session()
    history = _history(20)  # ~2,000 fake tokens against a 1,024-token window
    info = driver.prefill(sid, history, reserve_tokens=128)
    assert info.evicted_messages > 0 and info.evicted_messages % 2 == 0
    assert info.prompt_tokens + 128 <= hc1.context.context_tokens


def test_engine_reports_eviction(engine: CardLlmEngine) -> None:
    "".join(engine.stream(_history(20), max_tokens=64, cancel=threading.Event()))
    stats = engine.last_stats
    assert stats is not None and stats.evicted_messages > 0
    assert stats.prompt_tokens + 64 <= engine.context_tokens


def test_overflow_is_refused_never_silent(driver: CardDriver) -> None:
    sid = driver.open_session()
    huge = [SYSTEM, ChatMessage("user", "word " * 2000)]
    with pytest.raises(CardRemoteError) as err:
        driver.prefill(sid, huge, reserve_tokens=64)
    assert err.value.code == ErrorCode.CONTEXT_OVERFLOW
    assert "1024-token window" in err.value.message


def test_reply_is_clipped_to_the_window(hc1: FirmwareProfile) -> None:
    firmware = EmulatedFirmware(hc1, FakeStandIn())
    sid = firmware.open()
    # A prompt that leaves exactly 4 tokens of window: the 1-token reserve fits, 64 do not.
    base = firmware.count([SYSTEM, ChatMessage("user", "")])
    words = hc1.context.context_tokens - 4 - base
    messages = [SYSTEM, ChatMessage("user", "w " * words)]
    info = firmware.prefill(sid, messages, reserve_tokens=1)
    assert info.prompt_tokens == hc1.context.context_tokens - 4
    _, budget, pieces = firmware.generate(sid, 64, threading.Event())
    assert budget == 4 and len(list(pieces)) == 4


def test_window_end_finishes_with_context(emulator: CardEmulator, driver: CardDriver) -> None:
    fw = emulator.firmware
    sid = driver.open_session()
    words = fw.profile.context.context_tokens - 3 - fw.count([SYSTEM, ChatMessage("user", "")])
    driver.prefill(sid, [SYSTEM, ChatMessage("user", "w " * words)], reserve_tokens=1)
    events = list(driver.generate(sid, 64, threading.Event()))
    done = events[-1]
    assert isinstance(done, StreamDone) and done.finish == "context" and done.tokens == 3


def test_sessions_limit_in_firmware(hc1: FirmwareProfile) -> None:
    firmware = EmulatedFirmware(hc1, FakeStandIn())
    for _ in range(hc1.sessions.max_sessions):
        firmware.open()
    with pytest.raises(FirmwareError) as err:
        firmware.open()
    assert err.value.code == ErrorCode.SESSIONS_EXHAUSTED
    firmware.reset()
    assert firmware.sessions_open == 0
