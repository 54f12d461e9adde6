"""How long classify() takes per call, and the whole decision for `auto` as the router makes it
(classify, then `plan_route` with the learned router: the prompt's hashed features, and p(good
answer) of each of three models, one per tier, each with a full table of its own corrections, as
after much traffic): a short question, a 2k-token prompt, a 10k-token multi-turn conversation and
a 10k-token pasted log.

    python -m bench.classifier [--runs 20000]

Inputs are generated deterministically (a fixed seed); each is classified 200 times to warm up,
then `--runs` times, each call timed with perf_counter_ns. Reported in microseconds per call.
A token is taken as about 4 characters of English.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import attrs
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.routing.catalog import Catalog, ModelEntry, ProviderModels
from relaybox.protocol.routing.classifier import classify
from relaybox.protocol.routing.evidence import Evidence
from relaybox.protocol.routing.learned import FEATURE_BITS, QualityModels, features
from relaybox.protocol.routing.learned_route import PromptFeatures
from relaybox.protocol.routing.plan import RoutingContext, RoutingSettings, plan_route

from bench.machine import write

_TEXT = (
    "the service returns a value when the request arrives and the cache holds the result for each user "
    "so that later calls are faster but the queue can fill up under load and then the worker has to wait "
    "which is why we measure the latency of every step and compare it with the budget we set last week"
)
WORDS = tuple(_TEXT.split())


def prose(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + ". "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:chars]


def inputs() -> list[tuple[str, ChatRequest]]:
    rng = random.Random(1)
    short = ChatRequest("auto", (ChatMessage("user", "What is the capital of France?"),))
    two_k = ChatRequest(
        "auto",
        (ChatMessage("user", "Review this design and explain the trade-offs.\n\n" + prose(rng, 8_000)),),
    )
    turns: list[ChatMessage] = [ChatMessage("system", "You are a helpful assistant.")]
    while sum(len(m.text()) for m in turns) < 40_000:
        turns.append(ChatMessage("user", "Why does the worker stall? " + prose(rng, rng.randint(300, 1200))))
        code = "```python\ndef handle(request):\n    return cache.get(request.key)\n```\n"
        turns.append(ChatMessage("assistant", prose(rng, rng.randint(800, 3000)) + code))
    turns.append(ChatMessage("user", "Now fix the bug in handle() and add a test."))
    conversation = ChatRequest("auto", tuple(turns))
    lines = []
    while sum(map(len, lines)) < 40_000:
        n = len(lines)
        level = rng.choice(("INFO", "INFO", "WARN", "ERROR"))
        lines.append(
            f"2024-05-01T12:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z {level} worker-{n % 8} "
            f"request {rng.randrange(10**8):08x} took {rng.randint(1, 900)} ms status={rng.choice((200, 200, 500))}\n"
        )
    log = ChatRequest("auto", (ChatMessage("user", "Why does this keep failing?\n\n" + "".join(lines)),))
    return [
        ("short question (30 chars)", short),
        ("2k-token prompt (8 kB)", two_k),
        (f"10k-token conversation ({len(turns)} messages)", conversation),
        ("10k-token pasted log (40 kB)", log),
    ]


def percentile(sorted_values: list[int], share: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def cells(times: list[int]) -> str:
    return (
        f"{percentile(times, 0.5) / 1000:>8.1f}{percentile(times, 0.99) / 1000:>8.1f}{times[-1] / 1000:>9.1f}"
    )


def timed(call: Callable[[], object], runs: int) -> list[int]:
    for _ in range(200):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - started)
    return sorted(times)


def routing_context() -> RoutingContext:
    """Three models, one per tier, whose own learning has filled its table (the most work a
    prediction can take)."""
    entries = (ModelEntry("small", "economy"), ModelEntry("mid", "standard"), ModelEntry("big", "premium"))
    catalog = Catalog(
        (ProviderModels("p", entries, "small"),),
        costs={("p", "small"): 1.0, ("p", "mid"): 5.0, ("p", "big"): 20.0},
    )
    quality, rng = QualityModels(), random.Random(2)
    for entry in entries:
        model = quality.model(("p", entry.id), entry.tier)
        for slot in rng.sample(range(1 << FEATURE_BITS), model.max_slots):
            model.corrections[slot] = (rng.uniform(-1, 1), 1.0)
    return RoutingContext(catalog, catalog, RoutingSettings(), Evidence(), 0.0, rng, quality=quality)


def main(runs: int) -> None:
    header = f"{'input':<42}{'chars':>8}{'p50':>8}{'p99':>8}{'max':>9}"
    lines = [
        f"microseconds per call; {runs:,} timed calls per input after 200 warm-up calls",
        "",
        "classify()",
        f"{header}  category, complexity",
    ]
    decisions = ["", "the whole decision: classify() + plan_route('auto') by the learned router", header]
    context = routing_context()
    for label, request in inputs():
        chars = sum(len(m.text()) for m in request.messages)
        times = timed(lambda request=request: classify(request), runs)
        result = classify(request)
        lines.append(f"{label:<42}{chars:>8,}{cells(times)}  {result.category}, {result.complexity}")

        def decide(request: ChatRequest = request) -> object:
            users = [m.text() for m in request.messages if m.role == "user"]
            prompt = PromptFeatures(lambda: features(users))
            return plan_route("auto", None, classify(request), attrs.evolve(context, prompt=prompt))

        decisions.append(f"{label:<42}{chars:>8,}{cells(timed(decide, runs))}")
    table = "\n".join(lines + decisions)
    print(table)
    print(f"written to {write('classifier', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    main(parser.parse_args().runs)
