"""Runtime settings: frozen dataclasses, read from TOML, validated on creation."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebox.errors import VoiceboxError, read_text_file

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Reply in one or two short spoken sentences, "
    "without lists, markup or emoji."
)


class ConfigError(VoiceboxError):
    """A bad setting; the message names it."""


def _check(cond: bool, name: str, why: str) -> None:
    if not cond:
        raise ConfigError(f"config: {name} {why}")


MAX_SILENCE_MS = 10_000
"""No turn waits longer than this for silence (a longer pause is the user gone)."""

@dataclass(frozen=True, slots=True)
class TurnConfig:
    """Turn detection from VAD probabilities."""

    start_threshold: float = 0.5
    """Speech probability at which a frame counts as speech."""
    end_threshold: float = 0.35
    """Probability below which a frame counts as silence (hysteresis)."""
    min_speech_ms: int = 64
    """Speech needed to start a turn (and to barge in)."""
    speculate_after_ms: int = 32
    """Silence after which the reply is prepared (held until the turn is confirmed)."""
    end_of_turn_ms: int = 750
    """Silence that confirms the end of a turn whatever the words say."""
    semantic: bool = True
    """Weigh the words and the voice too: the LLM's probability that the sentence is
    complete and the audio turn model's (Smart Turn) probability that the speaker is done."""
    audio_model: bool = False
    """Also weigh Smart Turn's probability that the voice sounds finished. Off: with the
    user's words quoted for the score (``engines.llama_llm.SAID``), the LLM alone waits less
    for the same cut-offs than the mean of the two (BENCHMARKS.md section 5)."""
    llm_eot_full: float = 0.5
    """LLM end-of-turn probability that counts as certain (it rarely goes higher)."""
    silence_curve: tuple[tuple[float, int], ...] = (
        (0.3, 750), (0.5, 650), (0.6, 300), (0.7, 200))
    """End-of-turn score -> silence (ms) that confirms the turn, linear between the
    points; below the first score ``end_of_turn_ms``, above the last its silence; never
    more than ``end_of_turn_ms``.
    Fitted with ``scripts/eot_gaps.py --fit 0.037`` (a 300, 450 and 600 ms pause at every
    word gap of every test clip, plain and noisy) on the scores of the SmolLM2 stand-in
    as it is loaded, requantized to Q8_0 (``[llm] requantize``): 3.4 % of those pauses
    answered, median wait after the labelled end of speech at the 20 real ends 448 ms
    (p90 804); 6.1 % and 559 ms when each clip is left out of the fit. The curve before
    it, fitted on the Q4_1 scores (end 950, ``[[0.3, 950], [0.5, 750], [0.6, 250], [0.7,
    250], [0.8, 200]]``), answered 3.7 % with a 535 ms median wait on the Q8_0 scores
    (BENCHMARKS.md section 9). Replayed with this curve: 2.4 % answered, 448 ms.
    ``configs/eager-turns.toml`` (``--fit 0.1``): 10.7 %, 280 ms.
    A curve fitted on the bench's four pauses alone had answered 41 % of them."""
    continuation_ms: int = 1000
    """Speech this soon after a confirmed turn, before any reply audio was heard, continues
    that turn (the reply is dropped and made again) instead of starting a new one."""
    false_start_ms: int = 400
    """A reply interrupted after at most this much audio by speech that continues the
    turn is a false start: dropped, and the turn goes on (see ``continuation_ms``)."""
    pre_roll_ms: int = 300
    """Audio kept from before the detected speech start."""
    partial_interval_ms: int = 400
    """How often to transcribe while the user speaks."""
    energy_hold: bool = True
    """After the VAD's end of speech, restart the silence count at any frame clearly above
    the noise floor (``hold_rise_db`` over it, and over ``hold_min_dbfs``) once the level
    has dipped to it: silero is late on soft word onsets and misses some ("for them" in
    0870), and a pause must not be counted longer than it was. Over every word gap the
    VAD alone heard a median 40 ms (p90 168 ms) more silence than the pause held; with
    the hold 8 ms (BENCHMARKS.md section 5)."""
    hold_rise_db: float = 12.0
    """How far above the noise floor a frame restarts the silence count."""
    hold_min_dbfs: float = -45.0
    """Nor below this level, whatever the floor (digital silence has none)."""
    fast_barge_in: bool = True
    """Pause the reply on a rise in microphone energy before the VAD confirms speech.
    Needs an echo-free microphone (``listen`` turns it off unless told otherwise)."""

    def __post_init__(self) -> None:
        _check(0 < self.end_threshold <= self.start_threshold < 1, "end_threshold/start_threshold",
               "must satisfy 0 < end_threshold <= start_threshold < 1")
        _check(self.min_speech_ms > 0, "min_speech_ms", "must be > 0")
        _check(0 < self.end_of_turn_ms <= MAX_SILENCE_MS, "end_of_turn_ms",
               f"must be within 1..{MAX_SILENCE_MS}")
        _check(0 < self.speculate_after_ms <= self.end_of_turn_ms, "speculate_after_ms",
               "must be > 0 and <= end_of_turn_ms")
        _check(0 <= self.pre_roll_ms <= 2000, "pre_roll_ms", "must be within 0..2000")
        _check(0 < self.llm_eot_full <= 1, "llm_eot_full", "must be within (0, 1]")
        _check(all(len(point) == 2 and all(isinstance(v, int | float) and math.isfinite(v)
                                           for v in point) for point in self.silence_curve),
               "silence_curve", "must list [score, ms] pairs of finite numbers")
        curve = tuple((float(score), int(ms)) for score, ms in self.silence_curve)
        object.__setattr__(self, "silence_curve", curve)
        scores, waits = [c[0] for c in curve], [c[1] for c in curve]
        _check(bool(curve) and all(0 <= x <= 1 for x in scores)
               and all(a < b for a, b in zip(scores, scores[1:], strict=False)),
               "silence_curve", "must list [score, ms] points with scores rising within [0, 1]")
        _check(all(ms > 0 for ms in waits)
               and all(a >= b for a, b in zip(waits, waits[1:], strict=False)),
               "silence_curve", "silences must be > 0 and not rise")
        _check(self.partial_interval_ms > 0, "partial_interval_ms", "must be > 0")
        _check(self.hold_rise_db >= 0, "hold_rise_db", "must be >= 0")
        _check(-120 <= self.hold_min_dbfs <= 0, "hold_min_dbfs", "must be within -120..0")


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """Model files; None means the packaged default."""

    vad: Path | None = None
    asr: Path | None = None
    llm: Path | None = None
    """The GGUF model of ``engine = "llama"``, and the emulated card's stand-in (which the
    firmware profile must accept); a real card runs its own."""
    tts: Path | None = None
    turn: Path | None = None


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """Reply generation."""

    engine: str = "llama"
    """``llama`` (llama.cpp), ``emulated`` (emulated card) or ``pcie`` (card driver)."""
    profile: str | None = None
    """Firmware profile for the card engines."""
    device: str | None = None
    """Device path of the card (pcie)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """The reply's system prompt. The end-of-turn score keeps the default whatever this
    says (``engines.llama_llm.SCORING_SYSTEM_PROMPT``), so the fitted silence curve holds."""
    max_reply_tokens: int = 40
    context_tokens: int = 1024
    threads: int = 1
    burst_threads: int | None = None
    """llama.cpp's threads for the start of a reply (the prompt's end and the first tokens,
    up to about the first clause), when nothing else computes; ``threads`` the rest of the
    time. None: every core the process may use; 1: no burst. Applies to ``engine =
    "llama"`` and the emulated card's stand-in."""
    requantize: str = "Q8_0"
    """Load a GGUF whose weights llama.cpp has no batched prompt kernel for (Q4_1, as the
    packaged SmolLM2 is; Q5_1) requantized to this type, made once and cached
    (``engines.requantize``): the prompt and the end-of-turn score evaluate ~1.9x faster.
    ``off`` loads the file as it is. Applies to ``engine = "llama"`` and the emulated
    card's stand-in."""
    stream_tts: bool = True
    """Speak clause by clause as tokens arrive; False waits for the whole reply (naive)."""

    def __post_init__(self) -> None:
        _check(self.engine in ("llama", "emulated", "pcie"), "engine",
               "must be llama, emulated or pcie")
        _check(self.engine != "llama" or (self.profile is None and self.device is None),
               "profile/device", "apply to the card engines only (engine emulated or pcie)")
        _check(self.max_reply_tokens > 0, "max_reply_tokens", "must be > 0")
        _check(self.context_tokens >= 256, "context_tokens", "must be >= 256")
        _check(self.threads >= 1, "threads", "must be >= 1")
        _check(self.burst_threads is None or self.burst_threads >= 1, "burst_threads",
               "must be >= 1")
        _check(self.requantize in ("Q8_0", "off"), "requantize", "must be Q8_0 or off")


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """The sound card."""

    block_ms: float = 10.0
    sample_rate_hz: int | None = None
    """Device rate; None: 48 kHz when the card takes it, else its default rate."""
    input_device: int | str | None = None
    """PortAudio device index, or part of its name (``voicebox devices``)."""
    output_device: int | str | None = None
    echo_cancel: bool = False
    """Remove the reply's echo from the microphone (WebRTC's canceller, ``audio.echo``):
    for a loudspeaker rather than a headset. Needs ``block_ms = 10`` (the sound card
    says so when it opens)."""

    def __post_init__(self) -> None:
        _check(1.0 <= self.block_ms <= 100.0, "block_ms", "must be within 1..100")
        _check(self.sample_rate_hz is None or 8000 <= self.sample_rate_hz <= 384_000,
               "sample_rate_hz", "must be within 8000..384000")


@dataclass(frozen=True, slots=True)
class IntentsConfig:
    """Commands the application knows (``voicebox.runtime.intents``)."""

    file: Path | None = None
    """A hassil intents file (YAML); None: no intents."""
    silence_ms: int = 200
    """Silence that confirms a turn whose words are a whole sentence of an intent (the
    silence curve's shortest wait)."""
    open_silence_ms: int = 650
    """The most silence a command waits when its words could also begin a longer one
    ("stop" beside "stop moving"): the end-of-turn curve's wait if shorter. Above the
    300-600 ms mid-sentence pauses the bench must never answer."""

    def __post_init__(self) -> None:
        _check(self.silence_ms > 0, "silence_ms", "must be > 0")
        _check(self.open_silence_ms >= self.silence_ms, "open_silence_ms",
               "must be >= silence_ms")


LISTEN_NICE = 10
"""``inference_nice`` of `listen` unless configured."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the runtime needs."""

    turn: TurnConfig = field(default_factory=TurnConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    models: ModelPaths = field(default_factory=ModelPaths)
    intents: IntentsConfig = field(default_factory=IntentsConfig)
    asr_threads: int = 1
    """Whisper's threads: one (CTranslate2 on two threads was slower here: 236 vs 146 ms)."""
    inference_nice: int | None = None
    """Nice value of the ASR, LLM, TTS and turn-model threads (``runtime.priority``), so
    the audio callback, the event loop and the VAD get a core first. None: ``LISTEN_NICE``
    on a sound card (`listen`: through PulseAudio here 0-1 xruns per reply instead of
    3-18, and no reply heard as the user), 0 in `simulate` and the bench, whose virtual
    device paces the audio in the event loop: there the loop waited for the GIL held by
    niced threads (21 and 79 blocks late in two bench runs, against 2)."""
    tts_threads: int | None = None
    """Piper's threads; None: two when the process may use two cores or more (a 3-word
    clause 54 -> 30 ms here; they do not spin), else one (on one core two threads only
    take turns: bench p50 470 vs 410 ms)."""
    tts_chunk_frames: int = 12
    """Latent frames (256 samples, ~12 ms each at 22.05 kHz) in the first piece of a clause
    Piper decodes; the rest follows in longer pieces while the first plays
    (``PiperTtsEngine.synthesize_chunks``). 0: whole clauses. Over the bench's first
    clauses the first audio came a median 16 ms sooner (BENCHMARKS.md section 9)."""
    asr_tail: bool = False
    """Finals decode only the words the partials have not agreed on (see WhisperAsrEngine).
    Off by default: over the 35 clips of scripts/asr_wer.py it is faster (median 66 vs 87
    ms) and as accurate, but on the bench it moved neither median (370 ms either way) nor
    reply-ready time much, its restarts (a tail decode thrown away) widened p90 (590 vs
    522 ms) and its spelling of one ambiguous word cost WER (0.078 vs 0.061). Measured
    again with the quoted end-of-turn score (BENCHMARKS.md section 2): final ASR 73 vs 95
    ms, but its spellings ("ill disposed") move the score: p50 590 vs 480-555 ms. Again on
    an EPYC host (2026-12-05, three runs against two): p50 405-500 vs 430-440 ms, p90 709
    vs 688-696, WER 0.053-0.058 vs 0.063."""
    asr_final_beam: int = 5
    """Beam width of the final transcript (partials decode greedily). One is the fast
    setting (``configs/fast-asr.toml``): the final of the 6.5 s LibriVox sentence takes
    116 instead of 147 ms (one thread). The bench's median fell to 375 ms (470-515 at 5),
    mostly because other spellings moved end-of-turn scores and cache hits, and the WER
    rose to 0.067, above whole-utterance faster-whisper's 0.061 (BENCHMARKS.md section 2).
    Again on 2026-12-04 (section 9): p50 455 / 440 against 515 / 555 ms, WER 0.077 (whole
    0.087, beam 5 0.063), but over every word gap its scores answer 5.0 % of the pauses
    (3.7 % at beam 5) and wait longer at the real ends (546 against 496 ms)."""
    asr_mode: str = "windowed"
    """``windowed`` (short encoder window, fast) or ``whole`` (faster-whisper's 30 s default)."""

    def __post_init__(self) -> None:
        _check(self.asr_mode in ("windowed", "whole"), "asr_mode", "must be windowed or whole")
        _check(self.asr_threads >= 1, "asr_threads", "must be >= 1")
        _check(self.inference_nice is None or 0 <= self.inference_nice <= 19,
               "inference_nice", "must be within 0..19")
        _check(self.asr_final_beam >= 1, "asr_final_beam", "must be >= 1")
        _check(self.tts_threads is None or self.tts_threads >= 1, "tts_threads", "must be >= 1")
        _check(self.tts_chunk_frames >= 0, "tts_chunk_frames", "must be >= 0")


def load_config(path: Path | None, **overrides: Any) -> Config:
    """Read a TOML file (sections ``turn``, ``llm``, ``audio``, ``models``, ``intents``),
    then overrides.

    ``overrides`` are ``section__field=value`` pairs from the command line; None is ignored.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        text = read_text_file(path, "config file", ConfigError)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    sections = {"turn": TurnConfig, "llm": LlmConfig, "audio": AudioConfig, "models": ModelPaths,
                "intents": IntentsConfig}
    kwargs: dict[str, Any] = {}
    for name, cls in sections.items():
        values = raw.pop(name, {})
        _check(isinstance(values, dict), f"[{name}]", "must be a table of settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        _check(not unknown, f"[{name}]", f"has unknown keys: {', '.join(sorted(unknown))}")
        kwargs[name] = cls(**_typed(f"[{name}] ", cls, values))
    top_level = ("asr_threads", "inference_nice", "tts_threads", "tts_chunk_frames", "asr_tail",
                 "asr_final_beam", "asr_mode")
    top: dict[str, Any] = {key: raw.pop(key) for key in top_level if key in raw}
    _check(not raw, "file", f"has unknown keys: {', '.join(sorted(raw))}")
    return Config(**kwargs, **_typed("", Config, top))


def _typed(where: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (from TOML or flags) checked against the fields' types: a string where
    a number belongs is a one-line error, not a crash later. Paths come as strings."""
    hints = typing.get_type_hints(cls)
    return {key: _as_type(f"{where}{key}", hints[key], value) for key, value in values.items()}


def _as_type(name: str, hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` names (ints taken as floats, strings as paths)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return _as_type(name, option, value)
            except ConfigError:
                pass
        raise ConfigError(f"config: {name} must be {_kind(hint)}, not {value!r}")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if hint is Path:
        _check(isinstance(value, str | Path), name, f"must be a path, not {value!r}")
        return Path(value)
    if typing.get_origin(hint) is tuple:  # the silence curve: [[score, ms], ...]
        pairs = isinstance(value, list | tuple) and all(
            isinstance(p, list | tuple) and len(p) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in p)
            for p in value)
        _check(pairs, name, f"must be a list of [score, ms] pairs, not {value!r}")
        return value
    ok = {bool: isinstance(value, bool), str: isinstance(value, str), float: number,
          int: number and isinstance(value, int)}.get(hint, True)
    _check(ok, name, f"must be {_kind(hint)}, not {value!r}")
    return float(value) if hint is float else value


def _kind(hint: Any) -> str:
    options = [h for h in typing.get_args(hint) if h is not type(None)] or [hint]
    names = {bool: "true or false", str: "a string", float: "a number", int: "a whole number",
             Path: "a path"}
    return " or ".join(names.get(h, str(h)) for h in options)
