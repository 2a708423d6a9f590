"""Projected voice-to-voice latency with a real hardwired-model card (a projection).

Reads the event logs of a bench run (``voicebox bench`` writes REPORT/events/*.jsonl)
and, per turn, replaces the LLM's measured wall time on the critical path (from the
final transcript to the first clause handed to TTS: end-of-turn scoring, prefill, the
first clause's tokens) by the card's modelled time from its firmware profile. Every
host stage (VAD, ASR, TTS, turn confirmation, playout) stays as measured:

    projected = max(turn confirmed, reply ready - LLM wall + card time) + playout

Usage: .venv/bin/python scripts/project_card_latency.py REPORT/events [--profile NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from voicebox.bench import scenarios
from voicebox.card.profile import find_profile, load_profile, profile_paths
from voicebox.card.timing import TURN_PROMPT_TOKENS, CardTiming

FIRST_CLAUSE_TOKENS = 6
"""Tokens until the first clause (the runtime cuts it after about three words)."""


def turn_timings(events: list[dict[str, Any]], end_s: float, turn: int) -> dict[str, float] | None:
    """Measured times (ms from the labelled end of speech) of the reply that played."""
    mine = [e for e in events if e.get("turn") == turn]
    play = next((i for i, e in enumerate(mine) if e["event"] == "PlaybackStarted"), None)
    if play is None:
        return None
    before = mine[:play]
    final = [e for e in before if e["event"] == "TranscriptFinal"]
    ended = [e for e in before if e["event"] == "TurnEnded"]
    if not final or not ended:
        return None
    after_final = [e for e in before if e["t"] >= final[-1]["t"]]
    clause = next((e for e in after_final if e["event"] == "ReplyText"), None)
    tts = next((e for e in after_final if e["event"] == "TtsFirstAudio"), None)
    if clause is None or tts is None:
        return None
    ready = (tts["stream_s"] - end_s) * 1000
    confirmed = (ended[-1]["stream_s"] - end_s) * 1000
    latency = (mine[play]["stream_s"] - end_s) * 1000
    return {
        "latency_ms": latency,
        "confirmed_ms": confirmed,
        "ready_ms": ready,
        "llm_wall_ms": (clause["t"] - final[-1]["t"]) * 1000,
        "playout_ms": latency - max(confirmed, ready),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("events", type=Path, help="folder of <scenario>.jsonl event logs")
    ap.add_argument("--profile", action="append", help="profile name (default: all)")
    args = ap.parse_args()
    profiles = ([find_profile(n) for n in args.profile] if args.profile
                else [load_profile(p) for p in profile_paths()])
    labels = {s.name: s for s in scenarios.all_scenarios()}
    turns: list[dict[str, float]] = []
    for log in sorted(args.events.glob("*.jsonl")):
        sc = labels.get(log.stem)
        if sc is None:
            continue
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for i, t in enumerate(sc.turns):
            got = turn_timings(events, t["speech_end_s"], i)
            if got is not None:
                turns.append(got)
    if not turns:
        print("no turns with a played reply in", args.events)
        return 1
    med = {k: round(statistics.median(t[k] for t in turns)) for k in turns[0]}
    print(f"PROJECTION (not a measurement) over {len(turns)} measured turns")
    print(f"measured on this host: median latency {med['latency_ms']} ms, "
          f"LLM wall on the critical path {med['llm_wall_ms']} ms, "
          f"turn confirmed {med['confirmed_ms']} ms, reply ready {med['ready_ms']} ms")
    print("| profile | projection? | card ms to first clause | projected p50 ms "
          "| projected p90 ms |")
    print("|---|---|---|---|---|")
    for prof in profiles:
        card = CardTiming(prof).token_ms(TURN_PROMPT_TOKENS, FIRST_CLAUSE_TOKENS - 1)
        proj = sorted(max(t["confirmed_ms"], t["ready_ms"] - t["llm_wall_ms"] + card)
                      + t["playout_ms"] for t in turns)
        p90 = proj[min(len(proj) - 1, round(0.9 * (len(proj) - 1)))]
        kind = ("yes" if prof.projection
                else "no: published facts, assumed values listed in the profile")
        print(f"| {prof.name} | {kind} | {card:.1f} | {round(statistics.median(proj))} "
              f"| {round(p90)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
