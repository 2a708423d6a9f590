"""The emulated card's side of one host connection, and a private socket path for it."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
from pathlib import Path

from voicebox.card.protocol import Frame, FrameDecoder


class HostConnection:
    """One host connection: a reader thread feeding an inbox, writes under a lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox: queue.Queue[Frame | None] = queue.Queue()
        self._write_lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="card-emu-read", daemon=True)

    def _read(self) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    self.inbox.put(frame)
        except OSError:
            pass
        self.inbox.put(None)

    def send(self, data: bytes) -> None:
        with self._write_lock, contextlib.suppress(OSError):
            self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


TEMP_SOCKET_PREFIX = "voicebox-card-"


def temp_socket_path(name: str = "card") -> Path:
    """A fresh socket path in a private temp directory (UNIX socket paths are short); the
    emulator serving it removes the directory when it stops."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix=TEMP_SOCKET_PREFIX))
    os.chmod(directory, 0o700)
    return directory / f"{name}.sock"
