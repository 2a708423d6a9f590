"""`voicebox listen` on a real audio stack: PortAudio, ALSA's pulse plugin and a private
PulseAudio server (scripts/listen_pulse.py). The real sibling of tests/test_devices.py,
whose PortAudio is a fake."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.clips import needs_testdata, read_clip
from tests.needs import needs
from voicebox.audio.resample import resample
from voicebox.audio.wav import read_wav
from voicebox.bench import scenarios
from voicebox.bench.score import loud_onsets, score
from voicebox.config import TurnConfig

ROOT = Path(__file__).resolve().parents[1]
FALSE_START_MS = TurnConfig().false_start_ms
SCRIPT = ROOT / "scripts" / "listen_pulse.py"

needs_pulse = needs(all(shutil.which(t) for t in ("pulseaudio", "paplay", "parec")),
                    "apt packages pulseaudio / pulseaudio-utils")


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("listen_pulse", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_testdata
@needs_pulse
def test_listen_answers_and_yields_to_a_barge_in_through_pulseaudio(tmp_path: Path) -> None:
    scenario = scenarios.barge_in()  # a sentence, then cards 003 over the reply
    wav = scenario.write(tmp_path)
    labels = json.loads(wav.with_suffix(".json").read_text())
    out, events = tmp_path / "out.wav", tmp_path / "events.jsonl"
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, str(SCRIPT), "--in", str(wav), "--out", str(out),
             "--log-dir", str(tmp_path / "logs"), "--",
             "--engine", "emulated", "--profile", "hc1-llama3.1-8b", "--events", str(events)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        assert p.returncode == 0, p.stderr
        played, rate = read_wav(out)
        assert rate == 48000 and len(played) >= len(scenario.audio) * 3
        result = score(scenario.name, labels, played, rate, [])
        first, barge = labels["turns"]
        latency_ms = result.turns[0].latency_ms
        if latency_ms is not None and (barge["speech_start_s"] - first["speech_end_s"]
                                       - latency_ms / 1000) * 1000 > FALSE_START_MS + 100:
            break
        # A host whose CPU is stolen by its neighbours can answer the first sentence so
        # late that the barge-in comes before the reply is well begun, where speech is the
        # user going on (a false start, not a barge-in): that run says nothing about
        # barge-in (as in tests/test_simulate_real.py), so it runs once more, and is
        # skipped if still so.
    else:
        pytest.skip("this host was too slow for the scenario: no reply well before the barge-in")
    assert [t.latency_ms is not None for t in result.turns] == [True, True]
    assert result.barge_stop_ms and result.barge_stop_ms[0] is not None  # it went quiet
    # No reply starts inside a turn of the user's. The reply the user barges in on goes
    # quiet 50-90 ms after the barge-in begins here (PulseAudio's 20 ms capture and 30 ms
    # playback buffers, the energy gate's two 10 ms blocks): a word of it that begins in
    # that window is the barge-in's stop time, asserted above (the judge counts it as a
    # cut-off too, as the bench does; simulate, without those buffers, stops in 0-50 ms).
    onsets, _ = loud_onsets(played, rate)
    (start, end), (barge_start, barge_end) = (
        (t["speech_start_s"], t["speech_end_s"]) for t in labels["turns"])
    quiet_s = barge_start + result.barge_stop_ms[0] / 1000
    over_first = [o for o in onsets if start + 0.05 < o < end - 0.05]
    over_barge = [o for o in onsets if quiet_s <= o < barge_end - 0.05]
    assert over_first == [] and over_barge == [], (over_first, over_barge, onsets)
    said = [json.loads(line) for line in events.read_text().splitlines()]
    finals = [e["text"] for e in said if e["event"] == "TranscriptFinal"]
    # The barge-in ("seven of clubs") is heard as a turn of its own. Through the room's
    # 48 kHz path tiny.en hears its last word as "close" about one run in five (as it
    # hears the bench's "4. Queen of close"), so the card's rank is what is checked.
    assert "amiable" in finals[0].lower()
    assert re.search(r"\b(7|seven) of\b", finals[-1].lower()), finals[-1]
    assert any(e["event"] == "Interrupted" for e in said)
    listened = (tmp_path / "logs" / "listen.log").read_text()
    assert "listening (48000 Hz" in listened
    assert "ms in the audio buffers)" in listened  # what the card adds to the latency


@needs_testdata
@needs_pulse
def test_listen_on_a_loudspeaker_with_the_echo_cancelled(tmp_path: Path) -> None:
    """The speaker leaks into the microphone 6 dB down: with --echo-cancel the reply is
    neither heard as the user going on nor as a barge-in, and is played out whole."""
    scenario = next(s for s in scenarios.single_turns() if s.name == "single_0880")
    wav = scenario.write(tmp_path)
    out, events = tmp_path / "out.wav", tmp_path / "events.jsonl"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--echo-db", "6", "--in", str(wav), "--out", str(out),
         "--log-dir", str(tmp_path / "logs"), "--", "--echo-cancel",
         "--engine", "emulated", "--profile", "hc1-llama3.1-8b", "--events", str(events)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert p.returncode == 0, p.stderr
    said = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in said]
    assert kinds.count("SpeechStarted") == 1  # the reply's echo started no speech
    assert "Interrupted" not in kinds and kinds.count("ReplyDone") == 1
    played, rate = read_wav(out)
    labels = json.loads(wav.with_suffix(".json").read_text())
    result = score(scenario.name, labels, played, rate, [])
    assert result.cutoffs == 0 and result.turns[0].latency_ms is not None


def _listening(work: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[str]]:
    """A private sound server and `listen` on it, once `listen` says it can hear."""
    harness = _harness()
    env = harness._env(work)
    server = harness._start_server(work, env, work)
    listen = subprocess.Popen(
        [sys.executable, "-m", "voicebox", "listen", "--engine", "emulated",
         "--profile", "hc1-llama3.1-8b"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert listen.stdout is not None
    for line in listen.stdout:
        if line.startswith("listening"):
            break
    return server, listen


@needs_pulse
def test_listen_says_so_in_one_line_when_the_sound_server_goes(tmp_path: Path) -> None:
    """The sound server stops under a running `listen` (as a USB card pulled out): the
    stream is reopened once, then a one-line error and exit status 2."""
    server, listen = _listening(tmp_path)
    try:
        server.kill()
        server.wait()
        _, err = listen.communicate(timeout=60)
    finally:
        listen.kill()
        server.kill()
    assert listen.returncode == 2
    assert "Traceback" not in err
    said = [ln for ln in err.splitlines() if ln.startswith("voicebox:")]
    assert len(said) == 1 and "audio device lost" in said[0]


@needs_pulse
def test_listen_exits_when_stopped_as_the_sound_server_dies(tmp_path: Path) -> None:
    """SIGTERM just as the sound server dies: PortAudio's stop blocks for good in some of
    these (2 of 9 before the bounded close, section 7 of BENCHMARKS.md); `listen` must
    exit all the same, with at most one line said."""
    for attempt in range(3):
        work = tmp_path / str(attempt)
        work.mkdir()
        server, listen = _listening(work)
        try:
            time.sleep(0.5)
            server.kill()
            time.sleep(0.05)
            listen.send_signal(signal.SIGTERM)
            _, err = listen.communicate(timeout=20)
        finally:
            listen.kill()
            server.kill()
            server.wait()
        assert listen.returncode in (0, 2), err
        assert "Traceback" not in err
        said = [ln for ln in err.splitlines() if ln.startswith("voicebox:")]
        assert len(said) <= 1 and all("audio device lost" in ln for ln in said)


def test_align_finds_the_input_early_or_late() -> None:
    harness = _harness()
    user = read_clip("cards/003")
    room_user = resample(user, 16000, harness.ROOM_HZ)
    for lead in (9000, -9000):  # recording started before / after the input began
        left = (np.concatenate([np.zeros(lead, np.float32), room_user]) if lead > 0
                else room_user[-lead:])
        right = np.zeros_like(left)
        right[30000 + lead] = 1.0  # a click 30000 room samples after the input's first one
        room = np.stack([left, right], axis=1)
        said = harness._align(room, user, 16000)
        assert int(np.argmax(said)) == 30000
        assert len(said) >= len(room_user)


def test_align_refuses_a_recording_without_the_input() -> None:
    harness = _harness()
    user = read_clip("cards/003")
    noise = np.random.default_rng(0).standard_normal((len(user) * 4, 2)).astype(np.float32)
    with pytest.raises(harness.HarnessError, match="not found"):
        harness._align(0.1 * noise, user, 16000)
