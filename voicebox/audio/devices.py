"""The sound card: a sounddevice duplex stream (the only PortAudio code in voicebox)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicebox.audio.ring import DuplexCore
from voicebox.errors import DeviceError

_LOGGER = logging.getLogger(__name__)


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


class SoundDevice:
    """A duplex stream on one clock: capture and playback share the callback."""

    def __init__(
        self,
        *,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
        sample_rate_hz: int | None = None,
        block_ms: float = 10.0,
    ) -> None:
        sd = _sounddevice()
        try:
            in_info = sd.query_devices(input_device, "input")
            out_info = sd.query_devices(output_device, "output")
        except Exception as exc:  # no default device, bad name, unplugged
            raise DeviceError(
                f"no usable audio device ({exc}); see `voicebox devices`, "
                "or run `voicebox simulate` without one"
            ) from None
        rate = sample_rate_hz or int(out_info["default_samplerate"])
        block = max(1, round(rate * block_ms / 1000))
        self.sample_rate_hz = rate
        self.core = DuplexCore(rate, block)
        self._sd = sd
        self._devices = (in_info["index"], out_info["index"])
        self._out_channels = min(2, int(out_info["max_output_channels"]))
        self._mono_out = np.zeros(block, dtype=np.float32)
        self.status_flags = 0

    @property
    def block_samples(self) -> int:
        return self.core.block_samples

    async def run(self, on_block: Callable[[], None], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        core, mono_out = self.core, self._mono_out

        def callback(indata: Any, outdata: Any, frames: int, _time: Any, status: Any) -> None:
            if status:
                core.xruns += 1
            core.process(indata[:, 0], mono_out[:frames])
            outdata[:] = mono_out[:frames, None]
            loop.call_soon_threadsafe(on_block)

        try:
            stream = self._sd.Stream(
                samplerate=self.sample_rate_hz, blocksize=core.block_samples,
                device=self._devices, channels=(1, self._out_channels),
                dtype="float32", latency="low", callback=callback,
            )
        except Exception as exc:  # PortAudioError: unplugged, busy, format refused
            raise DeviceError(f"cannot open audio device: {exc}") from None
        with stream:
            _LOGGER.info("audio: %d Hz, %d-sample blocks, latency %s", self.sample_rate_hz,
                         core.block_samples, stream.latency)
            while not stop.is_set():
                await asyncio.sleep(0.2)
                if not stream.active:
                    raise DeviceError("audio device stopped (unplugged?)")
