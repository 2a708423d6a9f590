"""The byte link to a card: a character device (a real card), or the emulator's UNIX socket
or TCP address (``tcp://HOST:PORT``: an emulator on another machine)."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import termios
import tty
from pathlib import Path
from typing import NamedTuple, Protocol

from voicebox.card.errors import CardLinkError, CardTimeoutError

_LOGGER = logging.getLogger(__name__)


class Transport(Protocol):
    """A bidirectional byte stream with bounded waits."""

    def write(self, data: bytes, timeout_s: float) -> None:
        """Write all of ``data``; CardTimeoutError if the card does not take it in time."""
        ...

    def read_some(self, timeout_s: float) -> bytes:
        """Up to 64 KiB that arrived within ``timeout_s`` (b"" if none); CardLinkError on EOF."""
        ...

    def close(self) -> None: ...


class TcpAddress(NamedTuple):
    """Where an emulator serves over TCP."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


LOOPBACK = "127.0.0.1"


def parse_tcp(spec: str) -> TcpAddress:
    """``[tcp://][HOST:]PORT`` (HOST defaults to loopback); CardLinkError if malformed."""
    rest = spec.removeprefix("tcp://")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]") or LOOPBACK
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CardLinkError(f"not a TCP address: {spec!r} (want [tcp://][HOST:]PORT)")
    return TcpAddress(host, int(port))


class SocketTransport:
    """A stream socket to the emulator: its UNIX socket path, or a TCP address."""

    def __init__(self, address: str | TcpAddress) -> None:
        if isinstance(address, TcpAddress):
            family = address.family
            target: str | tuple[str, int] = (address.host, address.port)
        else:
            family, target = socket.AF_UNIX, address
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.settimeout(5.0)
        try:
            self._sock.connect(target)
        except OSError as exc:
            self._sock.close()
            raise CardLinkError(f"cannot connect to card socket {address}: {exc}") from exc
        if family != socket.AF_UNIX:  # tokens are small frames: send each at once
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.path = str(address)

    def write(self, data: bytes, timeout_s: float) -> None:
        self._sock.settimeout(timeout_s)
        try:
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise CardTimeoutError(f"card at {self.path} did not accept a command") from exc
        except OSError as exc:
            raise CardLinkError(f"link to card at {self.path} failed: {exc}") from exc

    def read_some(self, timeout_s: float) -> bytes:
        self._sock.settimeout(max(timeout_s, 1e-4))
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise CardLinkError(f"link to card at {self.path} failed: {exc}") from exc
        if not data:
            raise CardLinkError(f"card at {self.path} closed the link")
        return data

    def close(self) -> None:
        self._sock.close()


class DeviceTransport:
    """A character device or pseudo-terminal: the real card's byte pipe (read/write/select)."""

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise CardLinkError(f"cannot open card device {path}: {exc}") from exc
        if os.isatty(self._fd):
            tty.setraw(self._fd, termios.TCSANOW)  # frames are binary: no line discipline
        self.path = path

    def write(self, data: bytes, timeout_s: float) -> None:
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [self._fd], [], timeout_s)
            if not ready:
                raise CardTimeoutError(f"card at {self.path} did not accept a command")
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise CardLinkError(f"link to card at {self.path} failed: {exc}") from exc

    def read_some(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self._fd], [], [], max(timeout_s, 0.0))
        if not ready:
            return b""
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            raise CardLinkError(f"link to card at {self.path} failed: {exc}") from exc
        if not data:
            raise CardLinkError(f"card at {self.path} closed the link")
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def open_transport(device: str | Path) -> Transport:
    """The transport for ``device``: a device file (``/dev/...``), a UNIX socket path, or
    ``tcp://HOST:PORT``."""
    if str(device).startswith("tcp://"):
        return SocketTransport(parse_tcp(str(device)))
    path = str(device).removeprefix("unix://")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CardLinkError(f"card device {path} not found: {exc.strerror}") from exc
    if stat.S_ISSOCK(mode):
        return SocketTransport(path)
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return DeviceTransport(path)
    raise CardLinkError(f"{path} is neither a card device nor a card socket")
