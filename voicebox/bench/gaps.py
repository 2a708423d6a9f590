"""The end-of-turn rule against pauses: replay speech offline through the pipeline's turn
detection and score every pause, then count cut-offs and waits, and fit the silence curve.

``replay`` runs a scenario's audio (16-bit, as ``simulate`` reads it) through the same
VAD, turn detector and turn-audio rules as the pipeline, without real-time pacing, and
at each speculative pause computes what the pipeline would: the final transcript, the
LLM's end-of-turn probability and Smart Turn's. ``measure`` does it for a pause inserted
at every word gap of every test clip (plain and under noise) and for the clips' real
ends; ``evaluate`` counts, for pauses of 300, 450 and 600 ms, how many the configured
``[turn] silence_curve`` would answer (cut-offs) beside the silence it requires at the
real ends; ``fit_curve`` finds the curve with the least wait for a cut-off budget. A
pause of 600 ms is 600 ms of silence between the two words, the speaker's own gap
included (``heard_silence_ms``); the stricter count with the pause added on top of that
gap (up to ~900 ms of silence) is reported too.
Used by ``voicebox bench`` and by scripts/eot_gaps.py and scripts/eot_table.py.

Gaps in the cards clips right after a whole item ("eight of spades | four of clubs")
are counted apart as ``item`` gaps: a reply there answers a complete phrase. The score
at a pause does not depend on how long the pause will last, so one replay per gap
serves all three pause lengths.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voicebox.audio.wav import read_wav
from voicebox.bench.run import as_read_from_wav
from voicebox.bench.scenarios import Clip, Scenario, _Builder, add_noise, clips, speaker_gap_ms
from voicebox.config import Config
from voicebox.engines.llama_llm import LlamaEngine
from voicebox.engines.protocols import ASR_SAMPLE_RATE_HZ, AsrEngine, ChatMessage, VadEngine
from voicebox.engines.smart_turn import SmartTurnEngine
from voicebox.models.locate import packaged_path
from voicebox.runtime.build import build_asr, load_vad, requantize_target
from voicebox.runtime.turn_audio import TurnAudio
from voicebox.runtime.turns import (
    Decision,
    TurnDetector,
    end_of_turn_score,
    frame_level,
    required_silence_ms,
)

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

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
    """The longest silence the turn detector counted in the pause (VAD frames): until
    speech resumed or the next turn, or between two sounds of the energy hold."""
    real_end: bool
    """The labelled turn ends here (else the user was only pausing)."""
    vad_lag_ms: float | None = None
    """For a real end: how late the VAD's end of speech is against the labelled end."""
    until_s: float | None = None
    """When the pause ended: speech resumed, the next turn began, or the audio ended
    (tables before the energy hold: ``at_s`` plus ``silence_ms``)."""

    @property
    def end_s(self) -> float:
        return self.until_s if self.until_s is not None else self.at_s + self.silence_ms / 1000


@dataclass(slots=True)
class Models:
    """The engines a replay needs, loaded once."""

    vad: VadEngine
    asr: AsrEngine
    llm: LlamaEngine
    turn_model: SmartTurnEngine

    @classmethod
    def load(cls, config: Config) -> Models:
        """The configured models and final decoding (``asr_final_beam``): the scores
        move with the final's spelling, so the replay must decode it as the pipeline does."""
        models = config.models
        return cls(load_vad(config), build_asr(config),
                   LlamaEngine(models.llm or packaged_path("llm"), context_tokens=1024,
                               threads=1, requantize=requantize_target(config)),
                   SmartTurnEngine(models.turn or packaged_path("turn")))


def replay(config: Config, models: Models, sc: Scenario) -> list[Pause]:
    """Every speculative pause of one scenario, with its signals and its length."""
    cfg = config.turn
    vad, asr, llm, turn_model = models.vad, models.asr, models.llm, models.turn_model
    out: list[Pause] = []
    vad.reset()
    frame_n = vad.frame_samples
    detector = TurnDetector(cfg, frame_n / ASR_SAMPLE_RATE_HZ)
    heard = as_read_from_wav(sc)  # 16-bit, as simulate reads the judge's WAV
    frames = [heard[i : i + frame_n] for i in range(0, len(heard) - frame_n + 1, frame_n)]
    turn_audio = TurnAudio(frame_s=frame_n / ASR_SAMPLE_RATE_HZ, pre_roll_ms=cfg.pre_roll_ms,
                           min_speech_ms=cfg.min_speech_ms, end_threshold=cfg.end_threshold)
    open_pause: Pause | None = None
    count_from = 0.0
    """Where the silence count of the open pause last started (the energy hold restarts it)."""
    for k, frame in enumerate(frames):
        prob = vad.probability(frame)
        end_s = (k + 1) * frame_n / ASR_SAMPLE_RATE_HZ
        turn_audio.add(frame, prob, in_turn=detector.in_turn)
        decision = detector.update(prob, end_s, frame_level(frame))
        if decision is Decision.START:
            turn_audio.start()
        elif decision is Decision.PAUSE:
            audio = turn_audio.samples()
            text = asr.transcribe(audio, final=True).text
            system = ChatMessage("system", config.llm.system_prompt)
            messages = [system, ChatMessage("user", text)]
            llm_p = llm.end_of_turn_probability(messages) if text else 0.0
            at = detector.turn.speech_end_s
            labelled = [t["speech_end_s"] for t in sc.turns]
            near = [e for e in labelled if abs(at - e) < 0.25]
            open_pause = Pause(sc.name, round(at, 3), text, round(llm_p, 4),
                               round(turn_model.probability(audio), 4), 0.0, bool(near),
                               round((at - near[0]) * 1000) if near else None)
            out.append(open_pause)
            count_from = at
        elif open_pause is not None and detector.turn.sound_s == end_s:
            # A sound restarts the count: the stretch before it is one the curve faced.
            open_pause.silence_ms = max(open_pause.silence_ms,
                                        round((end_s - count_from) * 1000))
            count_from = end_s
        ends = decision in (Decision.RESUME, Decision.START) or k == len(frames) - 1
        if open_pause is not None and ends:
            last = round((end_s - count_from) * 1000)
            if decision is Decision.START:  # after END: the gap to the next turn
                last = round((detector.turn.speech_start_s - count_from) * 1000)
            open_pause.silence_ms = max(open_pause.silence_ms, last)
            open_pause.until_s = round(end_s, 3)
            open_pause = None
    return out


PAUSES_MS = (300, 450, 600)
INSERT_S = 0.6
"""Each gap is replayed with this much silence inserted (the longest pause scored)."""
CUT_SEARCH_S = 0.05
"""The cut goes in the quietest 30 ms this close to the middle of the word gap."""
SUITS = ("spades", "clubs", "hearts", "diamonds")
MISSED_MS = 700


@dataclass(slots=True)
class Gap:
    clip: str
    noisy: bool
    before: str
    """The words said before the gap (reference timing from faster-whisper)."""
    kind: str
    """``mid`` (inside a phrase) or ``item`` (after a whole card in a list)."""
    natural_ms: float
    """Silence the speaker left there anyway (the detector's pause minus the insert); over
    ``MISSED_MS`` the detector did not hear the next word, and the gap is counted apart."""
    pause: Pause | None
    """The pipeline's pause row (None: the VAD saw no pause there, nothing to cut)."""
    gap_ms: float = 0.0
    """The speaker's own silence at the cut, from the clean clip's energy
    (``speaker_gap_ms``); a pause of 300 ms there adds only what is missing to 300."""


@dataclass(slots=True)
class End:
    clip: str
    noisy: bool
    pause: Pause


def word_gaps(model: WhisperModel, clip: Clip) -> list[tuple[float, str, str]]:
    """(time in the clip, words before, kind) of each gap between two words."""
    audio, _ = read_wav(clip.path)
    segments, _ = model.transcribe(audio, beam_size=5, word_timestamps=True, language="en")
    words = [w for s in segments for w in (s.words or [])]
    # The kind comes from the reference words where the counts agree ("four of close"
    # is "four of clubs"), else from the recognised ones.
    reference = clip.text.lower().split()
    said = reference if len(reference) == len(words) else [w.word.lower() for w in words]
    return [((a.end + b.start) / 2, "".join(w.word for w in words[: i + 1]).strip(),
             "item" if said[i].strip(" ,.").endswith(SUITS) else "mid")
            for i, (a, b) in enumerate(zip(words, words[1:], strict=False))]


def scenario(clip: Clip, at_s: float | None, noisy: bool) -> Scenario:
    """``clip`` alone, or with ``INSERT_S`` of silence at the word gap ``at_s`` s into it."""
    b = _Builder(f"{clip.name[-4:]}{'_noisy' if noisy else ''}@{at_s}").silence(0.5)
    if at_s is None:
        sc = b.speech(clip).silence(1.5).done()
    else:
        sc = (b.speech(clip, pause_at_s=at_s, pause_s=INSERT_S, search_s=CUT_SEARCH_S,
                       pause_holds_gap=False).silence(1.0).done())
    return add_noise(sc) if noisy else sc


def measure(config: Config, *, progress: bool = False) -> tuple[list[Gap], list[End]]:
    """Every word gap of every test clip with a pause inserted, and the clips' real ends."""
    from faster_whisper import WhisperModel

    models = Models.load(config)
    whisper = WhisperModel(str(packaged_path("asr")), device="cpu", compute_type="int8",
                           cpu_threads=2)
    gaps: list[Gap] = []
    ends: list[End] = []
    for clip in clips():
        cuts = word_gaps(whisper, clip)
        # The speaker's own quiet at each cut, from the clean clip (the same under noise).
        quiet = {at_s: speaker_gap_ms(clip, at_s, CUT_SEARCH_S) for at_s, _, _ in cuts}
        for noisy in (False, True):
            rows = replay(config, models, scenario(clip, None, noisy))
            ends += [End(clip.name, noisy, p) for p in rows if is_real_end(p)]
            for at_s, before, kind in cuts:
                sc = scenario(clip, at_s, noisy)
                start, _ = sc.pauses[0]
                rows = replay(config, models, sc)
                hit = [p for p in rows
                       if p.at_s <= start + 0.1 and p.end_s >= start + INSERT_S - 0.05]
                pause = hit[-1] if hit else None
                natural = pause.silence_ms - INSERT_S * 1000 if pause else 0.0
                gaps.append(Gap(clip.name, noisy, before, kind, natural, pause, quiet[at_s]))
                if progress:
                    scores = (f"llm={pause.llm:.3f} audio={pause.audio:.3f}" if pause
                              else "no pause")
                    print(f"{clip.name[-4:]:5} {'noisy' if noisy else 'plain'} {kind:4} "
                          f"{before[-40:]!r:44} {scores}", file=sys.stderr, flush=True)
    return gaps, ends


def _heard(gaps: list[Gap], kind: str) -> list[tuple[Gap, Pause]]:
    """The gaps of ``kind`` that are scored: the VAD paused there and heard the next word."""
    return [(g, g.pause) for g in gaps
            if g.kind == kind and g.pause is not None and g.natural_ms <= MISSED_MS]


def _score(config: Config, p: Pause) -> float:
    cfg = config.turn
    score = end_of_turn_score(cfg, p.llm, p.audio) if p.text else None
    return -1.0 if score is None else score  # no words: the curve's longest silence


def required_silence(config: Config, p: Pause) -> int:
    """Silence the configured curve requires at this pause."""
    return required_silence_ms(config.turn, _score(config, p))


def is_real_end(p: Pause) -> bool:
    """The pause at a labelled end that lasts: the user is done. A short one there (the
    user resumed for the last word) is not an end; its gap is scored as a mid gap."""
    return p.real_end and p.silence_ms >= END_SILENCE_MS


def wait_after_end_ms(required_ms: float, p: Pause) -> float:
    """When a turn with this required silence is confirmed, after the labelled end of
    speech: the silence counts from the VAD's end of speech, ``vad_lag_ms`` after it."""
    return required_ms + (p.vad_lag_ms or 0.0)


def heard_silence_ms(gap: Gap, pause_ms: float) -> float:
    """Silence the VAD hears in a pause of ``pause_ms`` between the two words of ``gap``:
    the speaker's own gap counts towards the pause, so silence is added only up to
    ``pause_ms`` (none if the gap is longer); the VAD hears that plus ``natural_ms``
    (which holds the speaker's gap and the VAD's own lags there)."""
    return gap.natural_ms + max(0.0, pause_ms - gap.gap_ms)


def evaluate(config: Config, gaps: list[Gap], ends: list[End]) -> dict[str, object]:
    out: dict[str, object] = {
        "gaps_without_pause": sum(1 for g in gaps if g.pause is None),
        "gaps_next_word_missed": sum(1 for g in gaps if g.natural_ms > MISSED_MS),
    }
    for kind in ("mid", "item"):
        chosen = [(g, required_silence(config, p)) for g, p in _heard(gaps, kind)]
        total = added = 0
        for ms in PAUSES_MS:
            cut = sum(1 for g, wait in chosen if heard_silence_ms(g, ms) > wait)
            out[f"{kind}_cutoffs_{ms}ms"] = f"{cut}/{len(chosen)}"
            total += cut
            added += sum(1 for g, wait in chosen if g.natural_ms + ms > wait)
        n = len(chosen) * len(PAUSES_MS)
        out[f"{kind}_cutoff_rate"] = round(total / n, 3) if n else None
        out[f"{kind}_cutoff_rate_added"] = round(added / n, 3) if n else None
    waits = [wait_after_end_ms(required_silence(config, e.pause), e.pause) for e in ends]
    out["real_ends"] = len(ends)
    out["median_wait_after_labelled_end_ms"] = statistics.median(waits) if waits else None
    out["p90_wait_after_labelled_end_ms"] = float(np.percentile(waits, 90)) if waits else None
    return out


FIT_SCORES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
"""Scores at which ``--fit`` chooses the curve's silences."""
FIT_MS = tuple(range(200, 951, 50))


@dataclass(slots=True)
class Fit:
    curve: tuple[tuple[float, int], ...]
    """``[turn] silence_curve``; ``end_of_turn_ms`` is its first silence."""
    cutoff_rate: float
    median_wait_ms: float
    p90_wait_ms: float


def fit_curve(config: Config, gaps: list[Gap], ends: list[End], max_rate: float) -> Fit | None:
    """The silences at ``FIT_SCORES`` (non-rising, from ``FIT_MS``) with the least median
    wait at the real ends (then the least mean) whose mid-phrase cut-off rate over
    ``PAUSES_MS`` is at most ``max_rate``; None if no curve is that safe."""
    heard = _heard(gaps, "mid")
    if not heard or not ends:
        return None
    g_score = np.array([_score(config, p) for _, p in heard])
    g_pause = np.array([[heard_silence_ms(g, ms) for ms in PAUSES_MS] for g, _ in heard])
    e_score = np.array([_score(config, e.pause) for e in ends])
    e_lag = np.array([e.pause.vad_lag_ms or 0.0 for e in ends])
    best: tuple[tuple[float, float], Fit] | None = None
    for waits in itertools.combinations_with_replacement(FIT_MS[::-1], len(FIT_SCORES)):
        need = np.interp(g_score, FIT_SCORES, waits)
        rate = float((g_pause > need[:, None]).mean())
        if rate > max_rate:
            continue
        wait = np.interp(e_score, FIT_SCORES, waits) + e_lag  # as wait_after_end_ms
        key = (float(np.median(wait)), float(wait.mean()))
        if best is None or key < best[0]:
            best = (key, Fit(tuple(zip(FIT_SCORES, waits, strict=True)), rate, key[0],
                             float(np.percentile(wait, 90))))
    return None if best is None else best[1]


def leave_one_clip_out(
    config: Config, gaps: list[Gap], ends: list[End], max_rate: float
) -> tuple[float, float, float]:
    """Cut-off rate, median and p90 wait of curves fitted without the clip they are
    scored on (each clip in turn): what the fit is worth on speech it has not seen."""
    cut = total = 0
    waits: list[float] = []
    for clip in sorted({g.clip for g in gaps}):
        fit = fit_curve(config, [g for g in gaps if g.clip != clip],
                        [e for e in ends if e.clip != clip], max_rate)
        if fit is None:
            continue
        scores, silences = zip(*fit.curve, strict=True)
        for g, p in _heard([g for g in gaps if g.clip == clip], "mid"):
            need = float(np.interp(_score(config, p), scores, silences))
            cut += sum(1 for ms in PAUSES_MS if heard_silence_ms(g, ms) > need)
            total += len(PAUSES_MS)
        waits += [wait_after_end_ms(float(np.interp(_score(config, e.pause), scores, silences)),
                                    e.pause) for e in ends if e.clip == clip]
    return (cut / total if total else 0.0, statistics.median(waits) if waits else 0.0,
            float(np.percentile(waits, 90)) if waits else 0.0)


def write_table(path: Path, gaps: list[Gap], ends: list[End]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(
        {"gaps": [asdict(g) for g in gaps], "ends": [asdict(e) for e in ends]}, indent=1))


def read_table(path: Path) -> tuple[list[Gap], list[End]]:
    data = json.loads(path.read_text())
    gaps = [Gap(**{**g, "pause": Pause(**g["pause"]) if g["pause"] else None})
            for g in data["gaps"]]
    ends = [End(e["clip"], e["noisy"], Pause(**e["pause"])) for e in data["ends"]]
    return gaps, [e for e in ends if is_real_end(e.pause)]  # tables before 2026-11-25 kept all
