"""The asyncio runtime: wires the device, turn detection, ASR, replies and playback."""
