"""A stdlib HTTP file server on 127.0.0.1 for download tests: Range, drops, stalls, errors."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Route:
    """What the server does for one path."""

    body: bytes
    drop_after: int | None = None
    """Close the connection after this many body bytes..."""
    drops: int = 0
    """...on this many requests, then serve normally."""
    stall: str | None = None
    """"headers": never answer; "body": send headers and half the body, then hang."""
    status: int = 200
    """Answer every request with this status and no body when not 200."""
    fail_first: int = 0
    """Answer 503 to this many requests first."""
    ranges: bool = True
    """Honour Range requests (else always send the whole file)."""
    length: bool = True
    """Send Content-Length (else close the connection to end the body)."""
    redirect: str | None = None
    """Answer 302 to this path."""

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest() + '"'


@dataclass
class FileServer:
    """A stdlib HTTP server in a thread, serving :class:`Route` s and logging requests."""

    host: str
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Range header) of each request, in order."""
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)


def _handler(server: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            rng = self.headers.get("Range")
            server.requests.append((self.path, rng))
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            if route.redirect is not None:
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.stall == "headers":
                server.release.wait(30)
                self.close_connection = True
                return
            if route.fail_first:
                route.fail_first -= 1
                self.send_error(503, "Busy")
                return
            if route.status != 200:
                self.send_error(route.status)
                return
            self._send_body(route, rng)

        def _send_body(self, route: Route, rng: str | None) -> None:
            body, start = route.body, 0
            match = _RANGE.fullmatch(rng or "")
            if_range = self.headers.get("If-Range")
            if match and route.ranges and (if_range is None or if_range == route.etag):
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("ETag", route.etag)
            payload = body[start:]
            if route.length:
                self.send_header("Content-Length", str(len(payload)))
            else:
                self.close_connection = True
            self.end_headers()
            if route.stall == "body":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                server.release.wait(30)
                self.close_connection = True
                return
            if route.drops and route.drop_after is not None:
                route.drops -= 1
                self.wfile.write(payload[: route.drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@contextmanager
def serving() -> Iterator[FileServer]:
    """Run a server on 127.0.0.1 (port chosen by the OS) for the duration of the block."""
    state = FileServer("127.0.0.1", 0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="file-server", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
