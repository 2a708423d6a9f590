"""The sound-card adapter and `listen`, against a fake PortAudio (no device on CI).

The real PortAudio path is exercised by `voicebox devices` and by `listen` failing
cleanly without a device (tests/test_cli.py); this covers the duplex callback, the
wake-up of the loop and a clean stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import atexit
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
                 stop_after: int | None = None, hang_on_close: bool = False,
                 stall_after: int | None = None, **_: Any) -> None:
        self.rate, self.block, self.callback = samplerate, blocksize, callback
        self.stop_after = stop_after
        self.stall_after = stall_after
        self.hang_on_close = hang_on_close
        self.closed = False
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
            if self.calls == self.stop_after:  # as PortAudio's ALSA stream after an xrun
                self.active = False
            while self.calls == self.stall_after and self.active:  # its sound server died:
                time.sleep(0.01)  # still "active", never another callback
            time.sleep(self.block / self.rate)

    def start(self) -> None:
        self.active = True
        self._thread.start()

    def stop(self) -> None:
        self.active = False
        self._thread.join(timeout=2)

    def close(self) -> None:
        if self.hang_on_close:  # as PortAudio on a sound server that died under it
            threading.Event().wait()
        self.closed = True


def _fake_sd(streams: list[FakeStream], *, rates: tuple[int, ...] = (44100, 48000),
             stop_after: list[int | None] | None = None,
             hang_on_close: bool = False,
             stall_after: list[int | None] | None = None) -> SimpleNamespace:
    """A PortAudio whose device defaults to 44.1 kHz and takes ``rates``; stream ``i``
    stops by itself after ``stop_after[i]`` callbacks; with ``hang_on_close`` closing a
    stream never returns."""
    def query_devices(device: object = None, kind: str | None = None) -> Any:
        info = {"name": "fake", "index": 0, "max_input_channels": 1,
                "max_output_channels": 2, "default_samplerate": 44100.0}
        return info if kind else [info]

    def check_settings(*, samplerate: float, **_: Any) -> None:
        if samplerate not in rates:
            raise RuntimeError("Invalid sample rate [PaErrorCode -9997]")

    def make_stream(**kwargs: Any) -> FakeStream:
        plan, stalls = stop_after or [], stall_after or []
        after = plan[len(streams)] if len(streams) < len(plan) else None
        stall = stalls[len(streams)] if len(streams) < len(stalls) else None
        streams.append(FakeStream(stop_after=after, hang_on_close=hang_on_close,
                                  stall_after=stall, **kwargs))
        return streams[-1]

    def exit_handler() -> None:  # sounddevice's atexit hook: Pa_Terminate
        pass

    return SimpleNamespace(query_devices=query_devices, Stream=make_stream,
                           _exit_handler=exit_handler,
                           check_input_settings=check_settings,
                           check_output_settings=check_settings,
                           default=SimpleNamespace(device=(0, 0)))


def _listen_until_sigterm(device: devices.SoundDevice, log: EventLog, *, after_s: float) -> None:
    """`listen` on ``device`` with fake engines until a SIGTERM ``after_s`` in."""
    engines = fake_engines()
    timer = threading.Timer(after_s, os.kill, (os.getpid(), signal.SIGTERM))
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


def test_listen_answers_on_the_card_and_stops_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[FakeStream] = []
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd(streams))
    device = devices.SoundDevice(block_ms=10)
    assert device.sample_rate_hz == 48000
    log = EventLog()
    _listen_until_sigterm(device, log, after_s=4.0)
    names = [type(e).__name__ for e in log.events]
    assert "SpeechStarted" in names and "PlaybackStarted" in names
    assert streams[0].calls > 100 and streams[0].loud_out > 0
    assert not streams[0].active and streams[0].closed


def test_list_devices_and_missing_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd([]))
    listed = devices.list_devices()
    assert listed[0].default_rate_hz == 44100 and listed[0].is_default_output

    def broken(device: object = None, kind: str | None = None) -> Any:
        raise RuntimeError("Error querying device -1")

    fake = _fake_sd([])
    fake.query_devices = broken
    monkeypatch.setattr(devices, "_sounddevice", lambda: fake)
    with pytest.raises(DeviceError, match="no usable audio device"):
        devices.SoundDevice()


def test_echo_cancellation_needs_10_ms_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd([]))
    with pytest.raises(DeviceError, match="10 ms blocks"):
        devices.SoundDevice(block_ms=20, echo_cancel=True)


def test_48_khz_when_the_device_takes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd([]))
    assert devices.SoundDevice().sample_rate_hz == 48000
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd([], rates=(44100,)))
    assert devices.SoundDevice().sample_rate_hz == 44100  # the device's default
    assert devices.SoundDevice(sample_rate_hz=16000).sample_rate_hz == 16000


async def _run_device(device: devices.SoundDevice, seconds: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await asyncio.wait_for(device.run(lambda: None, stop), timeout=seconds + 10)


def test_a_stream_that_stops_by_itself_is_reopened(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[FakeStream] = []
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd(streams, stop_after=[20]))
    opened: list[str] = []
    device = devices.SoundDevice(on_open=opened.append)
    asyncio.run(_run_device(device, 1.5))
    assert len(streams) == 2 and device.restarts == 1
    assert device.buffer_latency_ms == pytest.approx(20)  # the fake's 10 ms each way
    assert streams[1].calls > 20  # the second stream ran on
    assert len(opened) == 1 and opened[0].startswith("48000 Hz, 480-sample blocks")


def test_a_stream_that_stalls_is_reopened(monkeypatch: pytest.MonkeyPatch) -> None:
    """Active, yet no callback any more (a sound server killed under PortAudio): after
    ``STALLED_S`` the stream is taken as stopped and reopened, so `listen` never waits
    for good."""
    streams: list[FakeStream] = []
    monkeypatch.setattr(devices, "_sounddevice", lambda: _fake_sd(streams, stall_after=[20]))
    monkeypatch.setattr(devices, "STALLED_S", 0.5)
    device = devices.SoundDevice()
    asyncio.run(_run_device(device, 2.0))
    assert len(streams) == 2 and device.restarts == 1
    assert streams[0].calls == 20 and streams[1].calls > 20


def test_a_stream_that_keeps_stopping_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[FakeStream] = []
    monkeypatch.setattr(devices, "_sounddevice",
                        lambda: _fake_sd(streams, stop_after=[2] * 10))
    device = devices.SoundDevice()
    with pytest.raises(DeviceError, match="stopped 4 times"):
        asyncio.run(_run_device(device, 5))
    assert len(streams) == devices.MAX_RESTARTS + 1


def test_a_stream_that_will_not_close_does_not_hang_the_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PortAudio's close can block for good when the sound server dies: the loop goes on,
    the device counts as lost, and PortAudio's exit handler (which would block the
    process's exit on the same stream) is dropped."""
    streams: list[FakeStream] = []
    fake = _fake_sd(streams, hang_on_close=True)
    monkeypatch.setattr(devices, "_sounddevice", lambda: fake)
    dropped: list[object] = []
    monkeypatch.setattr(atexit, "unregister", dropped.append)
    device = devices.SoundDevice()
    with pytest.raises(DeviceError, match="did not close within 0.5 s"):  # not a hang
        asyncio.run(_run_device(device, 0.5))
    assert device.hung and not streams[0].active and not streams[0].closed
    assert dropped == [fake._exit_handler]


def test_listen_stopping_leaves_a_stream_that_will_not_close(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while the stream hangs in its close: the pipeline stops waiting for the
    device and `listen` returns; PortAudio's exit handler is dropped all the same."""
    streams: list[FakeStream] = []
    fake = _fake_sd(streams, hang_on_close=True)
    monkeypatch.setattr(devices, "_sounddevice", lambda: fake)
    monkeypatch.setattr(devices, "CLOSE_TIMEOUT_S", 30.0)  # longer than the pipeline waits
    dropped: list[object] = []
    monkeypatch.setattr(atexit, "unregister", dropped.append)
    device = devices.SoundDevice()
    _listen_until_sigterm(device, EventLog(), after_s=1.0)  # returns: no hang
    assert device.hung and dropped == [fake._exit_handler]


def test_a_device_index_given_as_digits_is_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """`listen --input-device 3` means device 3, as `voicebox devices` lists it, not a
    device whose name contains "3"."""
    asked: list[object] = []
    fake = _fake_sd([])
    query = fake.query_devices

    def recording(device: object = None, kind: str | None = None) -> Any:
        asked.append(device)
        return query(device, kind)

    fake.query_devices = recording
    monkeypatch.setattr(devices, "_sounddevice", lambda: fake)
    devices.SoundDevice(input_device="3", output_device="USB")
    assert asked == [3, "USB"]
