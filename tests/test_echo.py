"""Echo cancellation (WebRTC AEC3 through the livekit wheel) on real recorded speech."""

from __future__ import annotations

import numpy as np
import pytest

from tests.clips import dbfs, needs_testdata, read_clip
from voicebox.audio.echo import EchoCanceller
from voicebox.audio.resample import resample

RATE = 48000
BLOCK = RATE // 100


def _run(far: np.ndarray, near: np.ndarray, delay_s: float, gain: float) -> np.ndarray:
    """The microphone hears ``near`` plus ``far`` played back ``delay_s`` late at ``gain``."""
    echo = gain * np.concatenate([np.zeros(round(delay_s * RATE), np.float32), far])[: len(far)]
    mic = (near + echo).astype(np.float32)
    aec = EchoCanceller(RATE)
    aec.set_delay_ms(50)
    out = []
    for i in range(0, len(far) - BLOCK + 1, BLOCK):
        out.append(aec.captured(mic[i : i + BLOCK]).copy())  # as the input ring copies
        aec.played(far[i : i + BLOCK])  # as the card callback does: after the capture
    return np.concatenate(out)


@needs_testdata
def test_the_reply_is_removed_from_the_microphone() -> None:
    far = resample(read_clip("librivox/sense_and_sensibility_01_austen_64kb-0870"), 16000, RATE)
    far = (0.5 * far / np.abs(far).max()).astype(np.float32)
    echo_only = _run(far, np.zeros_like(far), delay_s=0.055, gain=0.5)
    echo = 0.5 * far
    # After the first second (the canceller converging) the echo is 30 dB down or more.
    assert dbfs(echo_only[RATE:]) < dbfs(echo[RATE : len(echo_only)]) - 30


@needs_testdata
def test_the_user_talking_over_the_reply_is_kept() -> None:
    far = resample(read_clip("librivox/sense_and_sensibility_01_austen_64kb-0870"), 16000, RATE)
    far = (0.5 * far / np.abs(far).max()).astype(np.float32)
    user = resample(read_clip("cards/005"), 16000, RATE)
    near = np.zeros_like(far)
    start = 3 * RATE  # the user barges in 3 s into the reply, as loud as its echo
    near[start : start + len(user)] = 0.5 * user[: len(far) - start] / np.abs(user).max()
    out = _run(far, near, delay_s=0.055, gain=0.5)
    span = slice(start, min(start + len(user), len(out)))
    kept = out[span]
    said = near[span]
    # The user's voice comes through (AEC3 damps double talk a little, never drops it),
    # about one 10 ms block late: its 10 ms loudness follows the user's.
    assert dbfs(kept) > dbfs(said) - 10
    assert np.corrcoef(_envelope(kept[BLOCK:]), _envelope(said[:-BLOCK]))[0, 1] > 0.8


@needs_testdata
def test_the_canceller_rests_between_replies_and_keeps_what_it_learned() -> None:
    """A second of silence played and the microphone passes as it is (no call into the
    module: what idle listening costs); the next reply's echo goes at once, as the filter
    learned on the first reply is kept."""
    reply = resample(read_clip("librivox/sense_and_sensibility_01_austen_64kb-0870"), 16000, RATE)
    reply = (0.5 * reply / np.abs(reply).max()).astype(np.float32)
    gap = np.zeros(3 * RATE, np.float32)
    far = np.concatenate([reply, gap, reply])
    echo = 0.5 * np.concatenate([np.zeros(round(0.055 * RATE), np.float32), far])[: len(far)]
    mic = echo.astype(np.float32)
    aec = EchoCanceller(RATE)
    aec.set_delay_ms(50)
    assert aec.resting  # nothing played yet
    out, resting = [], []
    for i in range(0, len(far) - BLOCK + 1, BLOCK):
        block = mic[i : i + BLOCK]
        cleaned = aec.captured(block)
        if aec.resting:
            assert cleaned is block
        out.append(cleaned)
        aec.played(far[i : i + BLOCK])
        resting.append(aec.resting)
    gap_blocks = resting[len(reply) // BLOCK : (len(reply) + len(gap)) // BLOCK]
    assert sum(gap_blocks) >= len(gap_blocks) - 110  # all but the first second (and echo)
    again = len(reply) + len(gap)
    cleaned = np.concatenate(out)[again : again + RATE]
    assert dbfs(cleaned) < dbfs(echo[again : again + RATE]) - 30


def _envelope(x: np.ndarray) -> np.ndarray:
    frames = x[: len(x) // BLOCK * BLOCK].reshape(-1, BLOCK)
    return np.asarray(np.sqrt((frames**2).mean(axis=1)))


def test_echo_cancellation_takes_10_ms_blocks() -> None:
    aec = EchoCanceller(RATE)
    with pytest.raises(ValueError, match="480-sample blocks"):
        aec.captured(np.zeros(512, np.float32))
