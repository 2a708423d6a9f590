"""The sound-card adapter and `listen`, against a fake PortAudio (no device on CI).

The real PortAudio path is exercised by `voicebox devices` and by `listen` failing
cleanly without a device (tests/test_cli.py); this covers the duplex callback, the
wake-up of the loop and a clean stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.fakes import EnergyVad, fake_engines
from voicebox.audio import devices
from voicebox.config import Config
from voicebox.errors import DeviceError
from voicebox.events import EventLog
from voicebox.runtime.session import listen


class FakeStream:
    """Calls the callback every block from its own thread, like PortAudio."""

    def __init__(self, *, samplerate: int, blocksize: int, callback: Any, channels: Any,
                 **_: Any) -> None:
        self.rate, self.block, self.callback = samplerate, blocksize, callback
        self.out_channels = channels[1]
        self.active = False
        self.latency = (0.01, 0.01)
        self.calls = 0
        self.loud_out = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while self.active:
            t = self.calls * self.block / self.rate
            speaking = 0.3 <= t < 1.1
            level = 0.2 if speaking else 0.0
            indata = (level * rng.standard_normal((self.block, 1))).astype(np.float32)
            outdata = np.zeros((self.block, self.out_channels), np.float32)
            self.callback(indata, outdata, self.block, None, None)
            self.loud_out += int(np.abs(outdata).max() > 0.01)
            self.calls += 1
            time.sleep(self.block / self.rate)

    def __enter__(self) -> FakeStream:
        self.active = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
        self._thread.join(timeout=2)


def _fake_sd(streams: list[FakeStream]) -> SimpleNamespace:
    def query_devices(device: object = None, kind: str | None = None) -> Any:
        info = {"name": "fake", "index": 0, "max_input_channels": 1,
                "max_output_channels": 2, "default_samplerate": 48000.0}
        return info if kind else [info]

    def make_stream(**kwargs: Any) -> FakeStream:
        streams.append(FakeStream(**kwargs))
        return streams[-1]

    return SimpleNamespace(query_devices=query_devices, Stream=make_stream,
                           default=SimpleNamespace(device=(0, 0)))


def test_listen_answers_on_the_card_and_stops_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[FakeStream] = []
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd(streams))
    device = devices.SoundDevice(block_ms=10)
    assert device.sample_rate_hz == 48000
    engines = fake_engines()
    log = EventLog()
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        asyncio.run(asyncio.wait_for(
            listen(device, config=Config(), vad=EnergyVad(), engines=engines, log=log),
            timeout=30))
    finally:
        timer.cancel()
        for w in (engines.vad_worker, engines.asr_worker, engines.llm_worker,
                  engines.tts_worker):
            w.close()
    names = [type(e).__name__ for e in log.events]
    assert "SpeechStarted" in names and "PlaybackStarted" in names
    assert streams[0].calls > 100 and streams[0].loud_out > 0
    assert not streams[0].active


def test_list_devices_and_missing_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd([]))
    listed = devices.list_devices()
    assert listed[0].default_rate_hz == 48000 and listed[0].is_default_output

    def broken(device: object = None, kind: str | None = None) -> Any:
        raise RuntimeError("Error querying device -1")

    fake = _fake_sd([])
    fake.query_devices = broken
    monkeypatch.setattr(devices, "_sounddevice", lambda: fake)
    with pytest.raises(DeviceError, match="no usable audio device"):
        devices.SoundDevice()
