"""Inference below the audio: the engines' threads run at a higher nice value.

On two cores the ASR, the LLM, the TTS and the sound server all want the CPU at the end
of a turn, and a PortAudio callback that waits for a core past its buffer is an xrun:
through PulseAudio here, 3-18 xruns in 7 of 8 `listen` runs, and after them the echo
canceller heard its own reply as the user for a while. Raising the nice value of one's
own threads needs no privilege (lowering it back does), and on Linux it is a property of
each thread, inherited by the threads it starts: so the engine workers nice themselves,
and the threads the engines start while loading (CTranslate2's and onnxruntime's pools,
the emulated card's server) are niced once they exist. The audio callback, the event
loop and the VAD's worker keep the nice value they started with.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

TASKS = "/proc/self/task"


def thread_ids() -> set[int]:
    """The native ids of this process's threads (empty where /proc has none)."""
    try:
        return {int(tid) for tid in os.listdir(TASKS)}
    except OSError:
        return set()


def lower_thread(tid: int, nice: int) -> None:
    """Raise thread ``tid``'s nice value to ``nice`` unless it is already that high.

    Best effort: a thread that ended meanwhile, or a system without per-thread nice
    values, is left as it is."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def lower_this_thread(nice: int) -> None:
    lower_thread(threading.get_native_id(), nice)


@contextlib.contextmanager
def new_threads_lowered(nice: int) -> Iterator[None]:
    """Nice every thread started inside the block (the caller's other threads, a robot's
    control loop say, are left alone)."""
    before = thread_ids()
    try:
        yield
    finally:
        for tid in thread_ids() - before:
            lower_thread(tid, nice)
