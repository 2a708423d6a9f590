"""How the framing of the user's words changes the LLM's replies (echoes and apologies).

The end-of-turn score puts the user's words to the model quoted (``I said: "..."``); this
checks what a reply to each framing looks like, over the final transcripts of a bench
run's events and a few assistant commands:

  .venv/bin/python scripts/reply_framing.py [--events reports/bench-split/events/voicebox]

An echo repeats 60 % or more of the user's words in order; an apology says "sorry" or
"apolog".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicebox.config import load_config  # noqa: E402
from voicebox.engines.llama_llm import SAID, LlamaEngine  # noqa: E402
from voicebox.engines.protocols import ChatMessage  # noqa: E402
from voicebox.models.locate import packaged_path  # noqa: E402

COMMANDS = ["Turn on the lights in the kitchen.", "What's the weather like tomorrow?",
            "Set a timer for ten minutes.", "Tell me a joke.", "What time is it?"]
FRAMINGS = {"bare": "{}", "said": SAID, "quote": '"{}"'}


def _words(text: str) -> list[str]:
    return [w for w in (t.strip(".,?!\"'").lower() for t in text.split()) if w]


def echo_fraction(user: str, reply: str) -> float:
    """Longest common word subsequence of the two, over the user's word count."""
    u, r = _words(user), _words(reply)
    row = [0] * (len(r) + 1)
    for a in u:
        prev = 0
        for j, b in enumerate(r):
            prev, row[j + 1] = row[j + 1], prev + 1 if a == b else max(row[j + 1], row[j])
    return row[-1] / max(1, len(u))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=Path, default=Path("reports/bench-split/events/voicebox"))
    args = ap.parse_args()
    texts: list[str] = []
    for path in sorted(args.events.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "TranscriptFinal" and event["text"] not in texts:
                texts.append(event["text"])
    texts += COMMANDS
    config = load_config(None)
    llm = LlamaEngine(packaged_path("llm"), context_tokens=1024, threads=1)
    for name, framing in FRAMINGS.items():
        echoes = sorry = 0
        for text in texts:
            messages = [ChatMessage("system", config.llm.system_prompt),
                        ChatMessage("user", framing.format(text))]
            reply = "".join(llm.stream(messages, max_tokens=40, cancel=threading.Event()))
            echoes += echo_fraction(text, reply) >= 0.6
            sorry += "sorry" in reply.lower() or "apolog" in reply.lower()
            print(f"[{name}] {text[:50]!r} -> {reply.strip()[:90]!r}")
        print(f"== {name}: echoes {echoes}/{len(texts)}, apologies {sorry}/{len(texts)}")
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
