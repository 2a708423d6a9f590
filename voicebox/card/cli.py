"""``voicebox profiles`` and ``voicebox card serve|status``: profiles and the emulated card."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from voicebox.card.errors import ProfileError
from voicebox.card.profile import FirmwareProfile, find_profile, load_profile, profile_paths
from voicebox.card.timing import CardTiming

_LOGGER = logging.getLogger(__name__)


def add_subcommands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``profiles`` and ``card`` on the main parser."""
    p = subparsers.add_parser("profiles", help="list the card firmware profiles, or show one")
    sub = p.add_subparsers(dest="profiles_command")
    show = sub.add_parser("show", help="every field of one profile, with derived timings")
    show.add_argument("name", help="profile name (or path of a .toml)")
    show.set_defaults(func=cmd_profiles_show)
    p.set_defaults(func=cmd_profiles_list)

    card = subparsers.add_parser("card", help="the emulated card")
    csub = card.add_subparsers(dest="card_command", required=True)
    serve = csub.add_parser("serve", help="serve an emulated card on a UNIX socket or TCP")
    serve.add_argument("--profile", default="hc1-llama3.1-8b", help="firmware profile")
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", type=Path, help="socket path to serve on")
    where.add_argument("--tcp", metavar="[HOST:]PORT",
                       help="serve over TCP (HOST defaults to 127.0.0.1; 0.0.0.0 serves every "
                            "interface); drivers connect to tcp://HOST:PORT")
    serve.add_argument("--stand-in", type=Path, help="GGUF stand-in (default: SmolLM2-135M)")
    serve.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[@TOKEN]",
        help="inject a fault: hang, dead, garbage, truncate, reset, throttle, exhaust (repeatable)",
    )
    serve.add_argument(
        "--no-pace", action="store_true", help="do not pace tokens to the profile's rates"
    )
    serve.set_defaults(func=cmd_card_serve)
    status = csub.add_parser("status", help="IDENTIFY and STATUS of a card at a device path")
    status.add_argument("--device", required=True,
                        help="card device, socket path or tcp://HOST:PORT")
    status.set_defaults(func=cmd_card_status)


def cmd_profiles_list(args: argparse.Namespace) -> int:
    for path in profile_paths():
        try:
            p = load_profile(path)
        except ProfileError as exc:
            print(f"{path.stem:32s} INVALID: {exc}")
            continue
        tag = "PROJECTION " if p.projection else ""
        print(
            f"{p.name:32s} {tag}{p.model.name}, {p.context.context_tokens} tokens, "
            f"{p.timing.decode_tokens_per_s:,.0f} tok/s, {p.sessions.max_sessions} sessions"
        )
    return 0


def cmd_profiles_show(args: argparse.Namespace) -> int:
    print(describe_profile(find_profile(args.name)))
    return 0


def describe_profile(p: FirmwareProfile) -> str:
    """A readable page about one profile: its fields, what is assumed, derived timings."""
    lines = [f"{p.name}: {p.title}"]
    if p.projection:
        lines.append("  PROJECTION: this card does not exist; every number is extrapolated from:")
        lines += [f"    - {fact}" for fact in p.projected_from]
    lines.append(f"  firmware {p.firmware_version}")
    assumed = set(p.assumed)
    for section in (
        "model",
        "quantization",
        "context",
        "timing",
        "sessions",
        "power",
        "pcie",
        "chip",
    ):
        spec = getattr(p, section)
        lines.append(f"  [{section}]")
        for field in spec.__slots__:
            value = getattr(spec, field)
            if field == "stand_in":
                files, archs = ", ".join(value.files), ", ".join(value.architectures)
                value = f"files {files}; architectures {archs}"
            elif section == "pcie":
                value = f"{value:#06x}"
            mark = "  (assumed)" if f"{section}.{field}" in assumed else ""
            lines.append(f"    {field} = {value}{mark}")
    t = CardTiming(p)
    full = p.context.context_tokens
    lines.append("  derived (card time by the timing model):")
    lines.append(f"    first token after a 40-token turn: {t.token_ms(40, 0):.2f} ms")
    lines.append(f"    first token after a full {full}-token prompt: {t.token_ms(full, 0):.2f} ms")
    lines.append(
        f"    100-token reply after a 40-token turn: {t.reply_ms(40, 100):.2f} ms, "
        f"{t.energy_mj(t.reply_ms(40, 100)) / 1000:.2f} J"
    )
    return "\n".join(lines)


def cmd_card_serve(args: argparse.Namespace) -> int:
    from voicebox.card.emulator import CardEmulator
    from voicebox.card.faults import parse_fault
    from voicebox.card.standin import LlamaStandIn, check_stand_in
    from voicebox.card.transport import parse_tcp
    from voicebox.models.locate import packaged_path

    profile = find_profile(args.profile)
    endpoint = parse_tcp(args.tcp) if args.tcp else args.socket
    faults = [parse_fault(f) for f in args.fault]
    path = args.stand_in or packaged_path("llm")
    model = LlamaStandIn(path, context_tokens=max(512, profile.context.context_tokens))
    check_stand_in(profile, model.file_name, model.architecture)
    model.load()
    emulator = CardEmulator(profile, model, endpoint, pace=not args.no_pace)
    for fault in faults:
        emulator.inject(fault)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with emulator:
        print(
            f"emulated card {profile.name} serving on {emulator.address} "
            f"(stand-in {model.file_name}); Ctrl-C to stop",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    model.close()
    return 0


def cmd_card_status(args: argparse.Namespace) -> int:
    from voicebox.card.driver import CardDriver

    driver = CardDriver(args.device)
    try:
        identity = driver.identify()
        for key, value in {**identity.raw, **driver.status()}.items():
            print(f"{key:18s} {value}")
    finally:
        driver.close()
    return 0
