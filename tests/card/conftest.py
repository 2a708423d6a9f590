"""Fixtures: an emulated card with a fake stand-in, and a driver with short timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.card.fakes import FakeStandIn
from voicebox.card.driver import CardDriver, DriverTimeouts
from voicebox.card.emulator import CardEmulator, temp_socket_path
from voicebox.card.engine import CardLlmEngine
from voicebox.card.profile import FirmwareProfile, find_profile

HC1 = "hc1-llama3.1-8b"
FAST = DriverTimeouts(command_s=0.5, first_token_s=0.5, token_s=0.5, reset_s=0.5, poll_s=0.02)
"""Short timeouts: the fake stand-in answers in microseconds."""


@pytest.fixture
def hc1() -> FirmwareProfile:
    return find_profile(HC1)


@pytest.fixture
def emulator(hc1: FirmwareProfile) -> Iterator[CardEmulator]:
    with CardEmulator(hc1, FakeStandIn(), temp_socket_path()) as emu:
        yield emu


@pytest.fixture
def driver(emulator: CardEmulator) -> Iterator[CardDriver]:
    drv = CardDriver(emulator.socket_path, timeouts=FAST)
    yield drv
    drv.close()


@pytest.fixture
def engine(driver: CardDriver) -> Iterator[CardLlmEngine]:
    eng = CardLlmEngine(driver)
    yield eng
    eng.close()
