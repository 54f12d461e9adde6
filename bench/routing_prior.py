"""Build the learned router's day-one prior, `protocol/routing/cheap_model_prior.bin`, shipped in
the package.

    python -m bench.routing_prior [--data DIR] [--epochs 1]

It is a `GoodAnswerModel` (see `protocol/routing/learned.py`) trained on public recorded outcomes of
a cheap model: RouteLLM's evaluation data (LMSYS, "RouteLLM: Learning to Route LLMs with Preference
Data", ICLR 2025; Apache License 2.0), Mixtral-8x7B-Instruct's answers to GSM8K, 29 MMLU domains and
MT-Bench (`../shared/data/routing`, rows marked contaminated left out). A label is 1 when the answer
was right (MT-Bench: judged 8 or more out of 10). The prompts are shuffled with a fixed seed, so the
build is reproducible. What the prior says is a start: live labels take over as they come.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from relaybox.protocol.routing.learned import CHEAP_PRIOR as PRIOR
from relaybox.protocol.routing.learned import GoodAnswerModel

from bench.routing_replay import DATA, load, user_features


def build(data: Path, epochs: int) -> tuple[GoodAnswerModel, int]:
    mixed = next(d for d in load(data) if d.name == "mixed")
    examples = [(user_features(p), float(mixed.outcomes.feedback(p.id, False) >= 0.5)) for p in mixed.prompts]
    model = GoodAnswerModel()
    for epoch in range(epochs):
        random.Random(epoch).shuffle(examples)
        for x, good in examples:
            model.learn(x, good)
    return model, len(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    model, count = build(args.data, args.epochs)
    PRIOR.write_bytes(model.to_bytes())
    used = sum(1 for w in model.weights if w)
    print(f"{count} prompts, {args.epochs} pass(es): {used} of {len(model.weights)} slots in use")
    print(f"written to {PRIOR} ({PRIOR.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
