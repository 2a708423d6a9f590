"""`voicebox listen` on a real audio stack without a sound card: PortAudio -> ALSA's pulse
plugin -> a private PulseAudio server.

  .venv/bin/python scripts/listen_pulse.py --in IN.wav --out OUT.wav [--tail-s S]
      [--echo-db DB] [--idle-s S] [--log-dir DIR] [-v]
      [-- LISTEN FLAGS, e.g. --engine emulated --profile hc1-llama3.1-8b --events F]

The server (its own runtime folder, no other client) holds one stereo null sink, the
"room". The user's WAV is played into its left channel; voicebox hears the left channel
(a remap source, the default source) and speaks into the right one (a remap sink, the
default sink); the room's monitor is recorded, both channels on the server's one clock.
OUT is the right channel from the sample where IN begins in the left one (found by
cross-correlation): time-aligned with IN as `voicebox simulate --out` is, so the judge
can score `listen`:

  python3 ../shared/bench/v2v.py SCENARIOS --cmd '.venv/bin/python scripts/listen_pulse.py
      --in {inp} --out {out}'

Against `simulate`, the latency gains the real audio path: PulseAudio's capture and
playback buffers, the ALSA plugin's and PortAudio's. Needs the apt packages pulseaudio,
pulseaudio-utils and libasound2-plugins (scripts/setup.sh installs them). The room is
echo-free (the microphone channel never hears the reply), so listen runs --echo-free;
``--echo-db DB`` leaks the speaker into the microphone DB dB down instead (a loudspeaker:
give listen ``--echo-cancel``). ``--idle-s S`` first measures listen's CPU and memory in
the silent room.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from voicebox.audio.resample import resample
from voicebox.audio.wav import read_wav, write_wav
from voicebox.errors import VoiceboxError

ROOM_HZ = 48000
"""The room's rate: a common sound-card rate, so PortAudio opens the stream at it."""
ROOM = "\n".join([
    "load-module module-native-protocol-unix auth-anonymous=1",
    f"load-module module-null-sink sink_name=room rate={ROOM_HZ} channels=2"
    " channel_map=front-left,front-right",
    "load-module module-remap-source source_name=mic master=room.monitor channels=1"
    " master_channel_map=front-left channel_map=mono remix=no",
    "load-module module-remap-sink sink_name=speaker master=room channels=1"
    " master_channel_map=front-right channel_map=mono remix=no",
    "set-default-source mic",
    "set-default-sink speaker",
    "",
])
"""The server's startup script: the room, the microphone that hears its left channel and
the speaker that plays into its right one."""
MATCH_S = 1.5
"""The start of the input the match is checked on."""
MIN_MATCH = 0.9
"""Normalised correlation below which the input was not found in the recording (the
server's copy of it, resampled back, correlates at 0.99 or more)."""


class HarnessError(Exception):
    """The audio stack could not be set up or the run failed; a one-line reason."""


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        flags = ["-v", "listen", *args.listen_flags] if args.verbose else ["listen",
                                                                         *args.listen_flags]
        run(args.inp, args.out, flags, tail_s=args.tail_s, log_dir=args.log_dir,
            idle_s=args.idle_s, echo_db=args.echo_db)
    except (HarnessError, VoiceboxError) as exc:
        print(f"listen_pulse: {exc}", file=sys.stderr)
        return 2
    return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    flags: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, flags = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--in", dest="inp", type=Path, required=True, help="the user's WAV")
    p.add_argument("--out", type=Path, required=True, help="what voicebox played, aligned")
    p.add_argument("--tail-s", type=float, default=3.0,
                   help="how long to keep listening after the input ends")
    p.add_argument("--log-dir", type=Path, help="keep the server's and voicebox's output here")
    p.add_argument("-v", "--verbose", action="store_true", help="voicebox's debug log too")
    p.add_argument("--echo-db", type=float,
                   help="the speaker leaks into the microphone this many dB down (a "
                        "loudspeaker, not a headset); listen then runs without --echo-free")
    p.add_argument("--idle-s", type=float, default=0.0,
                   help="first measure listen's CPU for this long in the silent room")
    args = p.parse_args(argv)
    args.listen_flags = flags
    return args


def run(inp: Path, out: Path, voicebox_args: list[str], *, tail_s: float = 3.0,
        log_dir: Path | None = None, idle_s: float = 0.0, echo_db: float | None = None
        ) -> None:
    """Play ``inp`` to `voicebox` (``voicebox_args``: "listen" and its flags) through the
    room; write what it said to ``out``."""
    for tool in ("pulseaudio", "pactl", "paplay", "parec", "pacat"):
        if shutil.which(tool) is None:
            raise HarnessError(f"{tool} not found; apt install pulseaudio pulseaudio-utils "
                               "libasound2-plugins")
    audio, rate = read_wav(inp)
    with tempfile.TemporaryDirectory(prefix="vb-pulse-") as tmp:
        work = Path(tmp)
        logs = log_dir or work
        logs.mkdir(parents=True, exist_ok=True)
        env = _env(work)
        user = work / "user.wav"
        write_wav(user, audio, rate)
        server = _start_server(work, env, logs)
        leak = [] if echo_db is None else _leak(env, echo_db)
        echo_free = [] if echo_db is not None else ["--echo-free"]
        try:
            recording = _converse(user, work, env, logs, [*voicebox_args, *echo_free],
                                  talk_s=len(audio) / rate, tail_s=tail_s, idle_s=idle_s)
        finally:
            for proc in [*leak, server]:
                proc.terminate()
                _reap(proc)
    said = _align(recording, audio, rate)
    write_wav(out, said, ROOM_HZ)


def _env(work: Path) -> dict[str, str]:
    runtime = work / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(XDG_RUNTIME_DIR=str(runtime), HOME=str(work), HF_HUB_OFFLINE="1")
    return env


def _start_server(work: Path, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    script = work / "room.pa"
    script.write_text(ROOM)
    server = subprocess.Popen(
        ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1",
         f"--log-target=file:{logs / 'pulse.log'}"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise HarnessError(f"pulseaudio exited ({server.returncode}); see {logs / 'pulse.log'}")
        ok = subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0
        if ok:
            return server
        time.sleep(0.1)
    server.kill()
    raise HarnessError("pulseaudio did not start within 10 s")


def _leak(env: dict[str, str], echo_db: float) -> list[subprocess.Popen[bytes]]:
    """The speaker heard by the microphone ``echo_db`` dB down, ~5 ms late: the speaker's
    monitor piped into the room's left channel (PulseAudio's volume is cubic)."""
    volume = round(65536 * 10 ** (-echo_db / 60))
    tap = subprocess.Popen(
        ["parec", "--device=speaker.monitor", "--format=s16le", f"--rate={ROOM_HZ}",
         "--channels=1", "--latency-msec=10"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    into = subprocess.Popen(
        ["pacat", "--device=room", "--format=s16le", f"--rate={ROOM_HZ}", "--channels=1",
         "--channel-map=front-left", "--latency-msec=10", f"--volume={volume}"],
        env=env, stdin=tap.stdout, stderr=subprocess.DEVNULL,
    )
    assert tap.stdout is not None
    tap.stdout.close()  # the pipe is pacat's now
    return [tap, into]


def _converse(user: Path, work: Path, env: dict[str, str], logs: Path,
              voicebox_args: list[str], *, talk_s: float, tail_s: float,
              idle_s: float = 0.0) -> np.ndarray:
    """Start listen, record the room, play the user in, wait; the room's stereo samples."""
    errors = (logs / "listen.err").open("w")
    voicebox = subprocess.Popen(
        [sys.executable, "-m", "voicebox", *voicebox_args],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True,
    )
    printed: list[str] = []
    ready = threading.Event()
    threading.Thread(target=_follow, args=(voicebox, printed, ready), daemon=True).start()
    raw = work / "room.raw"
    recorder: subprocess.Popen[bytes] | None = None
    try:
        if not ready.wait(timeout=300) or voicebox.poll() is not None:
            raise HarnessError(f"voicebox listen did not start: {_last(logs, printed)}")
        if idle_s > 0:
            print(f"listen_pulse: {_idle_usage(voicebox.pid, idle_s)}", flush=True)
        with raw.open("wb") as sink:
            recorder = subprocess.Popen(
                ["parec", "--device=room.monitor", "--format=s16le", f"--rate={ROOM_HZ}",
                 "--channels=2", "--latency-msec=10"],
                env=env, stdout=sink, stderr=subprocess.DEVNULL,
            )
            _wait_for_data(raw, recorder)
            played = subprocess.run(
                ["paplay", "--device=room", "--channel-map=front-left", str(user)],
                env=env, capture_output=True, text=True, timeout=talk_s + 30,
            )
            if played.returncode != 0:
                raise HarnessError(f"paplay failed: {played.stderr.strip()}")
            time.sleep(tail_s)
            if voicebox.poll() is not None:
                raise HarnessError(f"voicebox listen stopped early: {_last(logs, printed)}")
    finally:
        if recorder is not None:
            recorder.terminate()
            _reap(recorder)
        voicebox.send_signal(signal.SIGTERM)
        _reap(voicebox, timeout=30)
        errors.close()
        (logs / "listen.log").write_text("".join(printed))
    data = np.frombuffer(raw.read_bytes(), dtype=np.int16)
    return data[: len(data) // 2 * 2].reshape(-1, 2).astype(np.float32) / 32768


def _idle_usage(pid: int, seconds: float) -> str:
    """CPU and memory of the listening process while the room is silent, once its start
    is over (the first ~3 s after the stream opens took ~50 % of a core here)."""
    proc = psutil.Process(pid)
    time.sleep(5.0)
    before, start = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, wall = proc.cpu_times(), time.monotonic() - start
    busy = (after.user + after.system) - (before.user + before.system)
    return (f"idle listening {100 * busy / wall:.1f} % of a core over {wall:.0f} s, "
            f"RSS {proc.memory_info().rss / 2**20:.0f} MB")


def _wait_for_data(raw: Path, recorder: subprocess.Popen[bytes]) -> None:
    """Until the recorder writes: the room is recorded from before the user speaks."""
    deadline = time.monotonic() + 10
    while raw.stat().st_size == 0:
        if recorder.poll() is not None or time.monotonic() > deadline:
            raise HarnessError("parec did not start recording the room")
        time.sleep(0.02)
    time.sleep(0.2)


def _follow(proc: subprocess.Popen[str], printed: list[str], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        printed.append(line)
        if line.startswith("listening"):
            ready.set()
    ready.set()  # exited: the caller sees poll() is not None


def _last(logs: Path, printed: list[str]) -> str:
    """voicebox's last error line (its one-line errors go to stderr), else its output."""
    errors = (logs / "listen.err").read_text() if (logs / "listen.err").exists() else ""
    for text in (errors, "".join(printed)):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("voicebox:")]
        if lines:
            return lines[-1]
    lines = [ln.strip() for ln in (errors or "".join(printed)).splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _reap(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _align(room: np.ndarray, user: np.ndarray, user_hz: int) -> np.ndarray:
    """The right channel from the instant ``user`` starts in the left one, at least as long
    as ``user``. The search runs at the user's rate (the room's copy resampled back, which
    also drops the server's resampling images), over every lag, late or early."""
    heard = resample(np.ascontiguousarray(room[:, 0]), ROOM_HZ, user_hz)
    n = 1 << (len(heard) + len(user)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(heard, n) * np.conj(np.fft.rfft(user, n)), n)
    lags = np.concatenate([corr[n - len(user) + 1 :], corr[: len(heard)]])
    best = int(np.argmax(lags))
    lag = best - (len(user) - 1)
    a, b = max(lag, 0), max(-lag, 0)
    # Checked on the input's first seconds: no reply (nor its echo) can be there yet.
    span = min(len(heard) - a, len(user) - b, round(MATCH_S * user_hz))
    x, y = heard[a : a + span], user[b : b + span]
    match = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
    if match < MIN_MATCH:
        raise HarnessError(f"the input was not found in the recording (match {match:.2f})")
    start = round(lag * ROOM_HZ / user_hz)
    right = room[:, 1]
    said = right[start:] if start >= 0 else np.concatenate([np.zeros(-start, np.float32), right])
    need = round(len(user) * ROOM_HZ / user_hz)
    if len(said) < need:
        said = np.pad(said, (0, need - len(said)))
    return said


if __name__ == "__main__":
    sys.exit(main())
