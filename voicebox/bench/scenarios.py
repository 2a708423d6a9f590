"""Build scenario WAVs with turn labels (the format ../shared/bench/v2v.py reads)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voicebox.audio.wav import read_wav, write_wav
from voicebox.engines.protocols import FloatAudio
from voicebox.errors import VoiceboxError

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
LOUD_DBFS = -40.0
"""A 10 ms frame louder than this is speech (the same rule the judge applies to replies)."""


@dataclass(frozen=True, slots=True)
class Clip:
    """A recorded utterance with its reference transcript."""

    name: str
    path: Path
    text: str


@dataclass(slots=True)
class Scenario:
    """One input WAV and its labels."""

    name: str
    audio: FloatAudio
    rate_hz: int
    turns: list[dict[str, float]] = field(default_factory=list)
    barge: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    pauses: list[tuple[float, float]] = field(default_factory=list)
    """Mid-sentence pauses (start, end) in stream seconds: a reply there is a cut-off."""

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        wav = folder / f"{self.name}.wav"
        write_wav(wav, self.audio, self.rate_hz)
        labels = {"turns": self.turns, "barge": self.barge, "texts": self.texts,
                  "pauses": self.pauses}
        (folder / f"{self.name}.json").write_text(json.dumps(labels, indent=1))
        return wav


def clips() -> list[Clip]:
    """The LibriVox and cards clips of Debian's pocketsphinx-testdata."""
    if not TESTDATA.is_dir():
        raise VoiceboxError(f"{TESTDATA} missing: apt-get install pocketsphinx-testdata")
    out: list[Clip] = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (TESTDATA / folder / listing).read_text().splitlines():
            if "(" not in line:
                continue
            text, _, ident = line.rpartition("(")
            text = text.replace("<s>", "").replace("</s>", "").strip()
            ident = ident.strip(") \n")
            out.append(Clip(ident, TESTDATA / folder / f"{ident}.wav", text))
    return out


def speech_bounds(audio: FloatAudio, rate_hz: int) -> tuple[float, float]:
    """First and last loud 10 ms frame, in seconds."""
    hop = rate_hz // 100
    frames = audio[: audio.shape[0] // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 10 ** (LOUD_DBFS / 20))
    if loud.size == 0:
        return 0.0, 0.0
    return float(loud[0]) / 100, float(loud[-1] + 1) / 100


class _Builder:
    def __init__(self, name: str, rate_hz: int = 16_000) -> None:
        self.s = Scenario(name, np.zeros(0, np.float32), rate_hz)
        self._parts: list[FloatAudio] = []
        self._len = 0

    def silence(self, seconds: float) -> _Builder:
        return self._add(np.zeros(int(seconds * self.s.rate_hz), np.float32))

    def speech(self, clip: Clip, *, pause_at_s: float | None = None, pause_s: float = 0.0,
               search_s: float = 0.5, pause_holds_gap: bool = True) -> _Builder:
        """``clip``, with a pause of ``pause_s`` at the word gap nearest ``pause_at_s``: the
        speaker's own silence there counts towards it (``pause_holds_gap``), else
        ``pause_s`` of silence is added to it."""
        audio, rate = read_wav(clip.path)
        if rate != self.s.rate_hz:
            raise VoiceboxError(f"{clip.path}: expected {self.s.rate_hz} Hz")
        start, end = speech_bounds(audio, rate)
        t0 = self._len / rate
        if pause_at_s is not None:
            cut = _quietest_gap(audio, rate, pause_at_s, search_s)
            quiet = _quiet_around(audio, rate, cut) if pause_holds_gap else (cut, cut)
            added = max(0, int(pause_s * rate) - (quiet[1] - quiet[0]))
            audio = np.concatenate([audio[:cut], np.zeros(added, np.float32), audio[cut:]])
            self.s.pauses.append((round(t0 + quiet[0] / rate, 3),
                                  round(t0 + (quiet[1] + added) / rate, 3)))
            end += added / rate
        self.s.turns.append({"speech_start_s": round(t0 + start, 3),
                             "speech_end_s": round(t0 + end, 3)})
        self.s.texts.append(clip.text)
        return self._add(audio)

    def barge_at(self, seconds_after_last_end: float) -> float:
        at = self.s.turns[-1]["speech_end_s"] + seconds_after_last_end
        gap = at - self._len / self.s.rate_hz
        if gap > 0:
            self.silence(gap)
        return at

    def _add(self, audio: FloatAudio) -> _Builder:
        self._parts.append(audio)
        self._len += audio.shape[0]
        return self

    def done(self) -> Scenario:
        self.s.audio = np.concatenate(self._parts)
        return self.s


def _quietest_gap(audio: FloatAudio, rate: int, near_s: float, search_s: float = 0.5) -> int:
    """Sample index of the quietest 30 ms within ``search_s`` of ``near_s`` (a word gap)."""
    hop = rate // 100
    frames = audio[: audio.shape[0] // hop * hop].reshape(-1, hop)
    energy = np.convolve((frames**2).mean(axis=1), np.ones(3), mode="same")
    centre = int(near_s * 100)
    reach = max(1, int(search_s * 100))
    lo, hi = max(1, centre - reach), min(len(energy) - 1, centre + reach + 1)
    return int((lo + int(np.argmin(energy[lo:hi]))) * hop + hop // 2)


def _quiet_around(audio: FloatAudio, rate: int, at: int) -> tuple[int, int]:
    """Sample span of the quiet 10 ms frames (at most ``LOUD_DBFS``) around sample ``at``."""
    hop = rate // 100
    frames = audio[: audio.shape[0] // hop * hop].reshape(-1, hop)
    quiet = np.sqrt((frames**2).mean(axis=1)) <= 10 ** (LOUD_DBFS / 20)
    i = min(at // hop, len(quiet) - 1)
    if not quiet[i]:
        return at, at
    lo, hi = i, i + 1
    while lo > 0 and quiet[lo - 1]:
        lo -= 1
    while hi < len(quiet) and quiet[hi]:
        hi += 1
    return lo * hop, hi * hop


def speaker_gap_ms(clip: Clip, near_s: float, search_s: float) -> float:
    """The quiet the speaker left at the cut ``speech(pause_at_s=near_s, search_s=...)``
    makes in ``clip`` (10 ms frames at most ``LOUD_DBFS``)."""
    audio, rate = read_wav(clip.path)
    lo, hi = _quiet_around(audio, rate, _quietest_gap(audio, rate, near_s, search_s))
    return 1000.0 * (hi - lo) / rate


def by_name() -> dict[str, Clip]:
    return {c.name: c for c in clips()}


def single_turns(tail_s: float = 4.0) -> list[Scenario]:
    """Every clip alone: 0.5 s of silence, the utterance, time for the reply."""
    return [_Builder(f"single_{c.name[-4:]}").silence(0.5).speech(c).silence(tail_s).done()
            for c in clips()]


def barge_in() -> Scenario:
    """A finished sentence, then the user talks over the reply 1.2 s after their turn ended
    (well into the reply: an interruption after only a few hundred ms of reply audio
    counts as a false start and continues the user's turn instead)."""
    return _talked_over("barge_two_turns", "sense_and_sensibility_01_austen_64kb-0930", "003",
                        after_s=1.2)


def _talked_over(name: str, first: str, second: str, *, after_s: float) -> Scenario:
    """Clip ``first``, then clip ``second`` talking over its reply ``after_s`` after it
    ended; the barge-in is labelled at ``second``'s first loud frame."""
    c = by_name()
    b = _Builder(name).silence(0.5).speech(c[first])
    at = b.barge_at(after_s)
    b.s.barge.append(round(at + speech_bounds(*read_wav(c[second].path))[0], 3))
    return b.speech(c[second]).silence(4.0).done()


def second_barge_in() -> Scenario:
    """Another sentence talked over, 1.4 s after it ended: another reply, so the barge
    falls at another point of it (a barge that lands in the pause between two clauses
    of the reply is not measured by the judge's rule). The user barges in with the cards
    clip 005, whose first word starts at its labelled start; 001 opens with a click
    110 ms before its first word, which the -40 dBFS label would count as the start."""
    return _talked_over("barge_two_turns_0880", "sense_and_sensibility_01_austen_64kb-0880",
                        "005", after_s=1.4)


def noisy_barge_in(snr_db: float = 15.0) -> Scenario:
    """A barge-in under the noisy turns' background noise: the ``0880`` sentence, then the
    user talks over its reply 1.2 s after it ended with the cards clip 003 (the voice is
    5-15 dB above the noise in its first 40 ms, 20-30 dB after). Under the same noise
    ``004`` and ``002`` stay within 0-6 dB of it for their first 100 ms, and ``001`` opens
    with a click: the judge's -40 dBFS label (taken before the noise is added) would
    start where no detector can hear speech yet."""
    return add_noise(_talked_over("noisy_barge_0880", "sense_and_sensibility_01_austen_64kb-0880",
                                  "003", after_s=1.2), snr_db)


def paused_turns() -> list[Scenario]:
    """Sentences with a 300-600 ms pause inserted at a word gap: replying there is a cut-off.

    The cards clip is cut inside its first item ("eight of | spades"), a hesitation; a
    pause after a whole item would be a complete answer ("eight of spades").
    """
    c = by_name()
    plan = [("sense_and_sensibility_01_austen_64kb-0870", 3.0, 0.45, 0.5),
            ("sense_and_sensibility_01_austen_64kb-0890", 2.5, 0.6, 0.5),
            ("sense_and_sensibility_01_austen_64kb-0920", 3.0, 0.3, 0.5),
            ("005", 0.68, 0.4, 0.03)]
    return [_Builder(f"pause_{name[-4:]}_{int(p * 1000)}ms").silence(0.5)
            .speech(c[name], pause_at_s=at, pause_s=p, search_s=reach).silence(4.0).done()
            for name, at, p, reach in plan]


def noisy_turns(snr_db: float = 15.0) -> list[Scenario]:
    """Clips under steady background noise (white noise plus a 100 Hz hum) at ``snr_db``."""
    c = by_name()
    return [add_noise(_Builder(f"noisy_{name[-4:]}").silence(0.5).speech(c[name])
                      .silence(4.0).done(), snr_db)
            for name in ("sense_and_sensibility_01_austen_64kb-0930", "002")]


def add_noise(sc: Scenario, snr_db: float = 15.0) -> Scenario:
    """``sc`` under white noise plus a 100 Hz hum, ``snr_db`` below its first turn's speech."""
    speech = sc.audio[int(sc.turns[0]["speech_start_s"] * sc.rate_hz):
                      int(sc.turns[0]["speech_end_s"] * sc.rate_hz)]
    level = float(np.sqrt((speech**2).mean())) / 10 ** (snr_db / 20)
    rng = np.random.default_rng(1)
    t = np.arange(sc.audio.shape[0]) / sc.rate_hz
    noise = rng.standard_normal(sc.audio.shape[0]) + np.sqrt(2) * np.sin(2 * np.pi * 100 * t)
    sc.audio = (sc.audio + level * noise / np.sqrt(2)).astype(np.float32)
    return sc


def warm_up() -> Scenario:
    """A short unscored turn run first, so no scored turn pays for cold caches."""
    return _Builder("warm_up").silence(0.3).speech(by_name()["004"]).silence(3.0).done()


def all_scenarios() -> list[Scenario]:
    """The bench's scenario set: single turns, mid-sentence pauses, three barge-ins (one
    under noise), noisy turns."""
    return [*single_turns(), *paused_turns(), barge_in(), second_barge_in(), *noisy_turns(),
            noisy_barge_in()]


def sample_utterance() -> Scenario:
    c = by_name()
    clip = c["sense_and_sensibility_01_austen_64kb-0930"]
    return _Builder("sample").silence(0.5).speech(clip).silence(4.0).done()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample", type=Path, help="write the sample utterance WAV here")
    ap.add_argument("--out", type=Path, help="write the scenario set (WAV + JSON) here")
    args = ap.parse_args(argv)
    try:
        if args.sample:
            args.sample.parent.mkdir(parents=True, exist_ok=True)
            s = sample_utterance()
            write_wav(args.sample, s.audio, s.rate_hz)
        if args.out:
            for s in all_scenarios():
                s.write(args.out)
    except VoiceboxError as exc:
        print(f"voicebox: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
