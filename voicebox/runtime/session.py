"""Run a pipeline on a WAV file (simulate) or on the sound card (listen)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voicebox.audio.virtual import VirtualDuplexDevice
from voicebox.audio.wav import read_wav, write_wav
from voicebox.config import Config
from voicebox.engines.protocols import FloatAudio, VadEngine
from voicebox.events import Event, EventLog
from voicebox.runtime.build import warm_up
from voicebox.runtime.pipeline import DuplexDevice, Pipeline
from voicebox.runtime.reply import Engines


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What a simulated conversation produced."""

    events: list[Event]
    output: FloatAudio
    sample_rate_hz: int


async def simulate(
    audio: FloatAudio,
    sample_rate_hz: int,
    *,
    config: Config,
    vad: VadEngine,
    engines: Engines,
    log: EventLog,
    speed: float = 1.0,
    keep: Callable[[FloatAudio], None] | None = None,
) -> SimulationResult:
    """Hear ``audio`` through the virtual device in real time; return what was played.

    ``keep`` gets the recording however the run ends (an error, Ctrl-C), so what was
    played until then is not lost."""
    vad.reset()
    device = VirtualDuplexDevice(
        audio, sample_rate_hz, block_ms=config.audio.block_ms, speed=speed
    )
    pipeline = Pipeline(
        config=config, device=device, vad=vad, engines=engines, log=log,
        stop_when_idle=device.input_done.is_set,
    )
    try:
        await pipeline.run()
    finally:
        if keep is not None:
            keep(device.recording())
    return SimulationResult(log.events, device.recording(), sample_rate_hz)


def simulate_file(
    inp: Path, out: Path, *, config: Config, vad: VadEngine, engines: Engines, log: EventLog
) -> SimulationResult:
    """Simulate ``inp``; ``out`` is written however the run ends."""
    audio, rate = read_wav(inp)
    warm_up(vad, engines, config.llm.system_prompt)
    return asyncio.run(simulate(audio, rate, config=config, vad=vad, engines=engines, log=log,
                                keep=lambda played: write_wav(out, played, rate)))


async def listen(
    device: DuplexDevice, *, config: Config, vad: VadEngine, engines: Engines, log: EventLog
) -> None:
    """Run on the sound card until SIGINT or SIGTERM (warm the engines up first, outside
    the event loop: ``warm_up``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pipeline = Pipeline(config=config, device=device, vad=vad, engines=engines, log=log)
    await pipeline.run(stop)
