"""One dedicated thread per engine; synchronous engines are called from asyncio through it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

from voicebox.runtime.priority import lower_this_thread

T = TypeVar("T")

_DONE = object()


class EngineWorker:
    """Runs calls to one engine on its own single thread, never the default executor."""

    def __init__(self, name: str, *, nice: int = 0) -> None:
        """``nice``: the thread's nice value (``priority``), set as it starts."""
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vb-{name}",
                                        initializer=lower_this_thread, initargs=(nice,))

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def stream(
        self,
        make: Callable[[], Iterator[T]],
        cancel: threading.Event,
        go: threading.Event | None = None,
    ) -> AsyncGenerator[T, None]:
        """Iterate a blocking generator on the worker thread, yielding in the loop.

        Setting ``cancel`` (as closing this iterator does) makes the producer stop at
        its next item; the engine sees the same event. While ``go`` is clear the
        producer waits before asking for its next item (whoever clears it sets it again,
        and on cancel).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def produce() -> None:
            try:
                for item in make():
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                    if go is not None:
                        go.wait()
                    if cancel.is_set():
                        break
            except BaseException as exc:  # handed to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        future = loop.run_in_executor(self._pool, produce)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield cast(T, item)  # what ``make`` yielded
        finally:
            cancel.set()
            if not future.done():
                # Don't wait here: the worker stops at its next token.
                future.add_done_callback(lambda f: f.exception())

    def call(self, fn: Callable[..., T], *args: object, timeout_s: float | None = None) -> T:
        """Run ``fn`` on the worker thread and wait for it (outside the event loop).

        Raises ``TimeoutError`` when it has not finished within ``timeout_s``.
        """
        return self._pool.submit(fn, *args).result(timeout=timeout_s)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
