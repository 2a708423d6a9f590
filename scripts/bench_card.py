"""Benchmark the emulated card: fidelity, driver overhead, end-of-turn scoring, v2v projection.

Usage: .venv/bin/python scripts/bench_card.py [--replies N] [--host-stages-json FILE]

Writes reports/card_bench.md. Fidelity compares the tokens/s and time to first token
measured at the host with the profile's timing model, twice: with an instant fake
stand-in (shows how exactly the emulator paces) and with the real SmolLM2-135M stand-in
(shows the host's lag). Driver overhead compares the card engine (protocol, socket,
emulator) with calling the same stand-in directly. End-of-turn scoring compares
SCORE_NEXT through the card with LlamaEngine.end_of_turn_probability on the same model,
and a score followed by the reply with the reply alone (time to first piece).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.card.fakes import FakeStandIn  # noqa: E402
from voicebox.card.driver import CardDriver  # noqa: E402
from voicebox.card.emulator import CardEmulator, temp_socket_path  # noqa: E402
from voicebox.card.engine import CardLlmEngine  # noqa: E402
from voicebox.card.profile import FirmwareProfile, load_profile, profile_paths  # noqa: E402
from voicebox.card.standin import LlamaStandIn, StandInModel  # noqa: E402
from voicebox.card.timing import (  # noqa: E402
    FIRST_CLAUSE_TOKENS,
    TURN_PROMPT_TOKENS,
    CardTiming,
    project_v2v_ms,
)
from voicebox.engines.protocols import (  # noqa: E402
    ChatMessage,
    EndOfTurnScorer,
    LlmEngine,
)
from voicebox.models.locate import packaged_path  # noqa: E402

SCORE_SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Answer briefly.")
MESSAGES = [
    ChatMessage("system", "You are a helpful voice assistant. Answer briefly."),
    ChatMessage("user", "Tell me three facts about the moon."),
]
USER_TURNS = [
    "What is the tallest mountain in Europe",
    "Can you remind me to buy milk tomorrow",
    "How long does it take to boil an egg",
    "Tell me a short joke about penguins",
    "What time is sunset in Lisbon today",
    "Which planet has the most moons",
    "How do I say thank you in Japanese",
    "What is the boiling point of water in Denver",
    "Give me a synonym for happy",
    "Who painted the ceiling of the Sistine Chapel",
    "How many legs does a spider have",
    "What is the capital of Australia",
    "Spell the word necessary for me",
    "Is it going to rain this weekend",
]
"""Distinct user turns: every score or reply prefills new user words after a cached system."""
DEFAULT_HOST_STAGES_MS = {
    "end_of_turn_silence_ms": 300.0,
    "asr_final_ms": 150.0,
    "tts_first_clause_ms": 120.0,
    "playback_buffer_ms": 40.0,
}
"""Placeholder host stages; pass the lead's measured ones with --host-stages-json."""


class LongFake(FakeStandIn):
    """The fake stand-in with a long reply, so rates are measured over many tokens."""

    def stream_prompt(
        self, prompt: str, stop: list[str], *, max_tokens: int, cancel: threading.Event
    ) -> Iterator[str]:
        self.prompts.append(prompt)
        for i in range(max_tokens):
            if cancel.is_set():
                return
            yield f" w{i}"


def _measure(engine: CardLlmEngine, replies: int, max_tokens: int) -> dict[str, float]:
    ttft, rates, card_ttft, card_rates, lags, overhead = [], [], [], [], [], []
    for _ in range(replies):
        t0 = time.perf_counter()
        stamps = [time.perf_counter() - t0 for _ in engine.stream(
            MESSAGES, max_tokens=max_tokens, cancel=threading.Event())]
        s = engine.last_stats
        assert s is not None and len(stamps) >= 2
        ttft.append(stamps[0] * 1000)
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        card_ttft.append(s.card_ttft_ms)
        card_rates.append((s.tokens - 1) / ((s.card_ms - s.card_ttft_ms) / 1000))
        lags.append(s.emulation_lag_ms)
        overhead.append(s.wall_ms - s.card_ms - s.emulation_lag_ms)
    med = statistics.median
    return {"ttft_ms": med(ttft), "tok_s": med(rates), "card_ttft_ms": med(card_ttft),
            "card_tok_s": med(card_rates), "lag_ms": med(lags), "tokens": float(max_tokens)}


def _overhead_ms(model: StandInModel, engine: CardLlmEngine, replies: int,
                 max_tokens: int) -> tuple[float, float]:
    """Median ms per token calling the stand-in directly and via the card, interleaved."""
    prompt, stop = model.render(MESSAGES)
    direct, card = [], []
    for _ in range(replies + 1):  # the first round warms caches and is dropped
        t0 = time.perf_counter()
        n = sum(1 for _ in model.stream_prompt(prompt, stop, max_tokens=max_tokens,
                                               cancel=threading.Event()))
        direct.append((time.perf_counter() - t0) * 1000 / max(n, 1))
        t0 = time.perf_counter()
        n = sum(1 for _ in engine.stream(MESSAGES, max_tokens=max_tokens,
                                         cancel=threading.Event()))
        card.append((time.perf_counter() - t0) * 1000 / max(n, 1))
    return statistics.median(direct[1:]), statistics.median(card[1:])


def _score_costs(scorer: EndOfTurnScorer, llm: LlmEngine, replies: int) -> dict[str, float]:
    """Medians in ms: a score; a partial prefill; the reply's first piece alone; a score,
    then the first piece (cold: the user's words are new; warm: half of them prefilled)."""
    turns = iter(USER_TURNS * (1 + 4 * (replies + 1) // len(USER_TURNS)))
    rows: dict[str, list[float]] = {k: [] for k in ("score", "prefill", "alone", "cold", "warm")}

    def timed(call: Callable[[list[ChatMessage]], object], messages: list[ChatMessage]) -> float:
        t0 = time.perf_counter()
        call(messages)
        return (time.perf_counter() - t0) * 1000

    def first_piece(messages: list[ChatMessage]) -> None:
        next(iter(llm.stream(messages, max_tokens=8, cancel=threading.Event())), None)

    def turn(words: str) -> list[ChatMessage]:
        return [SCORE_SYSTEM, ChatMessage("user", words)]

    for _ in range(replies + 1):  # the first round warms caches and is dropped
        score = scorer.end_of_turn_probability
        rows["score"].append(timed(score, turn(next(turns))))
        rows["alone"].append(timed(first_piece, turn(next(turns) + "?")))
        cold = turn(next(turns) + "?")
        rows["cold"].append(timed(score, cold) + timed(first_piece, cold))
        words = next(turns).split()
        warm = turn(" ".join(words) + "?")
        # As the pipeline does: partial transcripts warm the cache while the user speaks.
        rows["prefill"].append(timed(scorer.prefill, turn(" ".join(words[: len(words) // 2]))))
        rows["warm"].append(timed(score, warm) + timed(first_piece, warm))
    return {k: statistics.median(v[1:]) for k, v in rows.items()}


def _engine(profile: FirmwareProfile, model: StandInModel, *, pace: bool) -> tuple[
        CardLlmEngine, CardEmulator]:
    emulator = CardEmulator(profile, model, temp_socket_path(), pace=pace).start()
    return CardLlmEngine(CardDriver(emulator.socket_path)), emulator


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replies", type=int, default=5)
    ap.add_argument("--host-stages-json", type=Path,
                    help="JSON object of measured host stage latencies in ms (no LLM stage)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "card_bench.md")
    args = ap.parse_args(argv)
    profiles = [load_profile(p) for p in profile_paths()]
    hc1 = next(p for p in profiles if not p.projection)
    lines = ["## Card emulation benchmark", "",
             f"Profile under test: `{hc1.name}`; {args.replies} replies per row, medians.", ""]

    # 1. Fidelity with an instant stand-in: pacing alone decides the timing.
    rows = []
    for prof in profiles:
        engine, emu = _engine(prof, LongFake(file_name=_accepted_name(prof)), pace=True)
        try:
            rows.append((prof.name, "fake (instant)", _measure(engine, args.replies, 400)))
        finally:
            engine.close()
            emu.stop()
    # 2. Fidelity with the real stand-in: the host is slower; lag is reported.
    model = LlamaStandIn(packaged_path("llm"), context_tokens=hc1.context.context_tokens)
    model.load()
    engine, emu = _engine(hc1, model, pace=True)
    try:
        rows.append((hc1.name, "SmolLM2-135M", _measure(engine, args.replies, 48)))
    finally:
        engine.close()
        emu.stop()
    # 3. Driver overhead per token: the same stand-in, unpaced card vs direct calls.
    overhead = {}
    for label, stand_in, n in (("fake (instant)", LongFake(), 400), ("SmolLM2-135M", model, 48)):
        engine, emu = _engine(hc1, stand_in, pace=False)
        try:
            overhead[label] = _overhead_ms(stand_in, engine, args.replies, n)
        finally:
            engine.close()
            emu.stop()
    # 4. End-of-turn scoring: SCORE_NEXT through the card vs the same model called directly.
    scoring = {"direct (LlamaEngine)": _score_costs(model.engine, model.engine, args.replies)}
    engine, emu = _engine(hc1, model, pace=False)
    try:
        scoring["card (SCORE_NEXT, unpaced)"] = _score_costs(engine, engine, args.replies)
    finally:
        engine.close()
        emu.stop()
    model.close()

    lines += ["### Emulation fidelity (host-measured vs the profile's timing model)", "",
              "| profile | stand-in | TTFT measured ms | TTFT model ms | tok/s measured "
              "| tok/s model | emulation lag ms/reply |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name, model_name, m in rows:
        lines.append(f"| {name} | {model_name} | {m['ttft_ms']:.2f} | {m['card_ttft_ms']:.2f} | "
                     f"{m['tok_s']:,.0f} | {m['card_tok_s']:,.0f} | {m['lag_ms']:.1f} |")
    lines += ["", "### Driver overhead per token (unpaced emulator vs direct stand-in calls)", "",
              "| stand-in | direct ms/token | via card ms/token | overhead us/token |",
              "|---|---:|---:|---:|",
              *[f"| {label} | {d:.4f} | {c:.4f} | {(c - d) * 1000:.0f} |"
                for label, (d, c) in overhead.items()], ""]
    lines += ["### End-of-turn score (SCORE_NEXT) vs direct, SmolLM2-135M, host wall time", "",
              "New user words after a cached system prompt, medians in ms. *reply alone*: "
              "time to the first reply piece; *score, then reply*: a score of the finished "
              "words, then the reply's first piece; *warm*: the same after a partial-transcript "
              "prefill of half the words (untimed, as while the user speaks).", "",
              "| path | score | partial prefill | reply alone | score, then reply (extra) "
              "| warm: score, then reply (extra) |", "|---|---:|---:|---:|---:|---:|",
              *[f"| {label} | {m['score']:.1f} | {m['prefill']:.1f} | {m['alone']:.1f} | "
                f"{m['cold']:.1f} ({m['cold'] - m['alone']:+.1f}) | "
                f"{m['warm']:.1f} ({m['warm'] - m['alone']:+.1f}) |"
                for label, m in scoring.items()], ""]

    host = DEFAULT_HOST_STAGES_MS
    if args.host_stages_json:
        host = {str(k): float(v) for k, v in json.loads(args.host_stages_json.read_text()).items()}
    host_total = sum(v for k, v in host.items() if not k.startswith("llm"))
    lines += ["### PROJECTION: voice-to-voice latency with the real card", "",
              "Not measured: host stages "
              + ("from " + str(args.host_stages_json) if args.host_stages_json
                 else "are PLACEHOLDERS (pass --host-stages-json)")
              + f" ({', '.join(f'{k}={v:.0f}' for k, v in host.items())}) plus the card's "
              f"timing model to the first clause ({TURN_PROMPT_TOKENS} new prompt tokens, "
              f"{FIRST_CLAUSE_TOKENS} tokens).", "",
              "| profile | projection profile? | card to first clause ms | host ms "
              "| projected voice-to-voice ms |", "|---|---|---:|---:|---:|"]
    for prof in profiles:
        card = CardTiming(prof).token_ms(TURN_PROMPT_TOKENS, FIRST_CLAUSE_TOKENS - 1)
        lines.append(f"| {prof.name} | {'yes' if prof.projection else 'no'} | {card:.2f} | "
                     f"{host_total:.0f} | {project_v2v_ms(prof, host):.0f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")
    return 0


def _accepted_name(profile: FirmwareProfile) -> str:
    return "SmolLM2-135M-Instruct.Q4_1.gguf"


if __name__ == "__main__":
    raise SystemExit(main())
