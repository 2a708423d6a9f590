"""Word error rate and latency of the ASR engine against faster-whisper's whole-utterance decode.

Runs four systems over the pocketsphinx test clips (LibriVox + cards, 16 kHz mono):

  baseline  faster-whisper ``WhisperModel.transcribe`` (30 s window, beam 5, no timestamps)
  cold      ``WhisperAsrEngine.transcribe(final=True)`` with no partials before it
  warm      the same final after the partials the pipeline would have asked for
            (``audio[:k * 400 ms]`` for k = 1, 2, ... while shorter than the clip): what an
            engine that reuses its partials (LocalAgreement, cached encoder) must beat
  partial   ``WhisperAsrEngine.transcribe(final=False)`` on the whole clip

Only the final is timed. Each timed call is repeated ``--repeats`` times and the fastest
kept, so a busy machine inflates the numbers less; the text is the same every time.

Usage: python scripts/asr_wer.py [--threads 1] [--repeats 3] [--json] [--report docs/asr_wer.md]
"""

from __future__ import annotations

import argparse
import json
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

from voicebox.bench.score import word_edits  # noqa: E402
from voicebox.engines.protocols import FloatAudio  # noqa: E402
from voicebox.engines.whisper_asr import WhisperAsrEngine  # noqa: E402
from voicebox.models.locate import packaged_path  # noqa: E402

DATA_DIR = Path("/usr/share/pocketsphinx/test/data")
PARTIAL_INTERVAL_SAMPLES = 6_400
"""The pipeline asks for a partial every 400 ms of speech."""
_LINE = re.compile(r"<s>(?P<text>.*)</s>\s*\((?P<id>[^)]+)\)")
_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


@dataclass(frozen=True, slots=True)
class Clip:
    """One recording with its reference transcript."""

    clip_id: str
    audio: FloatAudio
    reference: str

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

    def add(self, clip: Clip, text: str, ms: float) -> None:
        self.hypotheses.append(text)
        self.errors.append(word_errors(clip.reference, text))
        self.ms.append(ms)

    def summary(self, ref_words: int) -> dict[str, float]:
        return {
            "wer": sum(self.errors) / ref_words,
            "mean_ms": statistics.fmean(self.ms),
            "median_ms": statistics.median(self.ms),
            "max_ms": max(self.ms),
        }


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
                clips.append(Clip(match["id"], read_wav(wav), match["text"].strip()))
    return clips


def number_words(n: int) -> str:
    """0..999 in words (enough for spoken commands); larger numbers stay digits."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)


def normalize(text: str) -> str:
    """Lowercase, no punctuation, digits as words, common abbreviations spelled out."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words: list[str] = []
    for word in text.split():
        word = word.strip("'")
        if word.isdigit():
            words.extend(number_words(int(word)).split())
        elif word:
            words.append(_ABBREVIATIONS.get(word, word))
    return " ".join(words)


def word_errors(reference: str, hypothesis: str) -> int:
    """Substitutions + deletions + insertions between normalised word sequences."""
    return word_edits(normalize(reference).split(), normalize(hypothesis).split())


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
) -> tuple[SystemResult, SystemResult]:
    """The engine's final without partial history (cold) and after the pipeline's partials
    (warm), timed alternately on each clip so that load on the machine hits both alike."""
    cold, warm = SystemResult("cold"), SystemResult("warm")

    def final(audio: FloatAudio) -> str:
        return engine.transcribe(audio, final=True).text

    final(clips[0].audio)
    for clip in clips:
        # A call on other audio starts a new utterance, so this final has no history.
        engine.transcribe(np.zeros(1_600, dtype=np.float32), final=False)
        cold.add(clip, *timed(final, clip.audio, repeats))
        for end in range(PARTIAL_INTERVAL_SAMPLES, len(clip.audio), PARTIAL_INTERVAL_SAMPLES):
            engine.transcribe(clip.audio[:end], final=False)
        warm.add(clip, *timed(final, clip.audio, repeats))
    return cold, warm


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


def markdown(clips: list[Clip], results: list[SystemResult], threads: int) -> str:
    ref_words = sum(len(normalize(c.reference).split()) for c in clips)
    lines = [
        f"# ASR word error rate and latency ({len(clips)} clips, {ref_words} words, "
        f"{threads} thread(s))",
        "",
        "| system | WER | mean ms | median ms | max ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for res in results:
        s = res.summary(ref_words)
        lines.append(
            f"| {res.name} | {s['wer']:.3f} | {s['mean_ms']:.0f} | {s['median_ms']:.0f} "
            f"| {s['max_ms']:.0f} |"
        )
    lines += ["", "| clip | s | words | " + " | ".join(r.name for r in results) + " |"]
    lines.append("| --- " * (3 + len(results)) + "|")
    for i, clip in enumerate(clips):
        cells = [f"{r.errors[i]} err, {r.ms[i]:.0f} ms: {r.hypotheses[i]}" for r in results]
        words = len(normalize(clip.reference).split())
        row = [clip.clip_id, f"{clip.audio_s:.1f}", str(words), *cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--model-dir", type=Path, default=None, help="CTranslate2 Whisper model")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per clip, fastest kept")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--report", type=Path, default=None, help="also write Markdown here")
    args = parser.parse_args(argv)

    model_dir: Path = args.model_dir or packaged_path("asr")
    clips = load_clips(args.data_dir)
    engine = WhisperAsrEngine(model_dir, threads=args.threads)
    reps = args.repeats
    baseline = run_system("baseline", baseline_fn(model_dir, args.threads), clips, repeats=reps)
    cold, warm = run_streaming(engine, clips, repeats=reps)
    partial = run_system(
        "partial", lambda a: engine.transcribe(a, final=False).text, clips, repeats=reps
    )
    results = [baseline, cold, warm, partial]
    ref_words = sum(len(normalize(c.reference).split()) for c in clips)

    if args.json:
        print(
            json.dumps(
                {
                    "threads": args.threads,
                    "reference_words": ref_words,
                    "systems": {r.name: {**r.summary(ref_words), **asdict(r)} for r in results},
                    "clips": [
                        {"id": c.clip_id, "audio_s": c.audio_s, "reference": c.reference}
                        for c in clips
                    ],
                },
                indent=2,
            )
        )
    else:
        for i, clip in enumerate(clips):
            print(f"{clip.clip_id} ({clip.audio_s:.1f} s): {clip.reference}")
            for res in results:
                print(
                    f"  {res.name:8s} {res.errors[i]:2d} err {res.ms[i]:6.0f} ms  "
                    f"{res.hypotheses[i]}"
                )
        print(f"\nTOTAL over {len(clips)} clips, {ref_words} words, {args.threads} thread(s):")
        for res in results:
            s = res.summary(ref_words)
            print(
                f"  {res.name:8s} WER {s['wer']:.3f}  mean {s['mean_ms']:.0f} ms  "
                f"median {s['median_ms']:.0f} ms  max {s['max_ms']:.0f} ms"
            )
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(clips, results, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
