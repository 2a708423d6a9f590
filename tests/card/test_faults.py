"""Every injected fault: the driver recovers with the exact reply, or fails clearly."""

from __future__ import annotations

import threading

import pytest

from tests.card.conftest import FAST
from tests.card.fakes import full_reply
from voicebox.card.driver import CardDriver
from voicebox.card.emulator import CardEmulator
from voicebox.card.engine import CardLlmEngine
from voicebox.card.errors import CardError
from voicebox.card.faults import Fault, FaultKind, parse_fault
from voicebox.engines.protocols import ChatMessage

MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hello card")]


def _reply(engine: CardLlmEngine) -> str:
    return "".join(engine.stream(MESSAGES, max_tokens=64, cancel=threading.Event()))


@pytest.mark.parametrize("kind", [FaultKind.HANG, FaultKind.TRUNCATE, FaultKind.RESET])
@pytest.mark.parametrize("at", [0, 3])
def test_recovers_and_resumes_the_reply(
    emulator: CardEmulator, engine: CardLlmEngine, kind: FaultKind, at: int
) -> None:
    assert _reply(engine) == full_reply()  # a session with history exists before the fault
    emulator.inject(Fault(kind, at))
    assert _reply(engine) == full_reply()  # no piece repeated, lost or garbled
    stats = engine.last_stats
    assert stats is not None and stats.recoveries == 1
    assert _reply(engine) == full_reply()  # and the card works afterwards


def test_hang_is_cured_by_reset(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    emulator.inject(Fault(FaultKind.HANG, 2))
    assert _reply(engine) == full_reply()
    c = engine.driver.counters
    assert c.timeouts == 1 and c.resets == 1 and c.reconnects == 0


def test_spontaneous_reset_is_seen(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    emulator.inject(Fault(FaultKind.RESET, 2))
    assert _reply(engine) == full_reply()
    assert engine.driver.counters.card_resets_seen == 1
    assert engine.driver.status()["resets"] == 1


def test_truncated_frame_counts_a_lost_token(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    emulator.inject(Fault(FaultKind.TRUNCATE, 4))
    assert _reply(engine) == full_reply()
    assert engine.driver.counters.lost_tokens == 1
    assert engine.driver.counters.resets == 0  # a lost frame costs a resume, not a reset


def test_truncated_last_frame(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    emulator.inject(Fault(FaultKind.TRUNCATE, len(full_reply().split()) - 1))
    assert _reply(engine) == full_reply()


def test_garbage_is_skipped_without_recovery(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    emulator.inject(Fault(FaultKind.GARBAGE, 3))
    assert _reply(engine) == full_reply()
    stats = engine.last_stats
    assert stats is not None and stats.recoveries == 0
    assert engine.driver.counters.dropped_bytes > 0


def test_throttling_is_reported(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    _reply(engine)
    normal = engine.last_stats
    emulator.inject(Fault(FaultKind.THROTTLE))
    assert _reply(engine) == full_reply()
    throttled = engine.last_stats
    assert normal is not None and throttled is not None
    assert throttled.throttled and not normal.throttled
    assert throttled.card_ms > normal.card_ms
    assert engine.driver.status()["throttled"] is True
    assert _reply(engine) == full_reply()  # a standing fault: still throttled
    again = engine.last_stats
    assert again is not None and again.throttled
    emulator.clear_faults()  # the card cools down
    assert _reply(engine) == full_reply()
    cooled = engine.last_stats
    assert cooled is not None and not cooled.throttled
    assert engine.driver.status()["throttled"] is False


def test_sessions_exhausted_is_a_clear_error(emulator: CardEmulator, driver: CardDriver) -> None:
    emulator.inject(Fault(FaultKind.EXHAUST))
    engine = CardLlmEngine(driver)
    with pytest.raises(CardError, match="no free session"):
        _reply(engine)


def test_dead_card_fails_clearly_and_never_hangs(
    emulator: CardEmulator, engine: CardLlmEngine
) -> None:
    emulator.inject(Fault(FaultKind.DEAD, 1))
    with pytest.raises(CardError, match="does not recover"):
        _reply(engine)
    assert engine.driver.counters.reconnects == 1


def test_repeated_faults_give_up_after_max_recoveries(
    emulator: CardEmulator, driver: CardDriver
) -> None:
    engine = CardLlmEngine(driver, max_recoveries=2)
    recover = engine._recover

    def recover_and_hang_again(exc: Exception, attempt: int, what: str, then: str) -> None:
        recover(exc, attempt, what, then)
        emulator.inject(Fault(FaultKind.HANG, 1))  # every resumed stream hangs again

    engine._recover = recover_and_hang_again  # type: ignore[method-assign]
    emulator.inject(Fault(FaultKind.HANG, 1))
    with pytest.raises(CardError, match="failed 3 times in one reply"):
        for _ in engine.stream(MESSAGES, max_tokens=64, cancel=threading.Event()):
            pass


def test_link_closed_is_a_clear_error(emulator: CardEmulator, engine: CardLlmEngine) -> None:
    _reply(engine)
    emulator.stop()
    with pytest.raises(CardError):
        _reply(engine)


@pytest.mark.parametrize(
    ("spec", "fault"),
    [("hang@3", Fault(FaultKind.HANG, 3)), ("throttle", Fault(FaultKind.THROTTLE))],
)
def test_parse_fault(spec: str, fault: Fault) -> None:
    assert parse_fault(spec) == fault


@pytest.mark.parametrize("spec", ["melt", "hang@x", "hang@-1"])
def test_parse_fault_errors(spec: str) -> None:
    with pytest.raises(CardError):
        parse_fault(spec)


def test_fast_timeouts_are_short() -> None:
    assert FAST.token_s < 1.0  # the fault tests stay quick because waits are short
