"""Every pause in the bench's scenario set, with its end-of-turn signals and its length.

Replays each scenario's audio through the same VAD, turn detector and turn-audio rules
as the pipeline (offline, no real-time pacing). At each speculative pause it runs the
final ASR, the LLM's end-of-turn probability and Smart Turn on what the pipeline would
have, then records how long the silence lasted: until speech resumed (a pause inside
the turn) or the end of the labelled turn (a real end). With the table, a mapping from
signals to required silence can be checked for cut-offs and wait before it is run live:

  .venv/bin/python scripts/eot_table.py [--json reports/eot_table.json]

It prints one row per pause and, for the configured mapping, the cut-offs it would make
(pauses inside a turn longer than the silence it requires) and the silence it requires
at the real ends.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicebox.bench.run import as_read_from_wav  # noqa: E402
from voicebox.bench.scenarios import Scenario, all_scenarios  # noqa: E402
from voicebox.config import Config, load_config  # noqa: E402
from voicebox.engines.llama_llm import LlamaEngine  # noqa: E402
from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, ChatMessage  # noqa: E402
from voicebox.engines.smart_turn import SmartTurnEngine  # noqa: E402
from voicebox.engines.whisper_asr import WhisperAsrEngine  # noqa: E402
from voicebox.models.locate import packaged_path  # noqa: E402
from voicebox.runtime.build import load_vad  # noqa: E402
from voicebox.runtime.pipeline import KEEP_SILENT_FRAMES  # noqa: E402
from voicebox.runtime.turns import (  # noqa: E402
    Decision,
    TurnDetector,
    end_of_turn_score,
    required_silence_ms,
)

END_SILENCE_MS = 1000
"""A silence near a labelled end that lasts this long is the real end (a shorter one
there is the user pausing before the last word)."""


@dataclass(slots=True)
class Pause:
    scenario: str
    at_s: float
    """End of the last speech frame (VAD)."""
    text: str
    llm: float
    audio: float
    silence_ms: float
    """How long the silence lasted (VAD frames): until speech resumed or the next turn."""
    real_end: bool
    """The labelled turn ends here (else the user was only pausing)."""
    vad_lag_ms: float | None = None
    """For a real end: how late the VAD's end of speech is against the labelled end."""


@dataclass(slots=True)
class Models:
    """The engines a replay needs, loaded once."""

    vad: object
    asr: WhisperAsrEngine
    llm: LlamaEngine
    turn_model: SmartTurnEngine

    @classmethod
    def load(cls, config: Config) -> Models:
        return cls(load_vad(config), WhisperAsrEngine(packaged_path("asr")),
                   LlamaEngine(packaged_path("llm"), context_tokens=1024, threads=1),
                   SmartTurnEngine(packaged_path("turn")))


def pauses(config: Config) -> list[Pause]:
    models = Models.load(config)
    return [p for sc in all_scenarios() for p in replay(config, models, sc)]


def replay(config: Config, models: Models, sc: Scenario) -> list[Pause]:
    """Every speculative pause of one scenario, with its signals and its length."""
    cfg = config.turn
    vad, asr, llm, turn_model = models.vad, models.asr, models.llm, models.turn_model
    out: list[Pause] = []
    vad.reset()  # type: ignore[attr-defined]
    frame_n: int = vad.frame_samples  # type: ignore[attr-defined]
    detector = TurnDetector(cfg, frame_n / ASR_SAMPLE_RATE_HZ)
    heard = as_read_from_wav(sc)  # 16-bit, as simulate reads the judge's WAV
    frames = [heard[i : i + frame_n] for i in range(0, len(heard) - frame_n + 1, frame_n)]
    pre_roll: list[np.ndarray] = []
    turn_audio: list[np.ndarray] = []
    silent_run = 0
    open_pause: Pause | None = None
    for k, frame in enumerate(frames):
        prob = vad.probability(frame)  # type: ignore[attr-defined]
        end_s = (k + 1) * frame_n / ASR_SAMPLE_RATE_HZ
        if detector.in_turn:
            silent_run = silent_run + 1 if prob < cfg.end_threshold else 0
            if silent_run <= KEEP_SILENT_FRAMES:
                turn_audio.append(frame)
        keep = max(1, int(cfg.pre_roll_ms / 1000 * ASR_SAMPLE_RATE_HZ / frame_n))
        pre_roll = [*pre_roll, frame][-keep:]
        decision = detector.update(prob, end_s)
        if decision is Decision.START:
            turn_audio = list(pre_roll)
        elif decision is Decision.PAUSE:
            audio = np.concatenate(turn_audio)
            text = asr.transcribe(audio, final=True).text
            messages = [ChatMessage("system", config.llm.system_prompt),
                        ChatMessage("user", text)]
            llm_p = llm.end_of_turn_probability(messages) if text else 0.0
            at = detector.turn.speech_end_s
            labelled = [t["speech_end_s"] for t in sc.turns]
            near = [e for e in labelled if abs(at - e) < 0.25]
            open_pause = Pause(sc.name, round(at, 3), text, round(llm_p, 4),
                               round(turn_model.probability(audio), 4), 0.0, bool(near),
                               round((at - near[0]) * 1000) if near else None)
            out.append(open_pause)
        ends = decision in (Decision.RESUME, Decision.START) or k == len(frames) - 1
        if open_pause is not None and ends:
            open_pause.silence_ms = round((end_s - open_pause.at_s) * 1000)
            if decision is Decision.START:  # after END: the gap to the next turn
                open_pause.silence_ms = round(
                    (detector.turn.speech_start_s - open_pause.at_s) * 1000)
            open_pause = None
    return out


def evaluate(config: Config, rows: list[Pause]) -> dict[str, object]:
    cfg = config.turn
    cut, waits, lags = [], [], []
    for p in rows:
        score = end_of_turn_score(cfg, p.llm, p.audio) if p.text else None
        need = required_silence_ms(cfg, score)
        if p.real_end and p.silence_ms > END_SILENCE_MS:
            waits.append(need)
            lags.append(p.vad_lag_ms or 0.0)
        elif p.silence_ms > need:
            cut.append(f"{p.scenario}@{p.at_s} ({p.silence_ms} ms > {need} ms: {p.text!r})")
    return {"cutoffs": cut, "real_ends": len(waits),
            "median_wait_ms": statistics.median(waits) if waits else None,
            "max_wait_ms": max(waits) if waits else None,
            "median_vad_lag_ms": statistics.median(lags) if lags else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="a voicebox TOML config")
    ap.add_argument("--json", type=Path, help="write the table here")
    ap.add_argument("--table", type=Path, help="read a table written before (no models run)")
    args = ap.parse_args()
    config = load_config(args.config)
    if args.table:
        rows = [Pause(**r) for r in json.loads(args.table.read_text())]
    else:
        rows = pauses(config)
    for p in rows:
        kind = "END  " if p.real_end else "pause"
        print(f"{kind} {p.scenario:18} {p.at_s:6.2f}s llm={p.llm:.3f} audio={p.audio:.3f} "
              f"silence={p.silence_ms:6.0f} ms  {p.text!r}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(p) for p in rows], indent=1))
    print(json.dumps(evaluate(config, rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
