"""Does the end-of-turn score depend on what the scoring cache held before?

Scores real partials and finals of the bench (single_0890, pause_0890, cards, 0870) in
random orders, with cut-back warms between them as the partials make, on the real
SmolLM2 engine, and compares each score with the same words scored on an empty cache:

  .venv/bin/python scripts/score_determinism.py [--redecode N] [--trials 60]

``--redecode 1`` is the old rule (only the last token re-evaluated): a token evaluated
alone after the cache was cut back comes out slightly different in llama.cpp, and so do
the scores after it.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicebox.engines import llama_llm  # noqa: E402
from voicebox.engines.llama_llm import LlamaEngine, scoring_messages  # noqa: E402
from voicebox.engines.protocols import ChatMessage  # noqa: E402
from voicebox.models.locate import packaged_path  # noqa: E402

TEXTS = (
    "Unless to be rather cold-hearted and rather selfish, is to be ill-disposed.",
    "Unless to be rather cold-hearted, and rather selfish, is to be ill-disposed.",
    "I'm less...", "Unless to be rather...", "Unless to be rather cold.",
    "Unless to be rather coldhearted...", "Unless to be rather cold-hearted in wrath.",
    "Unless to be rather coldhearted and rather a s-",
    "unless to be rather cold-hearted and rather selfish.",
    "Unless to be rather cold-hearted and rather selfish is to be-",
    "Eight of spades, four of clubs.", "Mr. John Dashwood had then leisure to consider how much",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redecode", type=int, default=llama_llm.REDECODE_TOKENS,
                    help="tokens re-evaluated at the end of a cached prompt")
    ap.add_argument("--trials", type=int, default=60)
    args = ap.parse_args()
    llama_llm.REDECODE_TOKENS = args.redecode
    system = ChatMessage("system", "")
    prompts = [[system, ChatMessage("user", t)] for t in TEXTS]
    scores = []
    for messages in prompts:  # each on an empty cache
        engine = LlamaEngine(packaged_path("llm"), context_tokens=1024, threads=1)
        scores.append(engine.end_of_turn_probability(messages))
        engine.close()
    engine = LlamaEngine(packaged_path("llm"), context_tokens=1024, threads=1)
    rng = random.Random(1)
    errors: list[float] = []
    for _ in range(args.trials):
        for _ in range(6):
            i = rng.randrange(len(prompts))
            if rng.random() < 0.4:  # a partial's warm: the start of some other words
                tokens = engine._user_prefix(scoring_messages(prompts[i]))
                engine.warm_scoring(tokens[: rng.randrange(len(tokens) // 2, len(tokens))])
                continue
            errors.append(abs(engine.end_of_turn_probability(prompts[i]) - scores[i]))
    moved = [e for e in errors if e > 1e-9]
    print(f"redecode {args.redecode}: {len(moved)} of {len(errors)} scores differ from the "
          f"empty-cache score; largest difference {max(errors):.4f}")
    return 1 if moved else 0


if __name__ == "__main__":
    raise SystemExit(main())
