"""download(): resume, checksum, atomic placement, retries, timeouts, against a local server."""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import io
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from model_server import FileServer, Route

from voicebox.errors import ModelError
from voicebox.models.download import (
    _RedirectHandler,
    download,
    file_sha256,
    recorded_sha256,
    sidecar_path,
)

BODY = os.urandom(300_000) + b"end"
SHA = hashlib.sha256(BODY).hexdigest()


def fetch(url: str, dest: Path, **kwargs: Any) -> Path:
    options: dict[str, Any] = {
        "sha256": SHA,
        "progress": None,
        "timeout_s": 10.0,
        "retries": 0,
        "backoff_s": 0.0,
    }
    options.update(kwargs)
    path: Path = download(url, dest, **options)
    return path


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_downloads_verifies_and_records_the_hash(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "sub" / "m.bin"

    assert fetch(url, dest, progress=lambda d, t: seen.append((d, t))) == dest

    assert dest.read_bytes() == BODY
    assert not part_of(dest).exists()
    assert recorded_sha256(dest) == SHA
    assert seen[0] == (0, len(BODY)) and seen[-1] == (len(BODY), len(BODY))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_unpinned_download_records_the_computed_hash(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    dest = fetch(url, tmp_path / "m.bin", sha256=None)
    assert recorded_sha256(dest) == SHA == file_sha256(dest)
    assert sidecar_path(dest).read_text() == f"{SHA}  m.bin\n"


def test_resumes_after_dropped_connections(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY, drop_after=100_000, drops=2))
    dest = fetch(url, tmp_path / "m.bin", retries=3)

    assert dest.read_bytes() == BODY
    ranges = [rng for _, rng in file_server.requests]
    assert ranges == [None, "bytes=100000-", "bytes=200000-"]


def test_gives_up_after_retries_then_a_later_run_resumes(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add("/m.bin", Route(BODY, drop_after=120_000, drops=2))
    dest = tmp_path / "m.bin"

    with pytest.raises(ModelError, match=r"after 2 attempt\(s\).*resume from byte 240000"):
        fetch(url, dest, retries=1)
    assert not dest.exists()
    assert part_of(dest).stat().st_size == 240_000

    fetch(url, dest)
    assert dest.read_bytes() == BODY
    assert file_server.requests[-1] == ("/m.bin", "bytes=240000-")


def test_resumes_a_leftover_part_file(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    dest = tmp_path / "m.bin"
    part_of(dest).write_bytes(BODY[:50_000])

    fetch(url, dest)
    assert dest.read_bytes() == BODY
    assert file_server.requests == [("/m.bin", "bytes=50000-")]


def test_corrupt_leftover_part_is_rejected_and_removed(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    dest = tmp_path / "m.bin"
    part_of(dest).write_bytes(b"x" * 50_000)

    with pytest.raises(ModelError, match="checksum mismatch for m.bin"):
        fetch(url, dest)
    assert not part_of(dest).exists() and not dest.exists()
    fetch(url, dest)
    assert dest.read_bytes() == BODY


def test_starts_over_when_the_server_ignores_range(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY, ranges=False))
    dest = tmp_path / "m.bin"
    part_of(dest).write_bytes(BODY[:50_000])

    fetch(url, dest)
    assert dest.read_bytes() == BODY


def test_complete_leftover_part_is_finished_without_a_body(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    dest = tmp_path / "m.bin"
    part_of(dest).write_bytes(BODY)

    fetch(url, dest)
    assert dest.read_bytes() == BODY
    assert file_server.requests == [("/m.bin", f"bytes={len(BODY)}-")]


def test_wrong_bytes_fail_the_checksum(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(b"not the model" * 1000))
    dest = tmp_path / "m.bin"

    with pytest.raises(ModelError, match=f"checksum mismatch for m.bin: expected sha256 {SHA}"):
        fetch(url, dest)
    assert not dest.exists() and not part_of(dest).exists()
    assert not sidecar_path(dest).exists()


def test_checksum_error_is_one_line(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(b"wrong"))
    with pytest.raises(ModelError) as info:
        fetch(url, tmp_path / "m.bin")
    assert "\n" not in str(info.value)


def test_wrong_size_is_rejected(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    with pytest.raises(ModelError, match=f"is {len(BODY)} bytes, expected 12"):
        fetch(url, tmp_path / "m.bin", sha256=None, size_bytes=12)


def test_404_fails_at_once(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"HTTP 404 Not Found"):
        fetch(file_server.url("/missing.bin"), tmp_path / "m.bin", retries=3)
    assert len(file_server.requests) == 1
    assert not (tmp_path / "m.bin").exists()


def test_403_suggests_a_token(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/gated.bin", Route(b"", status=403))
    with pytest.raises(ModelError, match="HF_TOKEN"):
        fetch(url, tmp_path / "m.bin")


def test_server_errors_are_retried(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY, fail_first=2))
    assert fetch(url, tmp_path / "m.bin", retries=2).read_bytes() == BODY
    assert len(file_server.requests) == 3


def test_stalled_server_times_out(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY, stall="headers"))
    with pytest.raises(ModelError, match="failed after 2 attempt.*timed out"):
        fetch(url, tmp_path / "m.bin", timeout_s=0.3, retries=1)
    assert len(file_server.requests) == 2


def test_stall_mid_body_times_out_and_keeps_the_part(
    file_server: FileServer, tmp_path: Path
) -> None:
    url = file_server.add("/m.bin", Route(BODY, stall="body"))
    dest = tmp_path / "m.bin"
    with pytest.raises(ModelError, match="stalled past the timeout"):
        fetch(url, dest, timeout_s=0.3)
    kept = part_of(dest).read_bytes()  # a chunk caught by the timeout may be lost
    assert 0 < len(kept) <= len(BODY) // 2 and BODY.startswith(kept)


def test_body_without_length_is_read_to_the_end(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY, length=False))
    seen: list[int | None] = []
    fetch(url, tmp_path / "m.bin", progress=lambda _d, t: seen.append(t))
    assert (tmp_path / "m.bin").read_bytes() == BODY
    assert set(seen) == {None}


def test_follows_redirects(file_server: FileServer, tmp_path: Path) -> None:
    file_server.add("/m.bin", Route(BODY))
    url = file_server.add("/resolve/m.bin", Route(b"", redirect="/m.bin"))
    assert fetch(url, tmp_path / "m.bin").read_bytes() == BODY


def test_complete_file_is_not_downloaded_again(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    dest = tmp_path / "m.bin"
    fetch(url, dest)
    fetch(url, dest)
    assert len(file_server.requests) == 1


def test_a_file_failing_its_hash_is_replaced(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    dest = tmp_path / "m.bin"
    dest.write_bytes(b"stale")
    fetch(url, dest)
    assert dest.read_bytes() == BODY


def test_refuses_the_hub_when_offline(tmp_path: Path) -> None:
    url = "https://huggingface.co/org/repo/resolve/main/m.bin"
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        fetch(url, tmp_path / "m.bin")


def test_bad_sha256_argument(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="64 hex digits"):
        fetch("http://127.0.0.1:9/m.bin", tmp_path / "m.bin", sha256="abc")


def test_a_second_downloader_is_refused(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", Route(BODY))
    dest = tmp_path / "m.bin"
    with part_of(dest).open("wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ModelError, match="already downloading"):
            fetch(url, dest)
    assert file_server.requests == []


def test_redirect_to_another_host_drops_the_token() -> None:
    request = urllib.request.Request(
        "https://huggingface.co/a/resolve/main/m.bin", headers={"Authorization": "Bearer t"}
    )
    handler = _RedirectHandler()
    fp, headers = io.BytesIO(), http.client.HTTPMessage()
    other = handler.redirect_request(request, fp, 302, "Found", headers, "https://cdn.example/m")
    same = handler.redirect_request(request, fp, 302, "Found", headers, "https://huggingface.co/m")
    assert other is not None and not other.has_header("Authorization")
    assert same is not None and same.has_header("Authorization")


@pytest.mark.parametrize("url", ["notaurl", "file:///etc/passwd", "ftp://127.0.0.1/m.bin"])
def test_only_http_urls_are_fetched(tmp_path: Path, url: str) -> None:
    with pytest.raises(ModelError, match="not an http\\(s\\) URL"):
        fetch(url, tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


@pytest.mark.parametrize(("timeout_s", "retries"), [(0.0, 0), (float("nan"), 0), (1.0, -3)])
def test_bad_timeout_or_retries(tmp_path: Path, timeout_s: float, retries: int) -> None:
    with pytest.raises(ModelError, match="timeout must be > 0 s and the retries >= 0"):
        fetch("http://127.0.0.1:9/m.bin", tmp_path / "m.bin", timeout_s=timeout_s,
              retries=retries)


def test_a_server_that_answers_garbage_is_one_short_line(tmp_path: Path) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"\x00\x13\xfe garbage \r\n\x07" * 200 + b"\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(ModelError) as info:
            fetch(f"http://127.0.0.1:{port}/m.bin", tmp_path / "m.bin")
    finally:
        thread.join(timeout=5)
        listener.close()
    message = str(info.value)
    assert "\n" not in message and "\x00" not in message and len(message) < 400, message
    assert message.isprintable()
