"""The emulated card over TCP: loopback by default, the same driver and protocol."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.card.conftest import FAST
from tests.card.fakes import FakeStandIn, full_reply
from tests.test_cli import assert_one_line_error
from voicebox.card.answers import StreamDone, TokenPiece
from voicebox.card.driver import CardDriver
from voicebox.card.emulator import CardEmulator
from voicebox.card.errors import CardLinkError
from voicebox.card.profile import FirmwareProfile
from voicebox.card.transport import LOOPBACK, TcpAddress, parse_tcp
from voicebox.engines.protocols import ChatMessage


@pytest.mark.parametrize(("spec", "address"), [
    ("7777", TcpAddress(LOOPBACK, 7777)),
    ("tcp://7777", TcpAddress(LOOPBACK, 7777)),
    ("0.0.0.0:7777", TcpAddress("0.0.0.0", 7777)),
    ("tcp://card.local:80", TcpAddress("card.local", 80)),
    ("[::1]:7777", TcpAddress("::1", 7777)),
])
def test_tcp_addresses_default_to_loopback(spec: str, address: TcpAddress) -> None:
    assert parse_tcp(spec) == address
    assert str(address) == f"tcp://{address.host}:{address.port}"


@pytest.mark.parametrize("spec", ["", "tcp://host:", "host:port", "1:99999"])
def test_a_bad_tcp_address_is_a_link_error(spec: str) -> None:
    with pytest.raises(CardLinkError, match="not a TCP address"):
        parse_tcp(spec)


@pytest.fixture
def tcp_emulator(hc1: FirmwareProfile) -> Iterator[CardEmulator]:
    with CardEmulator(hc1, FakeStandIn(), parse_tcp("0")) as emu:
        yield emu


def test_the_emulator_serves_loopback_on_the_port_it_was_given(
    tcp_emulator: CardEmulator,
) -> None:
    address = parse_tcp(tcp_emulator.address)
    assert address.host == LOOPBACK and address.port > 0
    with pytest.raises(CardLinkError, match="not a UNIX socket"):
        tcp_emulator.socket_path  # noqa: B018


def test_a_reply_streams_over_tcp(tcp_emulator: CardEmulator, hc1: FirmwareProfile) -> None:
    driver = CardDriver(tcp_emulator.address, timeouts=FAST)
    try:
        assert driver.identify().profile == hc1.name
        sid = driver.open_session()
        messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hello card")]
        driver.prefill(sid, messages, reserve_tokens=64)
        events = list(driver.generate(sid, 64, threading.Event()))
        assert isinstance(events[-1], StreamDone)
        text = "".join(e.text for e in events if isinstance(e, TokenPiece))
        assert text == full_reply()
    finally:
        driver.close()


def test_no_card_at_a_tcp_address_is_a_link_error() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    with pytest.raises(CardLinkError, match="cannot connect"):
        CardDriver(f"tcp://{LOOPBACK}:{port}", timeouts=FAST)


def test_serving_on_a_taken_port_is_a_link_error(
    tcp_emulator: CardEmulator, hc1: FirmwareProfile
) -> None:
    taken = parse_tcp(tcp_emulator.address)
    with pytest.raises(CardLinkError, match="cannot serve on"):
        CardEmulator(hc1, FakeStandIn(), taken).start()


def test_serving_on_a_unix_path_that_cannot_be_one_is_a_link_error(
    hc1: FirmwareProfile, tmp_path: Path
) -> None:
    """A missing folder is a one-line error, and a file in the way is left as it is."""
    with pytest.raises(CardLinkError, match="cannot serve on .*No such file"):
        CardEmulator(hc1, FakeStandIn(), tmp_path / "no" / "card.sock").start()
    kept = tmp_path / "notes.txt"
    kept.write_text("mine")
    with pytest.raises(CardLinkError, match="exists and is not a socket"):
        CardEmulator(hc1, FakeStandIn(), kept).start()
    assert kept.read_text() == "mine"


@pytest.mark.slow
def test_card_serve_over_tcp_and_status_from_another_process() -> None:
    """`voicebox card serve --tcp` with the real stand-in; `card status` connects to it."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "voicebox", "card", "serve", "--tcp", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        assert "serving on tcp://127.0.0.1:" in line, (line, serve.stderr)
        address = line.split("serving on ")[1].split()[0]
        status = subprocess.run(
            [sys.executable, "-m", "voicebox", "card", "status", "--device", address],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert status.returncode == 0, status.stderr
        assert "hc1-llama3.1-8b" in status.stdout
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    bad = subprocess.run(
        [sys.executable, "-m", "voicebox", "card", "status", "--device", "tcp://nowhere:x"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert_one_line_error(bad, "not a TCP address")


@pytest.mark.slow
def test_the_emulated_engine_can_serve_its_card_over_tcp() -> None:
    """`--engine emulated --device tcp://127.0.0.1:0`: the real stand-in, over loopback."""
    from voicebox.card.factory import build_card_engine

    engine = build_card_engine("emulated", None, f"tcp://{LOOPBACK}:0")
    try:
        assert engine.identity.profile == "hc1-llama3.1-8b"
        messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
        reply = "".join(engine.stream(messages, max_tokens=8, cancel=threading.Event()))
        assert reply.strip()
    finally:
        engine.close()


def test_a_peer_that_sends_garbage_is_named_as_such() -> None:
    """Not a card at all (or a garbled link): the error says bytes came and none were a
    frame, not that nothing came."""
    from voicebox.card.errors import CardTimeoutError

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def babble() -> None:
        conn, _ = listener.accept()
        with conn:
            while not done.is_set():
                try:
                    conn.sendall(b"\x07not a frame\xff" * 8)
                except OSError:
                    return
                done.wait(0.02)

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    try:
        with pytest.raises(CardTimeoutError, match=r"sent \d+ bytes but no valid frame"):
            CardDriver(f"tcp://127.0.0.1:{port}", timeouts=FAST).identify()
    finally:
        done.set()
        listener.close()
        thread.join(timeout=5)
