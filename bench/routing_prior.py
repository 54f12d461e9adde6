"""Build the learned router's day-one priors, shipped in the package:
`protocol/routing/cheap_model_prior.bin` and `protocol/routing/strong_model_prior.bin`.

    python -m bench.routing_prior [--data DIR] [--epochs 1]

Each is a `GoodAnswerModel` (see `protocol/routing/learned.py`) trained on public recorded outcomes:
RouteLLM's evaluation data (LMSYS, "RouteLLM: Learning to Route LLMs with Preference Data", ICLR
2025; Apache License 2.0), GSM8K, 29 MMLU domains and MT-Bench (`../shared/data/routing`, rows
marked contaminated left out). The cheap-model prior learns from Mixtral-8x7B-Instruct's answers,
the strong-model prior from GPT-4-1106-preview's, to the same prompts. A label is 1 when the answer
was right (MT-Bench: judged 8 or more out of 10). Both see the prompts in the same order, shuffled
with a fixed seed, so the build is reproducible. What the priors say is a start: live labels take
over as they come.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from relaybox.protocol.routing.learned import CHEAP_PRIOR, STRONG_PRIOR, GoodAnswerModel

from bench.routing_replay import DATA, load, user_features


def build(data: Path, epochs: int, *, strong: bool = False) -> tuple[GoodAnswerModel, int]:
    """The cheap model's prior (`strong`: the strong model's) from the mixed stream of `data`."""
    mixed = next(d for d in load(data) if d.name == "mixed")
    examples = [
        (user_features(p), float(mixed.outcomes.feedback(p.id, strong) >= 0.5)) for p in mixed.prompts
    ]
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
    for strong, path in ((False, CHEAP_PRIOR), (True, STRONG_PRIOR)):
        model, count = build(args.data, args.epochs, strong=strong)
        path.write_bytes(model.to_bytes())
        used = sum(1 for w in model.weights if w)
        print(
            f"{path.name}: {count} prompts, {args.epochs} pass(es): {used} of {len(model.weights)} slots in use"
        )
        print(f"written to {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
