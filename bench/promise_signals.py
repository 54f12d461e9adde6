"""Which prompt signal could the quality promise rank by? Offline, on the recorded outcomes: each
signal ranks every prompt, and the table says what strong share that ranking needs to keep 50 %,
80 % and 95 % of the strong model's advantage (lower is better), beside prompt length (relaybox's
signal today, the live harness's "longest-first") and a topic oracle.

    python -m bench.promise_signals --data DIR [--sets mmlu,mixed] [--seeds 1,2,3,4]

The learned signals learn only what a live relaybox could: a probe sample (each prompt with
probability `PROBE_RATE`, as `[routing] probe_rate`) answered by both models and judged blind by a
judge wrong `JUDGE_WRONG` of the time, so each probe gives a noisy gain (strong verdict minus cheap
verdict, -1, 0 or 1). A probe's own gain never scores it (left out). Signals:

- length: log(1 + characters of the user's messages), relaybox's `promise.prompt_score`;
- topic, noisy: the mean noisy gain of the probes of the prompt's subject (the data's own domain
  label: a perfect topic clustering, which no live router has), shrunk toward the overall mean by
  `SHRINK` pseudo-probes: an upper bound for topic clusters learned from probes;
- neighbours: the mean noisy gain of the `NEIGHBOURS` most similar probes by relaybox's hashed word
  features (cosine), shrunk the same way;
- length + topic, length + neighbours: the sum of the two signals' ranks (each as a 0-1 quantile);
- topic oracle: the subject's true mean gain, from every prompt's recorded outcomes (no noise, no
  sampling): the best a router knowing only the topic can do.

This is no replay of the live router (the promise's threshold, its interval and its timing are the
live harness's, `bench/live_routing.py`); it asks only whether a signal ranks prompts better than
length, which is what would let the promise send fewer prompts up.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from relaybox.protocol.routing.learned import features
from relaybox.protocol.routing.promise import prompt_score

from bench import machine, routing_metrics
from bench.live_routing_upstream import Row, load_rows

DATA = Path("/work/shared/data/routing")
PROBE_RATE = 0.1
JUDGE_WRONG = 0.15
SHRINK = 10.0
NEIGHBOURS = 25
TARGETS = (0.5, 0.8, 0.95)


def user_text(row: Row) -> str:
    return "\n".join(content for role, content in row.messages if role == "user")


def rank01(values: Sequence[float]) -> list[float]:
    """Each value's quantile among all (ties share the mean rank), 0 to 1."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 / max(1, len(values) - 1)
        i = j + 1
    return ranks


def share_needed(outcomes: routing_metrics.Outcomes, scores: Sequence[float], target: float) -> float | None:
    """The strong share the ranking needs to reach `target` PGR (None: never)."""
    return routing_metrics.share_reaching(routing_metrics.ranking_curve(outcomes, scores), target)


def probes(rows: list[Row], rng: random.Random) -> dict[int, int]:
    """Prompt index -> noisy judged gain, for a random `PROBE_RATE` of the prompts."""

    def judged(good: bool) -> bool:
        return good if rng.random() >= JUDGE_WRONG else not good

    return {
        i: int(judged(row.strong_good)) - int(judged(row.weak_good))
        for i, row in enumerate(rows)
        if rng.random() < PROBE_RATE
    }


def topic_signal(rows: list[Row], sampled: dict[int, int]) -> list[float]:
    overall = statistics.fmean(sampled.values())
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for i, gain in sampled.items():
        sums[rows[i].domain] += gain
        counts[rows[i].domain] += 1
    scores = []
    for i, row in enumerate(rows):
        own = sampled.get(i)
        total = sums[row.domain] - (own or 0)
        count = counts[row.domain] - (own is not None)
        scores.append((total + SHRINK * overall) / (count + SHRINK))
    return scores


def neighbour_signal(rows: list[Row], sampled: dict[int, int]) -> list[float]:
    overall = statistics.fmean(sampled.values())
    vectors = [dict(features([user_text(row)])) for row in rows]
    norms = [math.sqrt(sum(v * v for v in vector.values())) or 1.0 for vector in vectors]
    # An inverted index over the probes' features: each prompt meets only the probes it shares a slot with.
    index: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for p in sampled:
        for slot, value in vectors[p].items():
            index[slot].append((p, value / norms[p]))
    scores = []
    for i, vector in enumerate(vectors):
        similarity: dict[int, float] = defaultdict(float)
        for slot, value in vector.items():
            for p, weight in index.get(slot, ()):
                if p != i:
                    similarity[p] += value / norms[i] * weight
        nearest = sorted(similarity, key=lambda p: -similarity[p])[:NEIGHBOURS]
        total = sum(sampled[p] for p in nearest)
        scores.append((total + SHRINK * overall) / (len(nearest) + SHRINK))
    return scores


def oracle_signal(rows: list[Row]) -> list[float]:
    gains: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        gains[row.domain].append(row.strong_quality - row.weak_quality)
    means = {domain: statistics.fmean(values) for domain, values in gains.items()}
    return [means[row.domain] for row in rows]


def signals(rows: list[Row], seed: int) -> dict[str, list[float]]:
    sampled = probes(rows, random.Random(seed))
    length = [prompt_score(user_text(row)) for row in rows]
    topic = topic_signal(rows, sampled)
    neighbours = neighbour_signal(rows, sampled)
    length_rank = rank01(length)
    return {
        "length (relaybox today)": length,
        "topic, noisy probes": topic,
        "neighbours, noisy probes": neighbours,
        "length + topic": [a + b for a, b in zip(length_rank, rank01(topic), strict=True)],
        "length + neighbours": [a + b for a, b in zip(length_rank, rank01(neighbours), strict=True)],
        "topic oracle": oracle_signal(rows),
    }


def mean_interval(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}"
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return f"{100 * mean:.1f} ±{100 * half:.1f}"


def table(set_name: str, rows: list[Row], seeds: list[int]) -> list[str]:
    outcomes = routing_metrics.Outcomes(
        tuple(row.weak_quality for row in rows), tuple(row.strong_quality for row in rows)
    )
    needed: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    never: dict[str, int] = defaultdict(int)
    for seed in seeds:
        print(f"  {set_name}, seed {seed} ...", file=sys.stderr)
        for name, scores in signals(rows, seed).items():
            for target in TARGETS:
                share = share_needed(outcomes, scores, target)
                if share is None:
                    never[name] += 1
                needed[name][target].append(1.0 if share is None else share)
    lines = [
        f"## {set_name}: {len(rows)} prompts, {len(seeds)} probe draws (seeds {','.join(map(str, seeds))})",
        "",
        "| signal | strong % for PGR 0.5 | for PGR 0.8 | for PGR 0.95 |",
        "|---|---|---|---|",
    ]
    for name, by_target in needed.items():
        cells = [mean_interval(by_target[target]) for target in TARGETS]
        note = f" ({never[name]} never reached: counted as 100)" if never[name] else ""
        lines.append(f"| {name}{note} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sets", default="mmlu,mixed")
    parser.add_argument("--seeds", default="1,2,3,4")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = [
        f"command: python -m bench.promise_signals --sets {args.sets} --seeds {args.seeds}",
        "",
        f"Probes: {PROBE_RATE:.0%} of the prompts, judged by a judge wrong {JUDGE_WRONG:.0%} of the time; "
        f"shrinkage {SHRINK:g} pseudo-probes; {NEIGHBOURS} neighbours. The strong share each ranking "
        "needs for a PGR; mean over the probe draws with a 95 % half-width. Lower is better.",
        "",
    ]
    for set_name in args.sets.split(","):
        rows, _ = load_rows(args.data, set_name)
        out.extend(table(set_name, rows, seeds))
    text = "\n".join(out)
    print(text)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = machine.RESULTS / "promise_signals.md"
    results.write_text(f"# promise_signals\n\n{stamp} on {machine.describe()}\n\n{text}\n")


if __name__ == "__main__":
    main()
