"""The sound card: a sounddevice duplex stream (the only PortAudio code in voicebox)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicebox.audio.echo import BLOCK_MS, EchoCanceller
from voicebox.audio.ring import DuplexCore
from voicebox.errors import DeviceError

_LOGGER = logging.getLogger(__name__)

PREFERRED_RATE_HZ = 48000
MAX_RESTARTS = 3
"""Streams that stop by themselves within ``RESTART_WINDOW_S`` before the device counts
as gone."""
RESTART_WINDOW_S = 10.0
CLOSE_TIMEOUT_S = 0.5
STALLED_S = 2.0
"""A stream that says it is active but has called back for no block in this long has
lost its device (a sound server killed under it leaves PortAudio waiting for good)."""
"""How long closing a stream may take before the device counts as hung (a close takes
~30 ms: the playback buffer drains)."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One PortAudio device."""

    index: int
    name: str
    inputs: int
    outputs: int
    default_rate_hz: int
    is_default_input: bool
    is_default_output: bool


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # libportaudio missing
        raise DeviceError(f"PortAudio is not available ({exc}); install libportaudio2") from None
    return sounddevice


def list_devices() -> list[DeviceInfo]:
    """All audio devices PortAudio sees."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default_in, default_out = sd.default.device
    except Exception as exc:  # PortAudioError
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    return [
        DeviceInfo(
            index=i, name=str(d["name"]),
            inputs=int(d["max_input_channels"]), outputs=int(d["max_output_channels"]),
            default_rate_hz=int(d["default_samplerate"]),
            is_default_input=i == default_in, is_default_output=i == default_out,
        )
        for i, d in enumerate(devices)
    ]


def _device(spec: int | str | None) -> int | str | None:
    """A PortAudio device: its index (digits on the command line count as one), or part
    of its name."""
    return int(spec) if isinstance(spec, str) and spec.strip().isdigit() else spec


class SoundDevice:
    """A duplex stream on one clock: capture and playback share the callback."""

    def __init__(
        self,
        *,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        sample_rate_hz: int | None = None,
        block_ms: float = 10.0,
        on_open: Callable[[str], None] | None = None,
        echo_cancel: bool = False,
    ) -> None:
        """``on_open`` is called with a one-line description (rates, buffer latencies) once
        the stream runs: the moment the assistant can hear. ``echo_cancel`` removes the
        reply's echo from the microphone (``audio.echo``; 10 ms blocks only)."""
        sd = _sounddevice()
        try:
            in_info = sd.query_devices(_device(input_device), "input")
            out_info = sd.query_devices(_device(output_device), "output")
        except Exception as exc:  # no default device, bad name, unplugged
            raise DeviceError(
                f"no usable audio device ({exc}); see `voicebox devices`, "
                "or run `voicebox simulate` without one"
            ) from None
        self._sd = sd
        self._devices = (in_info["index"], out_info["index"])
        self._out_channels = min(2, int(out_info["max_output_channels"]))
        rate = sample_rate_hz or self._preferred_rate(int(out_info["default_samplerate"]))
        block = max(1, round(rate * block_ms / 1000))
        self.sample_rate_hz = rate
        self.core = DuplexCore(rate, block)
        self._mono_out = np.zeros(block, dtype=np.float32)
        self._echo: EchoCanceller | None = None
        if echo_cancel:
            if block != rate * BLOCK_MS // 1000:
                raise DeviceError(f"echo cancellation needs {BLOCK_MS} ms blocks "
                                  f"(block_ms = {block_ms:g})")
            self._echo = EchoCanceller(rate)
        self._on_open = on_open
        self.restarts = 0
        """Times the stream stopped by itself and was reopened."""
        self.hung = False
        """A stream did not close in time and was left to its thread (``_close``)."""
        self.buffer_latency_ms: float | None = None
        """Capture plus playback latency PortAudio reports for the open stream: what the
        sound card's buffers add to the pipeline's latency."""

    @property
    def block_samples(self) -> int:
        return self.core.block_samples

    def _preferred_rate(self, default_hz: int) -> int:
        """48 kHz when both sides take it, else the output's default rate.

        48 kHz is what sound servers (PipeWire, most PulseAudio setups) and most codecs
        run at. Through ALSA's pulse plugin a device reports 44.1 kHz, and PortAudio 19.6's
        ALSA duplex stream at 44.1 kHz on a 48 kHz server stopped after its first callback
        (scripts/listen_pulse.py); at 48 kHz it runs on either server rate."""
        try:
            self._sd.check_input_settings(device=self._devices[0], channels=1,
                                          samplerate=PREFERRED_RATE_HZ, dtype="float32")
            self._sd.check_output_settings(device=self._devices[1],
                                           channels=self._out_channels,
                                           samplerate=PREFERRED_RATE_HZ, dtype="float32")
        except Exception:  # PortAudioError: the rate is refused
            return default_hz
        return PREFERRED_RATE_HZ

    async def run(self, on_block: Callable[[], None], stop: asyncio.Event) -> None:
        """Run the stream until ``stop``; reopen it when it stops by itself (an xrun can
        end a PortAudio ALSA stream), and give up if that keeps happening."""
        loop = asyncio.get_running_loop()
        core, mono_out, echo = self.core, self._mono_out, self._echo

        def callback(indata: Any, outdata: Any, frames: int, _time: Any, status: Any) -> None:
            if status:
                core.xruns += 1
            heard = indata[:, 0] if echo is None else echo.captured(indata[:, 0])
            core.process(heard, mono_out[:frames])
            if echo is not None:  # its echo comes back a buffer's latency later
                echo.played(mono_out[:frames])
            outdata[:] = mono_out[:frames, None]
            loop.call_soon_threadsafe(on_block)

        stopped_at: list[float] = []
        while not stop.is_set():
            stream = self._open(callback, again=bool(stopped_at))
            try:
                self.buffer_latency_ms = 1000 * sum(stream.latency)
                if echo is not None:
                    echo.set_delay_ms(self.buffer_latency_ms)
                if not stopped_at:
                    self._announce(stream)
                await self._watch(stream, stop)
            finally:
                await self._close(stream)
            if stop.is_set():
                return
            now = time.monotonic()
            stopped_at = [t for t in stopped_at if now - t < RESTART_WINDOW_S] + [now]
            if len(stopped_at) > MAX_RESTARTS:
                raise DeviceError(f"audio device stopped {len(stopped_at)} times in "
                                  f"{RESTART_WINDOW_S:.0f} s (unplugged?)")
            self.restarts += 1
            _LOGGER.warning("audio stream stopped or stalled (an xrun?); reopening it")

    async def _watch(self, stream: Any, stop: asyncio.Event) -> None:
        """Until ``stop``, or the stream stops or stalls (no callback for ``STALLED_S``)."""
        blocks, moved_at = self.core.blocks, time.monotonic()
        while not stop.is_set() and stream.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            now = time.monotonic()
            if self.core.blocks != blocks:
                blocks, moved_at = self.core.blocks, now
            elif now - moved_at > STALLED_S:
                _LOGGER.warning("no audio from the device for %.1f s", now - moved_at)
                return

    async def _close(self, stream: Any) -> None:
        """Stop and close ``stream`` on a thread of its own, for at most
        ``CLOSE_TIMEOUT_S``.

        PortAudio's stop can block for good when the sound server dies under it (2 times
        in 9 through ALSA's pulse plugin, the server killed as `listen` got SIGTERM). The
        event loop must not block with it: the stream is left to its thread, PortAudio's
        exit handler (which would close it again, and block) is dropped, and the device
        counts as lost."""
        loop = asyncio.get_running_loop()
        closed = loop.create_future()

        def done() -> None:
            if not closed.done():
                closed.set_result(None)

        def close() -> None:
            with contextlib.suppress(Exception):  # a dead device's stop may fail
                stream.stop()  # before close: PortAudio can hang closing a running stream
            with contextlib.suppress(Exception):
                stream.close()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(done)

        threading.Thread(target=close, name="voicebox-audio-close", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(closed), timeout=CLOSE_TIMEOUT_S)
        except TimeoutError:
            raise DeviceError(f"audio device lost: its stream did not close within "
                              f"{CLOSE_TIMEOUT_S:g} s (its sound server stopped?)") from None
        finally:  # timed out, or cancelled (the pipeline stopping) while still closing
            if not closed.done():
                _LOGGER.warning("audio stream did not close (its sound server stopped?); "
                                "left to its thread")
                self.hung = True
                exit_handler = getattr(self._sd, "_exit_handler", None)
                if exit_handler is not None:
                    atexit.unregister(exit_handler)

    def _open(self, callback: Callable[..., None], *, again: bool = False) -> Any:
        """Open and start a stream."""
        stream = None
        try:
            stream = self._sd.Stream(
                samplerate=self.sample_rate_hz, blocksize=self.core.block_samples,
                device=self._devices, channels=(1, self._out_channels),
                dtype="float32", latency="low", callback=callback,
            )
            stream.start()
        except Exception as exc:  # PortAudioError: unplugged, busy, format refused
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            if again:
                raise DeviceError(f"audio device lost (unplugged, or its sound server "
                                  f"stopped?): {exc}") from None
            raise DeviceError(f"cannot open audio device: {exc}") from None
        return stream

    def _announce(self, stream: Any) -> None:
        in_s, out_s = stream.latency
        opened = (f"{self.sample_rate_hz} Hz, {self.core.block_samples}-sample blocks, "
                  f"latency in {in_s * 1000:.0f} ms / out {out_s * 1000:.0f} ms")
        _LOGGER.info("audio: %s", opened)
        if self._on_open is not None:
            self._on_open(opened)
