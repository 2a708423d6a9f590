"""Build the card-backed LLM engine for ``--engine emulated|pcie`` (the CLI's one entry point)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from voicebox.card.driver import CardDriver, DriverTimeouts
from voicebox.card.emulator import CardEmulator, temp_socket_path
from voicebox.card.engine import CardLlmEngine
from voicebox.card.errors import CardError
from voicebox.card.faults import Fault
from voicebox.card.profile import FirmwareProfile, find_profile
from voicebox.card.standin import LlamaStandIn, check_stand_in
from voicebox.card.transport import TcpAddress, parse_tcp
from voicebox.engines.requantize import DEFAULT_TARGET
from voicebox.errors import VoiceboxError
from voicebox.models.locate import packaged_path

_LOGGER = logging.getLogger(__name__)

DEFAULT_PROFILE = "hc1-llama3.1-8b"
EMULATED_TIMEOUTS = DriverTimeouts(first_token_s=10.0)
"""An emulated card prefills and decodes on the host CPU: generous, still bounded (its
first token comes in 50-200 ms here, a full 1k-token prefill in about a second; a card
that dies before it is reported in seconds, not the better part of a minute)."""
HARDWARE_TIMEOUTS = DriverTimeouts(command_s=1.0, first_token_s=2.0, token_s=1.0, reset_s=5.0)
"""A real card answers in milliseconds; a second of silence means it hung."""


def build_card_engine(
    engine: str,
    profile: str | None,
    device: str | None,
    *,
    stand_in: Path | None = None,
    faults: tuple[Fault, ...] = (),
    threads: int | None = None,
    requantize: str | None = DEFAULT_TARGET,
    burst_threads: int | None = None,
) -> CardLlmEngine:
    """The LlmEngine for ``--engine emulated`` or ``--engine pcie``.

    ``emulated``: loads the profile (default: the HC1), checks and loads the functional
    stand-in (default: the packaged SmolLM2-135M), serves an emulated card on a UNIX
    socket or TCP address (``device`` if given, else a private temp path) and connects the
    driver to it. ``pcie``: opens ``device`` (required: a device file, or ``tcp://HOST:PORT``
    of a ``voicebox card serve --tcp``) and, if ``profile`` is given, checks that the card
    runs that firmware. ``close()`` on the engine stops everything it started.
    """
    if engine == "emulated":
        return _emulated(
            find_profile(profile or DEFAULT_PROFILE), device, stand_in, faults, threads,
            requantize, burst_threads,
        )
    if engine == "pcie":
        if not device:
            raise VoiceboxError("--engine pcie needs --device PATH (the card's device file)")
        return _hardware(device, profile)
    raise VoiceboxError(f"unknown card engine {engine!r} (emulated or pcie)")


def _emulated(
    profile: FirmwareProfile,
    device: str | None,
    stand_in_path: Path | None,
    faults: tuple[Fault, ...],
    threads: int | None,
    requantize: str | None,
    burst_threads: int | None,
) -> CardLlmEngine:
    path = stand_in_path or packaged_path("llm")
    model = LlamaStandIn(path, context_tokens=max(512, profile.context.context_tokens),
                         threads=threads, requantize=requantize,
                         burst_threads=burst_threads)
    check_stand_in(profile, model.file_name, model.architecture)  # before loading weights
    model.load()
    if device and device.startswith("tcp://"):
        endpoint: Path | TcpAddress = parse_tcp(device)
    else:
        endpoint = Path(device) if device else temp_socket_path()
    emulator = CardEmulator(profile, model, endpoint)
    for fault in faults:
        emulator.inject(fault)
    emulator.start()

    def shutdown() -> None:
        emulator.stop()
        model.close()

    try:
        driver = CardDriver(emulator.address, timeouts=EMULATED_TIMEOUTS)
        return CardLlmEngine(driver, on_close=shutdown)
    except BaseException:
        shutdown()
        raise


def _hardware(device: str, profile: str | None) -> CardLlmEngine:
    driver = CardDriver(device, timeouts=HARDWARE_TIMEOUTS)
    try:
        engine = CardLlmEngine(driver)
    except BaseException:
        driver.close()
        raise
    if engine.identity.emulated:
        # A standalone `voicebox card serve` on the other end: give it emulator timeouts.
        driver.timeouts = EMULATED_TIMEOUTS
    if profile is not None:
        expected = find_profile(profile).name
        if engine.identity.profile != expected:
            with contextlib.suppress(CardError):
                engine.close()
            raise CardError(
                f"card at {device} runs firmware {engine.identity.profile!r}, not {expected!r}"
            )
    return engine
