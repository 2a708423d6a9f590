"""The ``voicebox`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voicebox.config import LISTEN_NICE, Config, load_config
from voicebox.errors import VoiceboxError
from voicebox.events import (
    Event,
    EventLog,
    IntentRecognized,
    PlaybackStarted,
    ReplyDone,
    SpeechResumed,
    TranscriptFinal,
    TurnEnded,
)
from voicebox.events import Interrupted as InterruptedEvent

_LOGGER = logging.getLogger(__name__)


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--events", type=Path, help="write events as JSON lines to this file")
    p.add_argument("--engine", choices=["llama", "emulated", "pcie"], help="LLM engine")
    p.add_argument("--profile", help="firmware profile for --engine emulated|pcie")
    p.add_argument("--device", help="card device path for --engine pcie")
    p.add_argument("--llm-model", type=Path, help="GGUF file for --engine llama")
    p.add_argument("--asr-model", type=Path, help="CTranslate2 Whisper folder")
    p.add_argument("--tts-model", type=Path, help="Piper voice .onnx (with .onnx.json)")
    p.add_argument("--vad-model", type=Path, help="silero VAD .onnx")
    p.add_argument("--end-of-turn-ms", type=int, help="silence that ends a turn")
    p.add_argument("--max-reply-tokens", type=int, help="cap on reply length")
    p.add_argument("--intents", type=Path,
                   help="hassil intents file (YAML): commands confirmed at once, as events")


def _config(args: argparse.Namespace) -> Config:
    """The settings from ``--config`` and the flags; a bad intents file fails here, before
    any model loads."""
    from voicebox.runtime.intents import load_intents

    config = load_config(
        args.config,
        llm__engine=args.engine, llm__profile=args.profile, llm__device=args.device,
        llm__max_reply_tokens=args.max_reply_tokens,
        models__llm=args.llm_model, models__asr=args.asr_model,
        models__tts=args.tts_model, models__vad=args.vad_model,
        turn__end_of_turn_ms=args.end_of_turn_ms, intents__file=args.intents,
    )
    load_intents(config)
    return config


def _printer(quiet: bool, buffers_ms: Callable[[], float | None] = lambda: None
             ) -> Callable[[Event], None]:
    """Print what was heard (once the turn is confirmed), answered, and the latency;
    ``buffers_ms`` is what the sound card's buffers add to it, when known."""
    finals: dict[int, str] = {}
    confirmed: set[int] = set()

    def heard(turn: int, stream_s: float) -> None:
        if finals.get(turn):
            print(f"[{stream_s:7.2f}s] heard:    {finals.pop(turn)}", flush=True)

    def show(event: Event) -> None:
        if quiet:
            return
        if isinstance(event, TranscriptFinal):
            finals[event.turn] = event.text  # speculative until the turn is confirmed
            if event.turn in confirmed:
                heard(event.turn, event.stream_s)
        elif isinstance(event, TurnEnded):
            confirmed.add(event.turn)
            heard(event.turn, event.stream_s)
        elif isinstance(event, SpeechResumed):
            confirmed.discard(event.turn)
        elif isinstance(event, IntentRecognized):
            slots = ", ".join(f"{k}={v}" for k, v in event.slots.items())
            print(f"[{event.stream_s:7.2f}s] intent:   {event.name}({slots})", flush=True)
        elif isinstance(event, PlaybackStarted):
            extra = buffers_ms()
            buffers = "" if extra is None else f", +{extra:.0f} ms in the audio buffers"
            print(f"[{event.stream_s:7.2f}s] speaking: latency {event.latency_ms:.0f} ms "
                  f"(end of speech to first reply sample{buffers})", flush=True)
        elif isinstance(event, ReplyDone) and event.text:
            print(f"[{event.stream_s:7.2f}s] answered: {event.text}", flush=True)
        elif isinstance(event, InterruptedEvent):
            print(f"[{event.stream_s:7.2f}s] interrupted; user heard: {event.heard_text!r}",
                  flush=True)
    return show


def cmd_simulate(args: argparse.Namespace) -> int:
    from voicebox.audio.wav import read_wav
    from voicebox.runtime.build import close_engines, load_engines
    from voicebox.runtime.session import simulate_file

    config = _config(args)
    read_wav(args.inp)  # fail fast on a bad file, before loading models
    _check_outputs(args.inp, args.out, args.events)
    # A service manager's stop is a Ctrl-C: the audio played so far is still written.
    signal.signal(signal.SIGTERM, _interrupt)
    vad, engines = load_engines(config)
    log = EventLog(args.events, [_printer(args.quiet)])
    try:
        result = simulate_file(args.inp, args.out, config=config, vad=vad, engines=engines, log=log)
    finally:
        close_engines(engines)
        _close_log(log)
    lat = [e.latency_ms for e in result.events if isinstance(e, PlaybackStarted)]
    if not args.quiet:
        summary = ", ".join(f"{x:.0f}" for x in lat) or "none"
        print(f"replies: {len(lat)}; latency ms: {summary}; wrote {args.out}")
    return 0


def _check_outputs(inp: Path, out: Path, events: Path | None) -> None:
    """Before minutes of work: the outputs can be written, and none overwrites the input."""
    for path, what in ((out, "output"), (events, "event log")):
        if path is None:
            continue
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise VoiceboxError(f"{what} folder does not exist: {folder}")
        if path.is_dir():
            raise VoiceboxError(f"{what} is a directory, not a file: {path}")
        if not os.access(path if path.exists() else folder, os.W_OK):
            raise VoiceboxError(f"cannot write the {what}: {path}: permission denied")
        if path.exists() and inp.exists() and path.samefile(inp):
            raise VoiceboxError(f"the {what} would overwrite the input: {path}")
    if events is not None and events.exists() and out.exists() and events.samefile(out):
        raise VoiceboxError(f"the event log and the output are the same file: {out}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _close_log(log: EventLog) -> None:
    """Close the event log; its own error is reported unless another is on its way."""
    pending = sys.exc_info()[1]  # called from a ``finally``: the error on its way, if any
    try:
        log.close()
    except VoiceboxError:
        if pending is None:
            raise


def cmd_listen(args: argparse.Namespace) -> int:
    from voicebox.audio.devices import SoundDevice
    from voicebox.runtime.build import close_engines, load_engines, warm_up
    from voicebox.runtime.session import listen

    config = _config(args)
    if args.echo_cancel:
        config = dataclasses.replace(
            config, audio=dataclasses.replace(config.audio, echo_cancel=True)
        )
    if config.inference_nice is None:  # a sound card: the audio before inference
        config = dataclasses.replace(config, inference_nice=LISTEN_NICE)
    if not (args.echo_free or config.audio.echo_cancel):
        # A microphone that hears the speaker hears the reply: only the VAD may interrupt
        # it, not a rise in energy. With the echo cancelled, the energy gate hears the user.
        config = dataclasses.replace(
            config, turn=dataclasses.replace(config.turn, fast_barge_in=False)
        )
    device = SoundDevice(
        input_device=args.input_device or config.audio.input_device,
        output_device=args.output_device or config.audio.output_device,
        sample_rate_hz=config.audio.sample_rate_hz, block_ms=config.audio.block_ms,
        on_open=lambda opened: print(f"listening ({opened}); Ctrl-C to stop", flush=True),
        echo_cancel=config.audio.echo_cancel,
    )
    print("loading models", flush=True)
    vad, engines = load_engines(config)
    log = EventLog(args.events, [_printer(False, lambda: device.buffer_latency_ms)])
    try:
        warm_up(vad, engines, config.llm.system_prompt)  # before the audio starts
        asyncio.run(listen(device, config=config, vad=vad, engines=engines, log=log))
    finally:
        close_engines(engines)
        _close_log(log)
    print("stopped", flush=True)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from voicebox.audio.devices import list_devices

    devices = list_devices()
    if not devices:
        print("no audio devices found")
        return 1 if args.require_input else 0
    for d in devices:
        mark = ("<" if d.is_default_input else " ") + (">" if d.is_default_output else " ")
        print(f"{mark} {d.index:2d} {d.name}  in={d.inputs} out={d.outputs} "
              f"rate={d.default_rate_hz} Hz")
    if args.require_input and not any(d.inputs for d in devices):
        return 1
    return 0


def cmd_intents(args: argparse.Namespace) -> int:
    """Check an intents file; read sentences against it as the pipeline would."""
    from voicebox.runtime.intents import IntentMatcher

    matcher = IntentMatcher.from_file(args.file)
    if not args.sentences:
        names = matcher.intent_names
        print(f"{args.file}: {len(names)} intents: {', '.join(names)}")
        return 0
    missed = 0
    for sentence in args.sentences:
        match = matcher.match(sentence)
        if match is None:
            missed += 1
            print(f"{sentence!r}: no intent")
            continue
        slots = ", ".join(f"{k}={v}" for k, v in match.slots.items())
        wait = "could go on: the curve's wait, at most open_silence_ms" if match.open else (
            "finished: silence_ms")
        said = f"; says {match.response!r}" if match.response else ""
        print(f"{sentence!r}: {match.name}({slots}); {wait}{said}")
    return 1 if missed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicebox", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("listen", help="talk to the assistant through microphone and speaker")
    _add_pipeline_args(p)
    p.add_argument("--input-device", help="PortAudio input device (index or name)")
    p.add_argument("--output-device", help="PortAudio output device (index or name)")
    p.add_argument("--echo-cancel", action="store_true",
                   help="remove the reply's echo from the microphone (a loudspeaker, not "
                        "a headset); [audio] echo_cancel in the config")
    p.add_argument("--echo-free", action="store_true",
                   help="the microphone does not hear the speaker (headset, hardware AEC): "
                        "pause the reply on the first sound of the user's voice")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("simulate", help="hear a WAV in real time, write what was played")
    _add_pipeline_args(p)
    p.add_argument("--in", dest="inp", type=Path, required=True, help="input WAV")
    p.add_argument("--out", type=Path, required=True, help="output WAV, time-aligned with input")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("devices", help="list audio devices and their default rates")
    p.add_argument("--require-input", action="store_true",
                   help="exit 1 unless a capture device exists")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("intents", help="check an intents file, and read sentences against it")
    p.add_argument("file", type=Path, help="hassil intents file (YAML)")
    p.add_argument("sentences", nargs="*", help="transcripts to read (exit 1 if one matches "
                                                "no intent)")
    p.set_defaults(func=cmd_intents)

    for module in ("voicebox.models.cli", "voicebox.card.cli", "voicebox.bench.cli"):
        _register(sub, module)
    return parser


def _register(sub: Any, module: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return
        raise
    mod.add_subcommands(sub)


def _limit_malloc_arenas() -> None:
    """glibc gives each thread its own malloc arena; with an engine per thread that
    fragments into 100+ MB of RSS over a conversation. Two arenas, before any thread
    (for glibc's malloc: under jemalloc this changes nothing)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None or os.environ.get("MALLOC_ARENA_MAX"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(name).mallopt(-8, 2)  # M_ARENA_MAX


ALLOCATOR_ENV = "VOICEBOX_MALLOC"
"""``jemalloc`` (the default) or ``system``: which malloc a ``voicebox`` command runs on."""


def _preload_jemalloc() -> None:
    """Run this command again with jemalloc preloaded, if it is installed (Debian's
    libjemalloc2, which ``scripts/setup.sh`` installs) and not loaded yet.

    With glibc's malloc the engines' freed buffers stay resident: glibc raises its mmap
    threshold to the size of each large block freed, so Piper's and Whisper's multi-MB
    buffers then come from the heap, where they are kept behind smaller live blocks. Over
    the bench's 19 scenarios in one process the resident set climbed from ~510 to ~670 MB
    and peaked at 677-711 MB; under jemalloc it peaked at ~640 at the same latency. A
    fixed glibc threshold kept it at ~600 but cost ~100 ms a turn in page faults
    (BENCHMARKS.md section 9). ``VOICEBOX_MALLOC=system`` keeps glibc's.
    """
    choice = os.environ.get(ALLOCATOR_ENV, "jemalloc")
    if choice not in ("jemalloc", "system"):
        raise VoiceboxError(f"{ALLOCATOR_ENV}={choice!r}: must be jemalloc or system")
    if sys.platform != "linux" or choice == "system":
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload:
        return  # this is the second start, or the user preloaded it
    import ctypes.util

    name = ctypes.util.find_library("jemalloc")
    if name is None:
        return
    env = dict(os.environ, LD_PRELOAD=f"{name} {preload}".strip())
    # Unused pages go back to the system from jemalloc's own thread, not from whichever
    # thread frees next (the audio callback's, the event loop's).
    env.setdefault("MALLOC_CONF", "background_thread:true")
    try:
        os.execve(sys.executable, list(sys.orig_argv), env)
    except OSError as exc:
        print(f"voicebox: running on glibc's malloc: cannot restart with {name}: {exc}",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; called without ``argv`` (as the ``voicebox`` program) it first
    restarts itself on jemalloc (``_preload_jemalloc``)."""
    try:
        if argv is None:
            _preload_jemalloc()
        _limit_malloc_arenas()
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        result: int = args.func(args)
        return result
    except VoiceboxError as exc:
        print(f"voicebox: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("voicebox: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
