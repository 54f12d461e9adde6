"""Offline replay of recorded weak/strong outcomes through the real router code, in process.

    python -m bench.routing_replay [--data /work/shared/data/routing] [--seeds 5]

Each prompt of GSM8K, MMLU and MT-Bench (`/work/shared/data/routing/README.md`; contaminated rows
left out) is classified (`protocol.classifier.classify`) and routed (`protocol.selection.smart_route`
with a `protocol.evidence.Evidence`) over a two-model catalog: weak = Mixtral-8x7B (economy,
$0.24 per million tokens), strong = GPT-4 (premium, $24.7). Every call is priced as the same number
of tokens, so cost is 0.24 per weak call and 24.7 per strong call.

Modes (the README's):
1. router alone: one pick per prompt, no feedback; the knob is `TierThresholds.economy_max`.
2. online learning: prompts in a shuffled order (seeds 0..N-1, averaged); after each pick the picked
   model's recorded outcome (correct -> 1, wrong -> 0; MT-Bench judge score / 10) is fed back as an
   `Observation` the way the router actor feeds an answer's score (`failed` when under
   POOR_ANSWER_SCORE), on a simulated clock of one request every 10 s.
3. cascade (GSM8K only, the one set with answer text): weak first, `score_answer(weak text,
   category=classification.category)` judges it, strong when the score is under the reject
   threshold (default POOR_ANSWER_SCORE); cost counts both calls.

What the deciding code may see is kept apart from what it may not: a `Prompt` holds only the
messages a gateway would receive; outcomes live in `Outcomes`, a lookup by prompt id that only
`Outcomes.feedback` (the picked model's outcome, after the pick), `Outcomes.weak_text` (the
weak model's answer text, for the cascade's scorer) and the scoring of a finished run read.

MT-Bench's second turn is replayed as [user: turn 1, assistant: "" (a placeholder: the two
models answered turn 1 differently and the data keeps neither answer), user: turn 2].

Metrics (RouteLLM's): strong share (share of prompts that called the strong model), quality,
PGR = (q - q_weak) / (q_strong - q_weak), CPT(x) = the smallest strong share whose PGR reaches x
on the sweep's curve, APGR = the area under PGR over strong share 0..1 (trapezoids between the
sweep's points, anchored at always-weak (0, 0) and always-strong (1, 1)), and cost of the 95%
point = cost at the smallest strong share that reaches 95% of the strong model's quality, relative
to always-strong. Between two swept settings the curve is linear (alternating the two settings
achieves it). Random routing at strong share s has expected PGR s: APGR 0.5, CPT(x) = x.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.routing.catalog import Catalog, ModelEntry, ProviderModels
from relaybox.protocol.routing.classifier import Classification, TierThresholds, classify
from relaybox.protocol.routing.evidence import POOR_ANSWER_SCORE, Evidence, EvidencePolicy, Observation
from relaybox.protocol.routing.heuristics import score_answer
from relaybox.protocol.routing.selection import smart_route

from bench.machine import write

DATA = Path("/work/shared/data/routing")
WEAK = ("mixtral", "mixtral-8x7b-instruct")
STRONG = ("openai", "gpt-4-1106-preview")
COST = {WEAK: 0.24, STRONG: 24.7}  # USD per million tokens, the RouteLLM paper's prices
CATALOG = Catalog(
    providers=(
        ProviderModels(WEAK[0], (ModelEntry(WEAK[1], "economy"),), WEAK[1]),
        ProviderModels(STRONG[0], (ModelEntry(STRONG[1], "premium"),), STRONG[1]),
    ),
    costs=dict(COST),
)
START = 1_700_000_000.0
SPACING = 10.0  # simulated seconds between requests in the online mode
# Anything outside economy escalates to premium (there is no standard model): only economy_max matters.
# success_threshold: under about the weak model's success rate nothing is ever excluded.
THRESHOLD_SWEEP = tuple(round(0.05 * i, 2) for i in range(8, 21))


# --- what the router may see, and what it may not ----------------------------------------------


@attrs.frozen
class Prompt:
    """What a gateway receives: an id (for the harness's bookkeeping) and the messages."""

    id: str
    messages: tuple[ChatMessage, ...]

    def request(self) -> ChatRequest:
        return ChatRequest("auto", self.messages)


@attrs.frozen
class Outcome:
    weak: float  # correctness 0/1, or MT-Bench's judge score 1-10
    strong: float
    weak_text: str | None = None


@attrs.frozen
class Outcomes:
    """Recorded outcomes by prompt id. Read by the feedback step (the picked model only, after the
    pick), by the cascade's scorer (the weak answer's text only) and by the final scoring."""

    scale: float  # 1 for correctness, 10 for judge scores
    _by_id: dict[str, Outcome]

    def feedback(self, prompt_id: str, picked_strong: bool) -> float:
        """The picked model's outcome as 0..1 goodness."""
        outcome = self._by_id[prompt_id]
        return (outcome.strong if picked_strong else outcome.weak) / self.scale

    def weak_text(self, prompt_id: str) -> str | None:
        return self._by_id[prompt_id].weak_text

    def has_text(self) -> bool:
        return all(o.weak_text is not None for o in self._by_id.values())

    def quality(self, prompt_id: str, strong: bool) -> float:
        outcome = self._by_id[prompt_id]
        return outcome.strong if strong else outcome.weak

    def ids(self) -> list[str]:
        return list(self._by_id)


@attrs.frozen
class Dataset:
    name: str
    prompts: tuple[Prompt, ...]
    outcomes: Outcomes
    unit: str  # how quality reads


def load(data: Path) -> list[Dataset]:
    def rows(name: str) -> list[dict]:  # type: ignore[type-arg]
        with gzip.open(data / f"{name}.jsonl.gz", "rt") as file:
            return [row for row in map(json.loads, file) if row.get("contaminated") is not True]

    sets = []
    for name, file in (("GSM8K", "gsm8k"), ("MMLU", "mmlu")):
        prompts, outcomes = [], {}
        for row in rows(file):
            prompts.append(Prompt(row["id"], (ChatMessage("user", row["prompt"]),)))
            outcomes[row["id"]] = Outcome(
                float(row["weak_correct"]), float(row["strong_correct"]), row.get("weak_response")
            )
        sets.append(Dataset(name, tuple(prompts), Outcomes(1.0, outcomes), "share correct"))
    prompts, outcomes = [], {}
    for row in rows("mt_bench"):
        turns = row["turns"][: row["turn"]]
        messages: list[ChatMessage] = []
        for i, turn in enumerate(turns):
            if i:
                messages.append(ChatMessage("assistant", ""))
            messages.append(ChatMessage("user", turn))
        prompts.append(Prompt(row["id"], tuple(messages)))
        outcomes[row["id"]] = Outcome(float(row["weak_score"]), float(row["strong_score"]))
    sets.append(Dataset("MT-Bench", tuple(prompts), Outcomes(10.0, outcomes), "mean judge score 1-10"))
    return sets


# --- deciding: sees a Prompt (and, in the cascade, the weak answer's text), never an outcome ---------


_CLASSIFIED: dict[str, Classification] = {}


def classified(prompt: Prompt, thresholds: TierThresholds) -> Classification:
    """classify() of the prompt under `thresholds`. classify() is pure and its thresholds only turn
    the complexity into a tier (`TierThresholds.tier`), so each prompt is classified once and a
    sweep's other settings take that tier; agentic requests (none in this data) are classified
    again, since their tier is upgraded."""
    found = _CLASSIFIED.get(prompt.id)
    if found is None:
        found = _CLASSIFIED[prompt.id] = classify(prompt.request())
    if found.agentic:
        return classify(prompt.request(), thresholds)
    return attrs.evolve(found, tier=thresholds.tier(found.complexity))


def pick_strong(
    prompt: Prompt, thresholds: TierThresholds, evidence: Evidence, now: float, rng: random.Random
) -> tuple[bool, Classification]:
    classification = classified(prompt, thresholds)
    route = smart_route(CATALOG, classification, evidence, now=now, rng=rng)
    first = route.candidates[0]
    return (first.provider, first.model) == STRONG, classification


def cascade_escalates(weak_text: str, classification: Classification, reject_below: int) -> bool:
    """The response scorer on the weak model's answer text: what a gateway could run on it."""
    return score_answer(weak_text, finish_reason="stop", category=classification.category) < reject_below


# --- runs -----------------------------------------------------------------------------------------


@attrs.frozen
class Point:
    share: float  # share of prompts that called the strong model
    quality: float
    cost: float  # per prompt, in COST units


def router_alone(dataset: Dataset, economy_max: int) -> Point:
    thresholds = TierThresholds(economy_max=economy_max, standard_max=100)
    evidence, rng = Evidence(), random.Random(0)
    picks = {p.id: pick_strong(p, thresholds, evidence, START, rng)[0] for p in dataset.prompts}
    return score(dataset, picks)


def online(dataset: Dataset, economy_max: int, threshold: float, seeds: int) -> Point:
    points = []
    thresholds = TierThresholds(economy_max=economy_max, standard_max=100)
    policy = EvidencePolicy(success_threshold=threshold)
    for seed in range(seeds):
        order = list(dataset.prompts)
        random.Random(seed).shuffle(order)
        evidence, rng = Evidence(policy), random.Random(seed)
        picks = {}
        for i, prompt in enumerate(order):
            now = START + i * SPACING
            strong, classification = pick_strong(prompt, thresholds, evidence, now, rng)
            picks[prompt.id] = strong
            # The feedback step: only now, and only the picked model's outcome.
            good = dataset.outcomes.feedback(prompt.id, strong)
            provider, model = STRONG if strong else WEAK
            failed = good * 100 < POOR_ANSWER_SCORE
            evidence.observe(Observation(classification.category, provider, model, good, now, failed=failed))
        points.append(score(dataset, picks))
    return Point(*(sum(getattr(p, f) for p in points) / seeds for f in ("share", "quality", "cost")))


def cascade(dataset: Dataset, economy_max: int, reject_below: int) -> Point:
    """Router first (economy_max=100: everything starts on weak), then the scorer on weak answers."""
    thresholds = TierThresholds(economy_max=economy_max, standard_max=100)
    evidence, rng = Evidence(), random.Random(0)
    picks, cost = {}, 0.0
    for prompt in dataset.prompts:
        strong, classification = pick_strong(prompt, thresholds, evidence, START, rng)
        if not strong:
            text = dataset.outcomes.weak_text(prompt.id)
            assert text is not None
            cost += COST[WEAK]
            strong = cascade_escalates(text, classification, reject_below)
        cost += COST[STRONG] if strong else 0.0
        picks[prompt.id] = strong
    point = score(dataset, picks)
    return Point(point.share, point.quality, cost / len(dataset.prompts))


def score(dataset: Dataset, picks: dict[str, bool]) -> Point:
    quality = sum(dataset.outcomes.quality(i, s) for i, s in picks.items()) / len(picks)
    share = sum(picks.values()) / len(picks)
    return Point(share, quality, share * COST[STRONG] + (1 - share) * COST[WEAK])


# --- metrics --------------------------------------------------------------------------------------


@attrs.frozen
class Baselines:
    weak: float
    strong: float
    oracle: Point

    def pgr(self, quality: float) -> float:
        return (quality - self.weak) / (self.strong - self.weak)


def baselines(dataset: Dataset) -> Baselines:
    o = dataset.outcomes
    ids = o.ids()
    weak = sum(o.quality(i, False) for i in ids) / len(ids)
    strong = sum(o.quality(i, True) for i in ids) / len(ids)
    oracle = score(dataset, {i: o.quality(i, True) > o.quality(i, False) for i in ids})
    return Baselines(weak, strong, oracle)


def curve(points: Sequence[Point], base: Baselines) -> list[tuple[float, float, float]]:
    """(share, PGR, cost) sorted by share, equal shares merged, anchored at always-weak/always-strong."""
    merged: dict[float, list[Point]] = {}
    for point in points:
        merged.setdefault(round(point.share, 6), []).append(point)
    out = [(0.0, 0.0, COST[WEAK]), (1.0, 1.0, COST[STRONG])]
    for share, group in merged.items():
        if 0 < share < 1:
            quality = sum(p.quality for p in group) / len(group)
            out.append((share, base.pgr(quality), sum(p.cost for p in group) / len(group)))
    return sorted(out)


def apgr(points: list[tuple[float, float, float]]) -> float:
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(points))


def reach(points: list[tuple[float, float, float]], target: float) -> tuple[float, float] | None:
    """(share, cost) where the piecewise-linear PGR curve first reaches `target`."""
    for a, b in itertools.pairwise(points):
        if a[1] >= target:
            return a[0], a[2]
        if b[1] >= target:
            f = (target - a[1]) / (b[1] - a[1])
            return a[0] + f * (b[0] - a[0]), a[2] + f * (b[2] - a[2])
    return None


# --- the report -----------------------------------------------------------------------------------

HEADER = (
    f"{'':<52}{'strong':>7}{'quality':>9}{'PGR':>7}{'cost':>7}  |{'APGR':>6}{'CPT50':>7}{'CPT80':>7}"
    f"{'cost@95%':>9}"
)


def row(label: str, point: Point | None, base: Baselines, sweep: Sequence[Point] | None = None) -> str:
    text = f"{label:<52}"
    if point is None:
        text += f"{'':>30}"
    else:
        text += (
            f"{point.share:>7.1%}{point.quality:>9.3f}{base.pgr(point.quality):>7.2f}"
            f"{point.cost / COST[STRONG]:>7.1%}"
        )
    text += "  |"
    if sweep is not None:
        c = curve(sweep, base)
        target95 = base.pgr(0.95 * base.strong)
        cells = [f"{apgr(c):>6.3f}"]
        for target, width in ((0.5, 7), (0.8, 7)):
            hit = reach(c, target)
            cells.append(f"{hit[0]:>{width}.1%}" if hit else f"{'-':>{width}}")
        hit = reach(c, target95)
        cells.append(f"{hit[1] / COST[STRONG]:>9.1%}" if hit else f"{'-':>9}")
        text += "".join(cells)
    return text.rstrip()


def random_row(base: Baselines) -> str:
    target95 = base.pgr(0.95 * base.strong)
    share = min(1.0, max(0.0, target95))
    cost = share * COST[STRONG] + (1 - share) * COST[WEAK]
    return f"{'random (expected; PGR = strong share)':<52}{'':>30}  |{0.5:>6.3f}{0.5:>7.1%}{0.8:>7.1%}" + (
        f"{cost / COST[STRONG]:>9.1%}"
    )


def report(dataset: Dataset, seeds: int, log: Callable[[str], None]) -> list[str]:
    base = baselines(dataset)
    n = len(dataset.prompts)
    lines = [
        f"{dataset.name}: {n:,} prompts; quality = {dataset.unit}; weak {base.weak:.3f}, strong {base.strong:.3f}; "
        f"95% of strong = {0.95 * base.strong:.3f} (PGR {base.pgr(0.95 * base.strong):.2f})",
        HEADER,
    ]
    always_weak = Point(0.0, base.weak, COST[WEAK])
    always_strong = Point(1.0, base.strong, COST[STRONG])
    lines.append(row("always weak", always_weak, base))
    lines.append(row("always strong", always_strong, base))
    lines.append(row("oracle (weak unless only strong is better)", base.oracle, base))
    lines.append(random_row(base))

    started = time.perf_counter()
    # Every economy_max that moves a prompt: -1 and each complexity that occurs (no outcome read).
    levels = sorted({-1, *(classified(p, TierThresholds()).complexity for p in dataset.prompts)})
    sweep1 = [router_alone(dataset, e) for e in levels]
    default = TierThresholds().economy_max
    lines.append(
        row(f"1 router alone: economy_max {default} | sweep", router_alone(dataset, default), base, sweep1)
    )
    log(f"  {dataset.name} mode 1: {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    threshold = EvidencePolicy().success_threshold
    sweep2a = [online(dataset, 100, t, seeds) for t in THRESHOLD_SWEEP]
    point = online(dataset, 100, threshold, seeds)
    lines.append(row(f"2 learning alone: threshold {threshold} | sweep", point, base, sweep2a))
    sweep2b = [online(dataset, e, threshold, seeds) for e in levels[:: max(1, len(levels) // 12)]]
    point = online(dataset, default, threshold, seeds)
    lines.append(
        row(f"2 router+learning: e_max {default}, thr {threshold} | sweep e_max", point, base, sweep2b)
    )
    log(f"  {dataset.name} mode 2: {time.perf_counter() - started:.1f} s")

    if dataset.outcomes.has_text():
        started = time.perf_counter()
        rejects = (0, 21, 31, 51, 61, 71, 81, 91, 101)
        sweep3 = [cascade(dataset, 100, r) for r in rejects]
        point = cascade(dataset, 100, POOR_ANSWER_SCORE)
        lines.append(
            row(f"3 cascade: reject < {POOR_ANSWER_SCORE} | sweep reject level", point, base, sweep3)
        )
        sweep3b = [cascade(dataset, e, POOR_ANSWER_SCORE) for e in levels]
        point = cascade(dataset, default, POOR_ANSWER_SCORE)
        lines.append(row(f"3 router+cascade: e_max {default} | sweep e_max", point, base, sweep3b))
        log(f"  {dataset.name} mode 3: {time.perf_counter() - started:.1f} s")
    else:
        lines.append("3 cascade: not applicable (the data has no answer text for the scorer to read)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, default=3, help="shuffled orders averaged in mode 2")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = [
        "strong = share of prompts that called the strong model; cost = relative to always-strong "
        "(a weak call 0.24, a strong call 24.7);",
        "left of | : the mode's default setting; right of | : over its sweep. CPT = strong share where PGR "
        "first reaches 50% / 80%;",
        "cost@95% = cost, relative to always-strong, of the cheapest point reaching 95% of the strong "
        f"model's quality. Mode 2: mean of {args.seeds} shuffled orders.",
    ]
    for dataset in load(args.data):
        lines += ["", *report(dataset, args.seeds, print)]
    lines += ["", f"replayed in {time.perf_counter() - started:.0f} s"]
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('routing_replay', table)}")


if __name__ == "__main__":
    main()
