"""The emulated card: serves the host-card protocol on a UNIX socket (or a TCP address),
paced to the profile."""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

from voicebox.card.connection import TEMP_SOCKET_PREFIX, HostConnection, temp_socket_path
from voicebox.card.errors import CardLinkError
from voicebox.card.faults import ArmedFaults, Fault, FaultKind
from voicebox.card.firmware import EmulatedFirmware, FirmwareError
from voicebox.card.profile import FirmwareProfile
from voicebox.card.protocol import (
    MAGIC,
    NO_SESSION,
    VERSION,
    Command,
    ErrorCode,
    Frame,
    Reply,
    encode,
    parse_messages,
)
from voicebox.card.standin import StandInModel
from voicebox.card.timing import CardTiming
from voicebox.card.transport import TcpAddress

__all__ = ["CardEmulator", "temp_socket_path"]

_LOGGER = logging.getLogger(__name__)


class CardEmulator:
    """A card that behaves as the profile says, with text from a functional stand-in.

    Tokens are paced to the profile's timing model when the stand-in is faster; when
    the host is slower each reply reports the emulation lag instead of hiding it.
    """

    def __init__(
        self,
        profile: FirmwareProfile,
        stand_in: StandInModel,
        endpoint: Path | TcpAddress,
        *,
        pace: bool = True,
        seed: int = 1,
    ) -> None:
        self.firmware = EmulatedFirmware(profile, stand_in)
        self.profile = profile
        self.endpoint = endpoint
        """A UNIX socket path, or a TCP address (port 0: any free port, see ``address``)."""
        self.address = str(endpoint)
        """What a driver connects to (``tcp://HOST:PORT`` with the port bound)."""
        self.pace = pace
        self._rng = random.Random(seed)
        self._faults = ArmedFaults()
        self._hung = False
        self._dead = False
        self._listener: socket.socket | None = None
        self._connections: list[HostConnection] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._started = time.monotonic()
        self.counters: dict[str, float] = {
            "resets": 0,
            "tokens_total": 0,
            "card_ms_total": 0.0,
            "energy_mj_total": 0.0,
        }

    # -- lifecycle -------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        """The UNIX socket path (an emulator serving TCP has none)."""
        if not isinstance(self.endpoint, Path):
            raise CardLinkError(f"the emulated card serves {self.address}, not a UNIX socket")
        return self.endpoint

    def start(self) -> CardEmulator:
        """Listen on the socket and serve connections from background threads."""
        listener = self._listen()
        listener.listen(8)
        listener.settimeout(0.2)
        self._listener = listener
        thread = threading.Thread(target=self._accept, name="card-emu-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        _LOGGER.info("emulated card %s on %s", self.profile.name, self.address)
        return self

    def _listen(self) -> socket.socket:
        endpoint = self.endpoint
        if isinstance(endpoint, Path):
            if endpoint.exists() and not endpoint.is_socket():  # never delete a user's file
                raise CardLinkError(f"cannot serve on {endpoint}: it exists and is not a socket")
            with contextlib.suppress(FileNotFoundError):
                endpoint.unlink()  # a socket left by an earlier run
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(str(endpoint))
            except OSError as exc:  # no such folder, no permission, path too long
                listener.close()
                raise CardLinkError(
                    f"cannot serve on {endpoint}: {exc.strerror or exc}") from None
            return listener
        listener = socket.socket(endpoint.family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((endpoint.host, endpoint.port))
        except OSError as exc:
            listener.close()
            raise CardLinkError(f"cannot serve on {endpoint}: {exc.strerror or exc}") from None
        self.address = str(TcpAddress(endpoint.host, listener.getsockname()[1]))
        return listener

    def stop(self) -> None:
        """Close every connection and the socket; the stand-in model stays loaded."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        for conn in list(self._connections):
            conn.close()
        for thread in self._threads:
            thread.join(timeout=5.0)
        if isinstance(self.endpoint, Path):
            with contextlib.suppress(FileNotFoundError):
                self.endpoint.unlink()
            if self.endpoint.parent.name.startswith(TEMP_SOCKET_PREFIX):
                with contextlib.suppress(OSError):  # the private directory, once empty
                    self.endpoint.parent.rmdir()

    def __enter__(self) -> CardEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Arm ``fault`` (one-shot stream faults fire in the next reply that gets that far)."""
        self._faults.arm(fault)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._hung = self._dead = False

    @property
    def throttled(self) -> bool:
        return self._faults.throttled

    # -- serving ---------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn = HostConnection(sock)
            self._connections.append(conn)
            conn.reader.start()
            worker = threading.Thread(
                target=self._serve, args=(conn,), name="card-emu", daemon=True
            )
            worker.start()
            self._threads.append(worker)

    def _serve(self, conn: HostConnection) -> None:
        deferred: list[Frame | None] = []
        while not self._stopping.is_set():
            frame = deferred.pop(0) if deferred else conn.inbox.get()
            if frame is None:
                break
            if self._dead or (self._hung and frame.type != Command.RESET):
                continue
            try:
                self._handle(conn, frame, deferred)
            except FirmwareError as exc:
                self._error(conn, frame, exc.code, str(exc))
            except (KeyError, TypeError, ValueError) as exc:
                self._error(conn, frame, ErrorCode.BAD_REQUEST, f"malformed request: {exc!r}")
            except Exception as exc:  # the card answers; it never dies on a bad request
                _LOGGER.exception("emulated card failed on %s", frame)
                self._error(conn, frame, ErrorCode.INTERNAL, repr(exc))
        conn.close()
        with contextlib.suppress(ValueError):
            self._connections.remove(conn)

    def _reply(
        self, conn: HostConnection, frame: Frame, type_: Reply, body: dict[str, Any]
    ) -> None:
        conn.send(encode(type_, frame.session, frame.seq, body))

    def _error(self, conn: HostConnection, frame: Frame, code: ErrorCode, message: str) -> None:
        body = {"code": int(code), "name": code.name, "message": message}
        conn.send(encode(Reply.ERROR, frame.session, frame.seq, body))

    def _handle(self, conn: HostConnection, frame: Frame, deferred: list[Frame | None]) -> None:
        fw, body, sid = self.firmware, frame.body, frame.session
        match frame.type:
            case Command.IDENTIFY:
                self._reply(conn, frame, Reply.IDENTITY, {**fw.identity(), "protocol": VERSION})
            case Command.OPEN:
                if self._faults.take(FaultKind.EXHAUST):
                    limit = self.profile.sessions.max_sessions
                    raise FirmwareError(
                        ErrorCode.SESSIONS_EXHAUSTED, f"all {limit} sessions are in use"
                    )
                new = fw.open()
                conn.send(encode(Reply.OPENED, new, frame.seq, {"session": new}))
            case Command.CLOSE:
                fw.close(sid)
                self._reply(conn, frame, Reply.CLOSED, {})
            case Command.COUNT:
                tokens = fw.count(parse_messages(body))
                self._reply(conn, frame, Reply.COUNTED, {"tokens": tokens})
            case Command.PREFILL:
                self._prefill(conn, frame)
            case Command.SCORE_NEXT:
                self._score(conn, frame)
            case Command.GENERATE:
                self._generate(conn, frame, deferred)
            case Command.CANCEL:
                self._reply(conn, frame, Reply.CANCELLED, {"active": False})
            case Command.RESET:
                self._reset(conn, frame)
            case Command.STATUS:
                self._reply(conn, frame, Reply.STATUS, self._status())
            case _:
                self._error(conn, frame, ErrorCode.UNKNOWN_COMMAND, f"command {frame.type:#x}")

    def _prefill(self, conn: HostConnection, frame: Frame) -> None:
        body, t0 = frame.body, time.monotonic()
        timing = CardTiming(self.profile, throttled=self.throttled)
        open_turn = bool(body.get("open_turn", False))
        done = self.firmware.prefill(
            frame.session,
            parse_messages(body),
            reserve_tokens=int(body.get("reserve_tokens", 1)),
            continuation=str(body.get("continuation", "")),
            open_turn=open_turn,
        )
        # A reply's prefill is charged by its GENERATE; an open turn's is charged here.
        new = done.new_tokens + done.scoring_new_tokens
        card_ms = timing.prefill_ms(new) if open_turn else 0.0
        answer = {
            "prompt_tokens": done.prompt_tokens,
            "cached_tokens": done.cached_tokens,
            "new_tokens": done.new_tokens,
            "evicted_messages": done.evicted_messages,
            "card_ms": card_ms,
        }
        if open_turn:
            self._answer_model_command(conn, frame, Reply.PREFILLED, answer, timing, t0)
        else:
            self._reply(conn, frame, Reply.PREFILLED, answer)

    def _score(self, conn: HostConnection, frame: Frame) -> None:
        body, t0 = frame.body, time.monotonic()
        timing = CardTiming(self.profile, throttled=self.throttled)
        candidates = body.get("candidates", [])
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            raise TypeError("candidates must be a list of strings")
        scored = self.firmware.score(
            frame.session,
            parse_messages(body),
            reserve_tokens=int(body.get("reserve_tokens", 1)),
            candidates=candidates,
            end_of_turn=bool(body.get("end_of_turn", False)),
            warm_reply=bool(body.get("warm_reply", False)),
        )
        done = scored.prefilled
        answer = {
            "probabilities": scored.probabilities,
            "end_of_turn": scored.end_of_turn,
            "prompt_tokens": done.prompt_tokens,
            "cached_tokens": done.cached_tokens,
            "new_tokens": done.new_tokens,
            "evicted_messages": done.evicted_messages,
            # Prefill of the new tokens (both sequences' with ``warm_reply``), then the
            # logits of one forward pass: a first token.
            "card_ms": timing.token_ms(done.new_tokens + scored.reply_new_tokens, 0),
        }
        self._answer_model_command(conn, frame, Reply.SCORED, answer, timing, t0)

    def _answer_model_command(
        self,
        conn: HostConnection,
        frame: Frame,
        type_: Reply,
        answer: dict[str, Any],
        timing: CardTiming,
        t0: float,
    ) -> None:
        """Send the answer of a command that ran the model: paced, accounted, fault-prone.

        One-shot faults due at token 0 fire here (the answer counts as a reply's token 0).
        """
        card_ms = float(answer["card_ms"])
        delay = t0 + card_ms / 1000.0 - time.monotonic()
        if self.pace and delay > 0:
            time.sleep(delay)
        wall_ms = (time.monotonic() - t0) * 1000.0
        energy = timing.energy_mj(card_ms)
        self.counters["card_ms_total"] += card_ms
        self.counters["energy_mj_total"] += energy
        if self._stream_fault(conn, frame.session, 0):
            return
        data = encode(
            type_,
            frame.session,
            frame.seq,
            {
                **answer,
                "wall_ms": wall_ms,
                "lag_ms": max(0.0, wall_ms - card_ms),
                "energy_mj": energy,
                "throttled": timing.throttled,
            },
        )
        if self._faults.take(FaultKind.TRUNCATE, 0):
            data = data[: len(data) // 2]
        conn.send(data)

    def _reset(self, conn: HostConnection, frame: Frame) -> None:
        self.firmware.reset()
        self._hung = False
        self.counters["resets"] += 1
        self._reply(conn, frame, Reply.RESET_DONE, {})

    def _status(self) -> dict[str, Any]:
        throttled = self.throttled
        return {
            "sessions_open": self.firmware.sessions_open,
            "max_sessions": self.profile.sessions.max_sessions,
            "throttled": throttled,
            "temperature_c": 96.0 if throttled else 62.0,
            "uptime_s": round(time.monotonic() - self._started, 3),
            **self.counters,
        }

    def _generate(self, conn: HostConnection, frame: Frame, deferred: list[Frame | None]) -> None:
        sid, seq = frame.session, frame.seq
        max_tokens = int(frame.body["max_tokens"])
        cancel = threading.Event()
        prefilled, budget, pieces = self.firmware.generate(sid, max_tokens, cancel)
        timing = CardTiming(self.profile, throttled=self.throttled)
        new = prefilled.new_tokens
        with self.firmware.model_lock, contextlib.closing(pieces):
            t0 = time.monotonic()
            n, first_wall = 0, None
            for piece in pieces:
                if self._stream_interrupted(conn, frame, cancel, deferred):
                    return
                if cancel.is_set():
                    break
                due = t0 + timing.token_ms(new, n) / 1000.0
                delay = due - time.monotonic()
                if self.pace and delay > 0:
                    cancel.wait(delay)
                if self._stream_fault(conn, sid, n):
                    return
                data = encode(Reply.TOKEN, sid, seq, {"i": n, "t": piece})
                if self._faults.take(FaultKind.TRUNCATE, n):
                    data = data[: len(data) // 2]
                conn.send(data)
                first_wall = first_wall if first_wall is not None else time.monotonic()
                n += 1
            wall_ms = (time.monotonic() - t0) * 1000.0
        finish = (
            "cancelled"
            if cancel.is_set()
            else ("length" if budget == max_tokens else "context")
            if n >= budget
            else "stop"
        )
        card_ms = timing.reply_ms(new, n)
        energy = timing.energy_mj(card_ms)
        self.counters["tokens_total"] += n
        self.counters["card_ms_total"] += card_ms
        self.counters["energy_mj_total"] += energy
        ttft_wall = ((first_wall - t0) * 1000.0) if first_wall is not None else wall_ms
        conn.send(
            encode(
                Reply.DONE,
                sid,
                seq,
                {
                    "tokens": n,
                    "finish": finish,
                    "prompt_tokens": prefilled.prompt_tokens,
                    "new_prompt_tokens": new,
                    "card_ms": card_ms,
                    "card_ttft_ms": timing.token_ms(new, 0),
                    "wall_ms": wall_ms,
                    "wall_ttft_ms": ttft_wall,
                    "lag_ms": max(0.0, wall_ms - card_ms),
                    "energy_mj": energy,
                    "throttled": timing.throttled,
                },
            )
        )

    def _stream_interrupted(
        self,
        conn: HostConnection,
        frame: Frame,
        cancel: threading.Event,
        deferred: list[Frame | None],
    ) -> bool:
        """Handle frames that arrive mid-stream; True if a RESET ended the stream."""
        while True:
            try:
                incoming = conn.inbox.get_nowait()
            except queue.Empty:
                return False
            if incoming is None:
                cancel.set()
                deferred.append(incoming)
            elif incoming.type == Command.CANCEL and incoming.session == frame.session:
                cancel.set()
                self._reply(conn, incoming, Reply.CANCELLED, {"active": True})
            elif incoming.type == Command.RESET:
                self._reset(conn, incoming)
                return True
            else:
                deferred.append(incoming)

    def _stream_fault(self, conn: HostConnection, sid: int, n: int) -> bool:
        """Fire a stream fault due at token ``n``; True if the stream ends here."""
        if self._faults.take(FaultKind.HANG, n):
            _LOGGER.warning("fault: card hangs at token %d", n)
            self._hung = True
            return True
        if self._faults.take(FaultKind.DEAD, n):
            _LOGGER.warning("fault: card dies at token %d", n)
            self._dead = True
            return True
        if self._faults.take(FaultKind.RESET, n):
            _LOGGER.warning("fault: card resets itself at token %d", n)
            self.firmware.reset()
            self.counters["resets"] += 1
            for other in list(self._connections):
                other.send(encode(Reply.RESET_EVENT, NO_SESSION, 0, {"reason": "spontaneous"}))
            return True
        if self._faults.take(FaultKind.GARBAGE, n):
            junk = bytes(self._rng.randrange(256) for _ in range(48))
            conn.send(junk[:20] + MAGIC + junk[20:])
        return False
