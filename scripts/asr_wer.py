"""Word error rate and latency of the ASR engine against faster-whisper's whole-utterance decode.

Runs five systems over the pocketsphinx test clips (LibriVox + cards, 16 kHz mono):

  baseline  faster-whisper ``WhisperModel.transcribe`` (30 s window, beam 5, no timestamps)
  cold      ``WhisperAsrEngine.transcribe(final=True)`` with no partials before it
  warm      the same final after the partials the pipeline would have asked for
            (``audio[:k * 400 ms]`` for k = 1, 2, ... while shorter than the clip): what an
            engine that reuses its partials (LocalAgreement, cached encoder) must beat
  tail      the final after those partials given ``committed=committed_prefix(p[-2], p[-1])``
            of the last two partials: it decodes only what follows the settled words when
            its checks pass (the outcome per clip is reported: ok, or why it fell back)
  partial   ``WhisperAsrEngine.transcribe(final=False)`` on the whole clip

Clip sets (``--sets``): ``plain`` the 10 clips as recorded; ``paused`` each LibriVox clip
with 300, 450 and 600 ms of silence inserted at the quietest gap near its middle (the
bench's mid-sentence pauses); ``noisy`` all 10 under white noise plus a 100 Hz hum at
15 dB SNR (the bench's noisy turns).

Only the final is timed. Each timed call is repeated ``--repeats`` times and the fastest
kept, so a busy machine inflates the numbers less; the text is the same every time.

Usage: .venv/bin/python scripts/asr_wer.py [--threads 1] [--repeats 3] [--sets plain,paused,noisy]
       [--seam-words N] [--final-beam N] [--json] [--report docs/asr_wer.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import statistics
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from voicebox.bench.score import normalise, word_edits  # noqa: E402
from voicebox.engines.asr_checks import committed_prefix  # noqa: E402
from voicebox.engines.protocols import FloatAudio  # noqa: E402
from voicebox.engines.whisper_asr import WhisperAsrEngine  # noqa: E402
from voicebox.models.locate import packaged_path  # noqa: E402

DATA_DIR = Path("/usr/share/pocketsphinx/test/data")
PARTIAL_INTERVAL_SAMPLES = 6_400
"""The pipeline asks for a partial every 400 ms of speech."""
SETS = ("plain", "paused", "noisy")
PAUSES_S = (0.3, 0.45, 0.6)
"""Mid-sentence pauses inserted into each LibriVox clip for the ``paused`` set."""
NOISE_SNR_DB = 15.0
_LINE = re.compile(r"<s>(?P<text>.*)</s>\s*\((?P<id>[^)]+)\)")


@dataclass(frozen=True, slots=True)
class Clip:
    """One recording with its reference transcript."""

    clip_id: str
    audio: FloatAudio
    reference: str
    group: str = "plain"
    """The clip set: "plain", "paused" or "noisy"."""
    corpus: str = ""
    """Where it comes from: "librivox" (read sentences) or "cards" (short commands)."""

    @property
    def audio_s(self) -> float:
        return len(self.audio) / 16_000


@dataclass(slots=True)
class SystemResult:
    """Hypotheses, errors and timings of one system over all clips."""

    name: str
    hypotheses: list[str] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Per clip, how the final was made (the tail system: "ok" or why it fell back)."""

    def add(self, clip: Clip, text: str, ms: float, note: str = "") -> None:
        self.hypotheses.append(text)
        self.errors.append(word_errors(clip.reference, text))
        self.ms.append(ms)
        self.notes.append(note)

    def summary(self, clips: list[Clip], group: str | None = None) -> dict[str, float]:
        """WER and final times over all clips, or over those of one ``group``."""
        chosen = [i for i, c in enumerate(clips) if group is None or c.group == group]
        ref_words = sum(len(normalise(clips[i].reference)) for i in chosen)
        ms = [self.ms[i] for i in chosen]
        return {
            "wer": sum(self.errors[i] for i in chosen) / ref_words,
            "errors": sum(self.errors[i] for i in chosen),
            "mean_ms": statistics.fmean(ms),
            "median_ms": statistics.median(ms),
            "max_ms": max(ms),
        }

    def outcomes(self) -> dict[str, int]:
        """How many finals had each note (empty notes left out)."""
        counts: dict[str, int] = {}
        for note in self.notes:
            if note:
                counts[note] = counts.get(note, 0) + 1
        return counts


def read_wav(path: Path) -> FloatAudio:
    """16-bit mono 16 kHz WAV as float32."""
    with wave.open(str(path)) as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, 16_000):
            raise ValueError(f"{path}: expected 16-bit mono 16 kHz")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def load_clips(data_dir: Path = DATA_DIR) -> list[Clip]:
    """The LibriVox and cards clips with their transcripts."""
    clips: list[Clip] = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (data_dir / folder / listing).read_text().splitlines():
            match = _LINE.match(line.strip())
            if match:
                wav = data_dir / folder / f"{match['id']}.wav"
                text = match["text"].strip()
                clips.append(Clip(match["id"], read_wav(wav), text, corpus=folder))
    return clips


def with_pause(clip: Clip, pause_s: float) -> Clip:
    """``clip`` with ``pause_s`` of digital silence at the quietest 30 ms near its middle
    (a word gap), as the bench inserts its mid-sentence pauses."""
    hop = 160
    frames = clip.audio[: len(clip.audio) // hop * hop].reshape(-1, hop)
    energy = np.convolve((frames**2).mean(axis=1), np.ones(3), mode="same")
    lo, hi = len(energy) // 2 - 50, len(energy) // 2 + 51
    cut = (lo + int(np.argmin(energy[lo:hi]))) * hop + hop // 2
    gap = np.zeros(round(pause_s * 16_000), dtype=np.float32)
    audio = np.concatenate([clip.audio[:cut], gap, clip.audio[cut:]])
    name = f"{clip.clip_id[-4:]}+{round(pause_s * 1000)}ms@{cut / 16_000:.2f}s"
    return Clip(name, audio, clip.reference, "paused", clip.corpus)


def with_noise(clip: Clip, snr_db: float = NOISE_SNR_DB, seed: int = 1) -> Clip:
    """``clip`` under white noise plus a 100 Hz hum at ``snr_db`` below its RMS level."""
    rng = np.random.default_rng(seed)
    level = float(np.sqrt(np.mean(clip.audio**2))) / 10 ** (snr_db / 20)
    t = np.arange(len(clip.audio)) / 16_000
    noise = rng.standard_normal(len(clip.audio)) + np.sqrt(2) * np.sin(2 * np.pi * 100 * t)
    audio = (clip.audio + level * noise / np.sqrt(2)).astype(np.float32)
    return Clip(f"{clip.clip_id[-4:]}+noise", audio, clip.reference, "noisy", clip.corpus)


def clip_sets(plain: list[Clip], sets: list[str]) -> list[Clip]:
    """The clips of the chosen sets, in the order of ``SETS``."""
    out: list[Clip] = []
    if "plain" in sets:
        out += plain
    if "paused" in sets:
        librivox = [c for c in plain if c.corpus == "librivox"]
        out += [with_pause(c, p) for c in librivox for p in PAUSES_S]
    if "noisy" in sets:
        out += [with_noise(c) for c in plain]
    return out


def word_errors(reference: str, hypothesis: str) -> int:
    """Substitutions + deletions + insertions between normalised word sequences."""
    return word_edits(normalise(reference), normalise(hypothesis))


def run_system(
    name: str, fn: Callable[[FloatAudio], str], clips: list[Clip], *, repeats: int = 1
) -> SystemResult:
    """Transcribe every clip (after one untimed warm-up call) and score it; each timed call
    is made ``repeats`` times and the fastest kept."""
    fn(clips[0].audio)
    result = SystemResult(name)
    for clip in clips:
        text, ms = timed(fn, clip.audio, repeats)
        result.add(clip, text, ms)
    return result


def run_streaming(
    engine: WhisperAsrEngine, clips: list[Clip], *, repeats: int = 1
) -> tuple[SystemResult, SystemResult, SystemResult]:
    """The engine's final without partial history (cold), after the pipeline's partials
    (warm), and after them given the words the last two partials agree on (tail), timed
    in turn on each clip so that load on the machine hits all three alike."""
    cold, warm, tail = SystemResult("cold"), SystemResult("warm"), SystemResult("tail")
    outcomes = _TailOutcomes()
    logger = logging.getLogger("voicebox.engines.whisper_asr")
    logger.addHandler(outcomes)
    logger.setLevel(logging.DEBUG)

    def final(audio: FloatAudio) -> str:
        return engine.transcribe(audio, final=True).text

    final(clips[0].audio)
    try:
        for clip in clips:
            # A call on other audio starts a new utterance, so this final has no history.
            engine.transcribe(np.zeros(1_600, dtype=np.float32), final=False)
            cold.add(clip, *timed(final, clip.audio, repeats))
            partials = [
                engine.transcribe(clip.audio[:end], final=False).text
                for end in range(
                    PARTIAL_INTERVAL_SAMPLES, len(clip.audio), PARTIAL_INTERVAL_SAMPLES
                )
            ]
            warm.add(clip, *timed(final, clip.audio, repeats))
            committed = committed_prefix(*partials[-2:]) if len(partials) >= 2 else ""
            draft = partials[-1] if partials else ""

            def tail_final(
                audio: FloatAudio, committed: str = committed, draft: str = draft
            ) -> str:
                return engine.transcribe(
                    audio, final=True, committed=committed, draft=draft
                ).text

            outcomes.last = "no committed words" if not committed else "too few committed words"
            text, ms = timed(tail_final, clip.audio, repeats)
            tail.add(clip, text, ms, outcomes.last)
    finally:
        logger.removeHandler(outcomes)
    return cold, warm, tail


class _TailOutcomes(logging.Handler):
    """Keeps the outcome the engine logs for its last tail attempt ("ok" or a reason)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "tail_outcome", None)
        if isinstance(outcome, str):
            self.last = outcome


def timed(fn: Callable[[FloatAudio], str], audio: FloatAudio, repeats: int) -> tuple[str, float]:
    """``fn(audio)`` and its fastest time in ms over ``repeats`` calls."""
    best_ms, text = math.inf, ""
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        text = fn(audio)
        best_ms = min(best_ms, (time.perf_counter() - start) * 1000)
    return text, best_ms


def baseline_fn(model_dir: Path, threads: int) -> Callable[[FloatAudio], str]:
    """faster-whisper's ordinary whole-utterance transcription, beam 5."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def transcribe(audio: FloatAudio) -> str:
        segments, _info = model.transcribe(
            audio,
            language="en",
            beam_size=5,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    return transcribe


def groups(clips: list[Clip]) -> list[str]:
    """The clip sets present, in ``SETS`` order."""
    return [g for g in SETS if any(c.group == g for c in clips)]


def summary_groups(clips: list[Clip]) -> list[str | None]:
    """Each clip set, then all clips together (None) when there is more than one set."""
    present: list[str | None] = list(groups(clips))
    return present + [None] if len(present) > 1 else present


def markdown(clips: list[Clip], results: list[SystemResult], threads: int) -> str:
    ref_words = sum(len(normalise(c.reference)) for c in clips)
    lines = [
        f"# ASR word error rate and latency ({len(clips)} clips, {ref_words} words, "
        f"{threads} thread(s))",
        "",
        "| set | system | WER | errors | mean ms | median ms | max ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group in summary_groups(clips):
        for res in results:
            s = res.summary(clips, group)
            lines.append(
                f"| {group or 'all'} | {res.name} | {s['wer']:.3f} | {s['errors']:.0f} "
                f"| {s['mean_ms']:.0f} | {s['median_ms']:.0f} | {s['max_ms']:.0f} |"
            )
    for res in results:
        if res.outcomes():
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(res.outcomes().items()))
            lines += ["", f"{res.name} outcomes: {counts}"]
    lines += ["", "| clip | s | words | " + " | ".join(r.name for r in results) + " |"]
    lines.append("| --- " * (3 + len(results)) + "|")
    for i, clip in enumerate(clips):
        cells = [
            f"{r.errors[i]} err, {r.ms[i]:.0f} ms{f' ({r.notes[i]})' if r.notes[i] else ''}: "
            f"{r.hypotheses[i]}"
            for r in results
        ]
        words = len(normalise(clip.reference))
        row = [clip.clip_id, f"{clip.audio_s:.1f}", str(words), *cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def print_text(clips: list[Clip], results: list[SystemResult], threads: int) -> None:
    for i, clip in enumerate(clips):
        print(f"{clip.clip_id} ({clip.audio_s:.1f} s): {clip.reference}")
        for res in results:
            note = f" [{res.notes[i]}]" if res.notes[i] else ""
            print(
                f"  {res.name:8s} {res.errors[i]:2d} err {res.ms[i]:6.0f} ms  "
                f"{res.hypotheses[i]}{note}"
            )
    for group in summary_groups(clips):
        chosen = [c for c in clips if group is None or c.group == group]
        ref_words = sum(len(normalise(c.reference)) for c in chosen)
        print(
            f"\n{(group or 'all').upper()}: {len(chosen)} clips, {ref_words} words, "
            f"{threads} thread(s):"
        )
        for res in results:
            s = res.summary(clips, group)
            print(
                f"  {res.name:8s} WER {s['wer']:.3f} ({s['errors']:.0f} err)  "
                f"mean {s['mean_ms']:.0f} ms  median {s['median_ms']:.0f} ms  "
                f"max {s['max_ms']:.0f} ms"
            )
    for res in results:
        if res.outcomes():
            print(f"{res.name} outcomes: {res.outcomes()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--model-dir", type=Path, default=None, help="CTranslate2 Whisper model")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per clip, fastest kept")
    parser.add_argument(
        "--sets", default=",".join(SETS), help=f"comma-separated clip sets of {', '.join(SETS)}"
    )
    parser.add_argument(
        "--seam-words", type=int, default=None, help="engine's seam_words (default: its own)"
    )
    parser.add_argument(
        "--final-beam", type=int, default=None, help="engine's final beam (default: its own)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip faster-whisper")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--report", type=Path, default=None, help="also write Markdown here")
    args = parser.parse_args(argv)
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    if not sets or any(name not in SETS for name in sets):
        parser.error(f"--sets takes names among {', '.join(SETS)}")

    model_dir: Path = args.model_dir or packaged_path("asr")
    clips = clip_sets(load_clips(args.data_dir), sets)
    extra = {} if args.seam_words is None else {"seam_words": args.seam_words}
    if args.final_beam is not None:
        extra["final_beam"] = args.final_beam
    engine = WhisperAsrEngine(model_dir, threads=args.threads, **extra)
    reps = args.repeats
    results: list[SystemResult] = []
    if not args.no_baseline:
        baseline_system = baseline_fn(model_dir, args.threads)
        results.append(run_system("baseline", baseline_system, clips, repeats=reps))
    results += run_streaming(engine, clips, repeats=reps)
    results.append(
        run_system("partial", lambda a: engine.transcribe(a, final=False).text, clips, repeats=reps)
    )

    if args.json:
        print(
            json.dumps(
                {
                    "threads": args.threads,
                    "sets": {
                        group or "all": {r.name: r.summary(clips, group) for r in results}
                        for group in summary_groups(clips)
                    },
                    "systems": {r.name: asdict(r) for r in results},
                    "clips": [
                        {
                            "id": c.clip_id,
                            "set": c.group,
                            "audio_s": c.audio_s,
                            "reference": c.reference,
                        }
                        for c in clips
                    ],
                },
                indent=2,
            )
        )
    else:
        print_text(clips, results, args.threads)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(clips, results, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
