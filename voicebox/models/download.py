"""Download one model file over HTTP(S): resume, SHA-256 check, atomic rename, retries."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from voicebox.errors import ModelError

_LOGGER = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None], None]
"""Called with (bytes on disk so far, total bytes or None if the server did not say)."""

CHUNK_BYTES = 1 << 16
_HASH_CHUNK_BYTES = 1 << 20
MAX_BACKOFF_S = 30.0
_USER_AGENT = "voicebox-model-fetch/0.1"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_HF_HOSTS = ("huggingface.co", "hf.co")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _printable(text: str, limit: int = 120) -> str:
    """``text`` from a server (a status line, a reason) fit for a one-line message: control
    and non-ASCII bytes escaped, whitespace runs as one space, at most ``limit`` chars."""
    flat = " ".join(text.encode("ascii", "backslashreplace").decode("ascii").split())
    flat = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class _TransientError(Exception):
    """A failure worth another attempt: dropped connection, stall, 5xx."""


@dataclass(slots=True)
class _Partial:
    """What is on disk in the ``.part`` file; mutable, lives for one download call."""

    path: Path
    fh: IO[bytes]
    size: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    validator: str | None = None
    """Strong ETag or Last-Modified of the first response, sent back as If-Range."""
    total: int | None = None

    def rewind(self) -> None:
        self.fh.seek(0)
        self.fh.truncate()
        self.size = 0
        self.hasher = hashlib.sha256()

    def append(self, chunk: bytes) -> None:
        try:
            self.fh.write(chunk)
        except OSError as exc:
            raise ModelError(f"cannot write {self.path}: {exc.strerror}") from exc
        self.hasher.update(chunk)
        self.size += len(chunk)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(dest: Path) -> Path:
    """Where the SHA-256 of a downloaded file is recorded (``sha256sum`` format)."""
    return dest.with_name(dest.name + ".sha256")


def recorded_sha256(dest: Path) -> str | None:
    """The SHA-256 recorded beside ``dest`` by :func:`download`, if any."""
    try:
        digest = sidecar_path(dest).read_text(encoding="ascii").split(maxsplit=1)[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return digest if _SHA256.fullmatch(digest) else None


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    progress: ProgressFn | None,
    timeout_s: float,
    retries: int,
    size_bytes: int | None = None,
    backoff_s: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Bytes go to ``dest.part`` first; an interrupted download (this call's dropped
    connection, or an earlier run's leftover ``.part``) resumes with an HTTP Range request.
    The file is checked against ``sha256`` and ``size_bytes`` when given and only then
    renamed into place, so ``dest`` is either absent or complete. The computed SHA-256 is
    recorded in ``dest.sha256``. ``timeout_s`` bounds each connect and each read (a stalled
    server); dropped connections, stalls and 5xx answers are retried ``retries`` times
    with exponential backoff starting at ``backoff_s``. Every failure is a one-line
    ModelError.
    """
    expected = sha256.lower() if sha256 is not None else None
    if expected is not None and not _SHA256.fullmatch(expected):
        raise ModelError(f"sha256 for {dest.name} must be 64 hex digits, got {sha256!r}")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ModelError(f"cannot download {_printable(url)}: not an http(s) URL")
    if not timeout_s > 0 or retries < 0:
        raise ModelError(f"the timeout must be > 0 s and the retries >= 0 "
                         f"(got {timeout_s} s, {retries})")
    if dest.is_file() and _already_complete(dest, expected, size_bytes):
        _LOGGER.info("%s is already complete", dest)
        return dest
    _refuse_when_offline(url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create {dest.parent}: {exc.strerror}") from exc
    part = dest.with_name(dest.name + ".part")
    with _locked_part(part) as fh:
        state = _Partial(part, fh)
        _hash_existing(state)
        _fetch_with_retries(url, state, timeout_s, retries, backoff_s, progress)
        digest = state.hasher.hexdigest()
        wanted = size_bytes if size_bytes is not None else state.total
        if wanted is not None and state.size != wanted:
            part.unlink()
            raise ModelError(
                f"download of {dest.name} is {state.size} bytes, expected {wanted}; "
                f"the partial file was removed, try again"
            )
        if expected is not None and digest != expected:
            part.unlink()
            raise ModelError(
                f"checksum mismatch for {dest.name}: expected sha256 {expected}, got {digest}; "
                f"the download was discarded (wrong URL or a corrupted mirror?)"
            )
        fh.flush()
        os.fsync(fh.fileno())
        os.replace(part, dest)
    sidecar_path(dest).write_text(f"{digest}  {dest.name}\n", encoding="ascii")
    _fsync_dir(dest.parent)
    if expected is None:
        _LOGGER.warning("%s has no pinned sha256; computed %s", dest.name, digest)
    return dest


def _already_complete(dest: Path, expected: str | None, size_bytes: int | None) -> bool:
    if size_bytes is not None and dest.stat().st_size != size_bytes:
        return False
    if expected is None:
        return dest.stat().st_size > 0
    digest = recorded_sha256(dest)
    if digest is None or digest != expected:
        digest = file_sha256(dest)
    if digest != expected:
        _LOGGER.warning("%s exists but fails its sha256; downloading it again", dest)
    return digest == expected


def _refuse_when_offline(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if offline and any(host == h or host.endswith("." + h) for h in _HF_HOSTS):
        raise ModelError(f"HF_HUB_OFFLINE is set: not downloading {url}")


@contextlib.contextmanager
def _locked_part(part: Path) -> Iterator[IO[bytes]]:
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ModelError(f"cannot write {part}: {exc.strerror}") from exc
    with os.fdopen(fd, "r+b") as fh:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ModelError(f"another process is already downloading {part}") from exc
        yield fh


def _hash_existing(state: _Partial) -> None:
    state.fh.seek(0)
    while chunk := state.fh.read(_HASH_CHUNK_BYTES):
        state.hasher.update(chunk)
        state.size += len(chunk)
    if state.size:
        _LOGGER.info("resuming %s from byte %d", state.path, state.size)


def _fetch_with_retries(
    url: str,
    state: _Partial,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    progress: ProgressFn | None,
) -> None:
    opener = urllib.request.build_opener(_RedirectHandler())
    for attempt in range(retries + 1):
        try:
            _attempt(opener, url, state, timeout_s, progress)
            return
        except _TransientError as exc:
            if attempt == retries:
                raise ModelError(
                    f"download of {url} failed after {attempt + 1} attempt(s): {exc}; "
                    f"run the same command again to resume from byte {state.size}"
                ) from exc
            delay = min(backoff_s * 2**attempt, MAX_BACKOFF_S)
            _LOGGER.warning(
                "download of %s interrupted at byte %d (%s); retry %d/%d in %.1f s",
                url,
                state.size,
                exc,
                attempt + 1,
                retries,
                delay,
            )
            time.sleep(delay)


def _attempt(
    opener: urllib.request.OpenerDirector,
    url: str,
    state: _Partial,
    timeout_s: float,
    progress: ProgressFn | None,
) -> None:
    request = urllib.request.Request(url, headers=_headers(url, state))
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        with exc:
            _handle_http_error(url, exc, state)
        return
    except urllib.error.URLError as exc:
        raise _classify(url, exc.reason) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _classify(url, exc) from exc
    with response:
        _stream(response, state, progress)


def _headers(url: str, state: _Partial) -> dict[str, str]:
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    host = urllib.parse.urlsplit(url).hostname or ""
    token = os.environ.get("HF_TOKEN")
    if token and any(host == h or host.endswith("." + h) for h in _HF_HOSTS):
        headers["Authorization"] = f"Bearer {token}"
    if state.size:
        headers["Range"] = f"bytes={state.size}-"
        if state.validator is not None:
            headers["If-Range"] = state.validator
    return headers


def _handle_http_error(url: str, exc: urllib.error.HTTPError, state: _Partial) -> None:
    if exc.code == 416 and state.size:
        match = _UNSATISFIED_RANGE.search(exc.headers.get("Content-Range", ""))
        if match is not None and int(match.group(1)) == state.size:
            state.total = state.size  # an earlier run already got every byte
            return
        state.rewind()
        raise _TransientError("server refused to resume; starting over")
    if exc.code in _RETRY_STATUS:
        raise _TransientError(f"HTTP {exc.code} {_printable(str(exc.reason))}")
    hint = ""
    if exc.code in (401, 403):
        hint = " (gated or private: set HF_TOKEN to a Hugging Face access token)"
    reason = _printable(str(exc.reason))
    raise ModelError(f"download of {url} failed: HTTP {exc.code} {reason}{hint}")


def _classify(url: str, reason: object) -> Exception:
    """Turn a connection-level failure into a retryable or a final error."""
    host = urllib.parse.urlsplit(url).hostname
    if isinstance(reason, socket.gaierror):
        return ModelError(f"cannot resolve {host} (no network or DNS?) while fetching {url}")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return ModelError(
            f"TLS certificate of {host} rejected ({reason.verify_message}); "
            f"is the board's clock set?"
        )
    if isinstance(reason, TimeoutError):
        return _TransientError("timed out waiting for the server")
    return _TransientError(_printable(str(reason)) or type(reason).__name__)


def _stream(
    response: http.client.HTTPResponse, state: _Partial, progress: ProgressFn | None
) -> None:
    if response.status == 206:
        match = _CONTENT_RANGE.search(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != state.size:
            state.rewind()
            raise _TransientError("server resumed at the wrong offset; starting over")
        total = None if match.group(3) == "*" else int(match.group(3))
    else:
        if state.size:
            _LOGGER.info("server ignored the resume request; starting over")
            state.rewind()
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        state.validator = _strong_validator(response)
    state.total = total
    state.fh.seek(state.size)
    if total is not None:
        _check_disk_space(state, total - state.size)
    if progress is not None:
        progress(state.size, total)
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except TimeoutError as exc:
            raise _TransientError(f"server stalled past the timeout at byte {state.size}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _TransientError(
                f"connection lost at byte {state.size}: {_printable(repr(exc))}") from exc
        if not chunk:
            break
        state.append(chunk)
        if progress is not None:
            progress(state.size, total)
    # HTTPResponse.read(n) returns b"" when the peer closes early instead of raising.
    if total is not None and state.size < total:
        raise _TransientError(f"connection closed at byte {state.size} of {total}")


def _strong_validator(response: http.client.HTTPResponse) -> str | None:
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _check_disk_space(state: _Partial, remaining: int) -> None:
    folder = state.path.parent
    free = shutil.disk_usage(folder).free
    if remaining > free:
        raise ModelError(
            f"not enough disk space in {folder}: {remaining} bytes to download, {free} free"
        )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the hub sends files from a CDN) without leaking the token there."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old_host = urllib.parse.urlsplit(req.full_url).hostname
        if new is not None and urllib.parse.urlsplit(newurl).hostname != old_host:
            new.remove_header("Authorization")
        return new
