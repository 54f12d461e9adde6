"""Offline replay of recorded weak/strong outcomes through the real router code, in process.

    python -m bench.routing_replay [--data DIR] [--seeds 3] [--bootstrap 200] [--json OUT] [--rates]

`--data` is read for whichever of `gsm8k.jsonl.gz`, `mmlu.jsonl.gz`, `mt_bench.jsonl.gz` it holds
(`/work/shared/data/routing/README.md` describes the format); with more than one, a `mixed` stream
of all their prompts is scored too (an MT-Bench answer judged 8 or more counts as good).

Each prompt of GSM8K, MMLU and MT-Bench (`/work/shared/data/routing/README.md`; contaminated rows
left out) is classified (`protocol.classifier.classify`) and routed (`protocol.selection.smart_route`
with a `protocol.evidence.Evidence`) over a two-model catalog: weak = Mixtral-8x7B (economy,
$0.24 per million tokens), strong = GPT-4 (premium, $24.7). Every call is priced as the same number
of tokens, so cost is 0.24 per weak call and 24.7 per strong call.

Modes (docs/routing.md's):
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

After the modes' tables, every method as a curve with 95% bootstrap intervals (prompts resampled;
`bench/routing_metrics.py`), drawn to `bench/results/routing_replay.png` and, with `--json`, written
as `{set: {method: {apgr, apgr_ci, cpt50, cpt50_ci, cpt80, cost95, default_share, default_pgr,
default_pgr_over_longest_first, ...}}}` (sets by the file's stem, `mixed`, and `mmlu_wo_top`: MMLU
without the domain carrying the most total weak-to-strong gain; shares and costs as fractions of 1,
`null` where a level is never reached). Methods:
- `router_alone`: the classifier's tier, ranked by complexity;
- `longest_first`: a baseline, the longest prompts go to the strong model first;
- `classifier_tiers`: smart routing before the learned router: the classifier's tier, per-category
  learning from each attempt's outcome replayed prequentially over shuffled orders, and the cascade
  where the data has the weak answer's text;
- `shipped`: the learned per-prompt router as relaybox deploys it (`learned_study`,
  `replay_learned`): a `learned.CorrectedModel` per model over its prior, the weak model when
  `learned.good_enough(p_weak, p_strong, target=T, gap=G)`, the cascade where the data has the weak
  answer's text, and only the labels a live relaybox gets (`Rates`: the judge on a share of
  weak-served answers, shadow answers compared by the judge, the cascade's rejections; a judge wrong
  15% of the time), every judge, shadow and rejected call in the cost. Prequential and cross-fitted:
  for each test fold (whole domains for a set of many, else conversations), priors trained on the
  other folds' recorded outcomes, and T and G chosen on the other folds alone (`choose`: the most
  PGR - strong share over a grid). Its curve shifts both from each fold's choice: T + d, G - d;
- `shipped_exact_labels` (a judge never wrong), `shipped_cold` (mixed: no prior) and
  `shipped_no_cascade` (sets with answer text): the same at the same operating points;
- `topic_oracle`: whole domains sent by their true weak-to-strong gain (the best any topic-aware
  router can do), and `oracle`: per prompt.
`--rates` adds a comparison of label rates (`RATE_STUDY`) at the recommended operating point
(`DEFAULT`) on the mixed stream and MMLU.

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
import multiprocessing
import os
import random
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.routing import learned
from relaybox.protocol.routing.catalog import Catalog, ModelEntry, ProviderModels
from relaybox.protocol.routing.classifier import Classification, TierThresholds, classify
from relaybox.protocol.routing.evidence import POOR_ANSWER_SCORE, Evidence, EvidencePolicy, Observation
from relaybox.protocol.routing.heuristics import score_answer
from relaybox.protocol.routing.selection import smart_route

from bench import routing_metrics
from bench.machine import RESULTS, describe, ensure_installed, write

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

    def outcome(self, prompt_id: str) -> Outcome:
        return self._by_id[prompt_id]

    def has_text(self) -> bool:
        return all(o.weak_text is not None for o in self._by_id.values())

    def text_for(self, prompt_id: str) -> bool:
        return self._by_id[prompt_id].weak_text is not None

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
    domains: tuple[str, ...] = ()  # per prompt, for reporting and the topic oracle only
    key: str = ""  # its name in the JSON: the file's stem, "mixed", "mmlu_wo_top"

    def qualities(self) -> routing_metrics.Outcomes:
        o = self.outcomes
        ids = [p.id for p in self.prompts]
        return routing_metrics.Outcomes(
            tuple(o.quality(i, False) for i in ids), tuple(o.quality(i, True) for i in ids)
        )


FILES = (("GSM8K", "gsm8k"), ("MMLU", "mmlu"), ("MT-Bench", "mt_bench"))
GOOD_JUDGE_SCORE = 8  # in the mixed stream, an MT-Bench answer scored 8 or more counts as good


def load(data: Path) -> list[Dataset]:
    """Whichever of the three files `data` holds, and, when it holds more than one, the mixed stream
    (every prompt of them, MT-Bench's judged good at 8 or more)."""

    def rows(file: str) -> list[dict]:  # type: ignore[type-arg]
        with gzip.open(data / f"{file}.jsonl.gz", "rt") as handle:
            return [row for row in map(json.loads, handle) if row.get("contaminated") is not True]

    sets = []
    for name, file in FILES:
        if not (data / f"{file}.jsonl.gz").exists():
            continue
        prompts, outcomes, domains = [], {}, []
        for row in rows(file):
            if name == "MT-Bench":
                messages: list[ChatMessage] = []
                for i, turn in enumerate(row["turns"][: row["turn"]]):
                    if i:
                        messages.append(ChatMessage("assistant", ""))
                    messages.append(ChatMessage("user", turn))
                prompts.append(Prompt(row["id"], tuple(messages)))
                outcomes[row["id"]] = Outcome(float(row["weak_score"]), float(row["strong_score"]))
            else:
                prompts.append(Prompt(row["id"], (ChatMessage("user", row["prompt"]),)))
                outcomes[row["id"]] = Outcome(
                    float(row["weak_correct"]), float(row["strong_correct"]), row.get("weak_response")
                )
            domains.append(f"{name}/{row.get('domain', '')}")
        scale, unit = (10.0, "mean judge score 1-10") if name == "MT-Bench" else (1.0, "share correct")
        sets.append(Dataset(name, tuple(prompts), Outcomes(scale, outcomes), unit, tuple(domains), file))
    if len(sets) > 1:
        sets.append(mixed(sets))
    sets += [without_top_domain(d) for d in sets if d.key == "mmlu" and len(set(d.domains)) > 1]
    return sets


def without_top_domain(dataset: Dataset) -> Dataset:
    """The set without the domain whose prompts carry the most total weak-to-strong gain: a router
    whose lead comes from one domain's quirk loses it here."""
    q = dataset.qualities()
    gain: dict[str, float] = {}
    for domain, weak, strong in zip(dataset.domains, q.weak, q.strong, strict=True):
        gain[domain] = gain.get(domain, 0.0) + strong - weak
    top = max(gain, key=lambda d: gain[d])
    kept = [i for i, domain in enumerate(dataset.domains) if domain != top]
    return attrs.evolve(
        dataset,
        name=f"{dataset.name} without {top.split('/', 1)[1]}",
        prompts=tuple(dataset.prompts[i] for i in kept),
        domains=tuple(dataset.domains[i] for i in kept),
        key=f"{dataset.key}_wo_top",
    )


def mixed(sets: list[Dataset]) -> Dataset:
    outcomes: dict[str, Outcome] = {}
    for dataset in sets:
        for prompt in dataset.prompts:
            o = dataset.outcomes.outcome(prompt.id)
            if dataset.outcomes.scale != 1.0:
                o = Outcome(
                    float(o.weak >= GOOD_JUDGE_SCORE), float(o.strong >= GOOD_JUDGE_SCORE), o.weak_text
                )
            outcomes[prompt.id] = o
    return Dataset(
        "mixed",
        tuple(p for d in sets for p in d.prompts),
        Outcomes(1.0, outcomes),
        "share good (MT-Bench: judged 8 or more)",
        tuple(x for d in sets for x in d.domains),
        "mixed",
    )


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


def classifier_tiers(
    dataset: Dataset, economy_max: int, seeds: int, reject_below: int = POOR_ANSWER_SCORE
) -> tuple[float, ...]:
    """relaybox's smart routing before the learned router, replayed prequentially: the classifier's tier, per-category
    learning from each attempt's outcome, and the cascade on the weak answer where the data has its
    text. Each prompt's chance of reaching the strong model over `seeds` shuffled orders, in the
    dataset's order."""
    thresholds = TierThresholds(economy_max=economy_max, standard_max=100)
    reached = dict.fromkeys((p.id for p in dataset.prompts), 0)

    def observe(evidence: Evidence, category: str, prompt_id: str, strong: bool, now: float) -> None:
        good = dataset.outcomes.feedback(prompt_id, strong)
        provider, model = STRONG if strong else WEAK
        failed = good * 100 < POOR_ANSWER_SCORE
        evidence.observe(Observation(category, provider, model, good, now, failed=failed))

    for seed in range(seeds):
        order = list(dataset.prompts)
        random.Random(seed).shuffle(order)
        evidence, rng = Evidence(), random.Random(seed)
        for i, prompt in enumerate(order):
            now = START + i * SPACING
            strong, classification = pick_strong(prompt, thresholds, evidence, now, rng)
            text = dataset.outcomes.weak_text(prompt.id)
            if not strong and text is not None:  # the cascade: the weak answer is scored, maybe escalated
                observe(evidence, classification.category, prompt.id, False, now)
                strong = cascade_escalates(text, classification, reject_below)
                if strong:
                    observe(evidence, classification.category, prompt.id, True, now)
            else:
                observe(evidence, classification.category, prompt.id, strong, now)
            reached[prompt.id] += strong
    return tuple(reached[p.id] / seeds for p in dataset.prompts)


# --- the learned per-prompt router, as relaybox deploys it ------------------------------------------

JUDGE_WRONG = 0.15  # share of the judge's verdicts that are wrong
FOLDS = 5


@attrs.frozen
class Rates:
    """Which labels a live relaybox gets (`[routing] judge_rate`, `shadow_rate`, `shadow_up_rate`)."""

    judge: float  # share of weak-served answers the judge grades alone: a label for the weak model
    shadow: float  # share of strong-served prompts the weak model also answers, judged: a label each
    shadow_up: float  # share of weak-served prompts the strong model also answers, judged: a label each
    judge_wrong: float = JUDGE_WRONG

    def label(self) -> str:
        return f"J {self.judge:g}, S {self.shadow:g}, U {self.shadow_up:g}"


@attrs.frozen
class Setting:
    """An operating point of `learned.good_enough`: the weak model serves when its predicted p(good)
    reaches `target`, or falls short of the strong model's by no more than `gap`."""

    target: float
    gap: float

    def shifted(self, shift: float) -> Setting:
        """Stricter by `shift` (looser when negative): the target up, the gap down."""
        return Setting(round(self.target + shift, 6), round(self.gap - shift, 6))

    def label(self) -> str:
        target = "off" if self.target >= 1 else f"{self.target:g}"
        gap = "off" if self.gap <= -1 else f"{self.gap:g}"
        return f"T {target}, G {gap}"


RATES = Rates(judge=0.3, shadow=0.3, shadow_up=0.0)  # the recommended defaults (docs/routing.md; `--rates`)
DEFAULT = Setting(0.75, 0.15)  # the recommended operating point: `choose` on the mixed stream's folds
# The grid `choose` searches (a target of 1 or a gap of -1 turns its clause off).
TARGETS = (0.65, 0.7, 0.75, 0.8, 0.85, 1.0)
GAPS = (-1.0, 0.1, 0.15, 0.2, 0.3)
# The curve: one scalar, a shift d of both knobs from the chosen setting (T + d, G - d): stricter
# (more prompts to the strong model) for d > 0, looser for d < 0; d = -1 sends every prompt to the
# weak model, d = 1 nearly every prompt to the strong one.
SHIFTS = (-1.0, -0.5, -0.3, -0.2, -0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
RATE_SHIFTS = (-1.0, -0.3, -0.15, -0.05, 0.0, 0.05, 0.15, 0.3, 1.0)  # the rate study's curves
RATE_STUDY = tuple(
    Rates(judge, shadow, up) for judge in (0.1, 0.3, 1.0) for shadow in (0.1, 0.3) for up in (0.0, 0.02)
)


def user_features(prompt: Prompt) -> learned.Features:
    return learned.features([m.text() for m in prompt.messages if m.role == "user"])


def folds(dataset: Dataset) -> list[list[int]]:
    """Test folds: whole domains for a set of many (the prior never saw the domains it is scored
    on), else, and for the mixed stream, conversations (cross-fitted: no prompt, nor another turn of
    its conversation, in its own prior)."""
    n = len(dataset.prompts)
    domains = sorted(set(dataset.domains))
    if len(domains) >= 2 * FOLDS and dataset.name != "mixed":
        random.Random(0).shuffle(domains)
        groups = [set(domains[k::FOLDS]) for k in range(FOLDS)]
        return [[i for i in range(n) if dataset.domains[i] in group] for group in groups]
    conversation = [zlib.crc32(p.messages[0].text().encode()) % FOLDS for p in dataset.prompts]
    return [[i for i in range(n) if conversation[i] == k] for k in range(FOLDS)]


@attrs.frozen
class Labelled:
    """What the learned router's replay needs per prompt, in the dataset's order: the features (what
    the router sees), the recorded outcomes as good or not (what a label says, read only after a
    pick, or for a prior), and the cascade scorer's verdict on the weak answer (None: no text)."""

    x: tuple[learned.Features, ...]
    good: tuple[tuple[float, ...], tuple[float, ...]]  # the weak model's, the strong model's
    escalates: tuple[bool | None, ...]


def labelled(dataset: Dataset, reject_below: int = POOR_ANSWER_SCORE) -> Labelled:
    """A judge's verdict is good/bad: correct, or (MT-Bench) judged GOOD_JUDGE_SCORE or more."""

    def good(prompt: Prompt, strong: bool) -> float:
        value = dataset.outcomes.quality(prompt.id, strong)
        return float(value >= (GOOD_JUDGE_SCORE if dataset.outcomes.scale != 1.0 else 0.5))

    def escalates(prompt: Prompt) -> bool | None:
        text = dataset.outcomes.weak_text(prompt.id)
        if text is None:
            return None
        return cascade_escalates(text, classified(prompt, TierThresholds()), reject_below)

    return Labelled(
        tuple(user_features(p) for p in dataset.prompts),
        (tuple(good(p, False) for p in dataset.prompts), tuple(good(p, True) for p in dataset.prompts)),
        tuple(escalates(p) for p in dataset.prompts),
    )


@attrs.frozen
class Replayed:
    """One setting over a fold: each prompt's chance of being served by the strong model (the mean
    over shuffled orders, in the fold's order), and the background calls per prompt."""

    reached: tuple[float, ...]
    extra_weak: float  # weak-priced: judge verdicts, shadow answers, attempts the cascade rejected
    extra_strong: float  # strong-priced: shadowing up


def train_priors(data: Labelled, indices: Sequence[int] | None) -> tuple[learned.GoodAnswerModel, ...]:
    """The weak and the strong model's priors, from the recorded outcomes of `indices` in a fixed
    shuffled order (None: a cold start, no prior)."""
    priors = (learned.GoodAnswerModel(), learned.GoodAnswerModel())
    order = list(indices or ())
    random.Random(0).shuffle(order)
    for i in order:
        for strong, prior in enumerate(priors):
            prior.learn(data.x[i], data.good[strong][i])
    return priors


def replay_learned(
    data: Labelled,
    test: Sequence[int],
    priors: tuple[learned.GoodAnswerModel, ...],
    settings: Sequence[Setting],
    rates: Rates,
    seeds: int,
    *,
    cascade: bool = True,
) -> list[Replayed]:
    """The learned router over the `test` prompts as a live relaybox runs it. A `CorrectedModel` per
    model over its prior; the weak model serves when `learned.good_enough(p_weak, p_strong)`, else
    the strong. A weak pick with answer text goes through the cascade's scorer first: a rejected
    answer is a bad label for the weak model (the scorer's verdict, never wrong here), and the strong
    model serves. Then, per answer served, one draw decides the follow-up (`judging.follow_up`):
    after a strong answer, `rates.shadow` of the time the weak model answers too and the judge
    compares (a label each; two weak-priced calls); after a weak answer, `rates.shadow_up` of the
    time the strong model answers too and the judge compares (a label each; a strong call and a
    judge call), else `rates.judge` of the time the judge grades it alone (a label for the weak
    model; one weak-priced call). The judge is wrong `rates.judge_wrong` of the time, on each
    verdict independently. Prompts in `seeds` shuffled orders, the same draws for every setting."""
    position = {i: k for k, i in enumerate(test)}
    draws = []
    for seed in range(seeds):
        rng = random.Random(seed)
        order = list(test)
        rng.shuffle(order)
        draws.append([(i, rng.random(), rng.random(), rng.random()) for i in order])
    x, (good_weak, good_strong) = data.x, data.good
    escalates = data.escalates if cascade else (None,) * len(x)
    wrong, shadow, up, judged = (
        rates.judge_wrong,
        rates.shadow,
        rates.shadow_up,
        rates.shadow_up + rates.judge,
    )
    runs = []
    for setting in settings:
        reached = [0] * len(test)
        extra_weak = extra_strong = 0
        for draw in draws:
            weak, strong = (learned.CorrectedModel(prior) for prior in priors)
            for i, u, u_weak, u_strong in draw:
                xi = x[i]
                p_weak = weak.predict(xi)  # (the strong model's prediction only when it matters)
                served_weak = p_weak >= setting.target or learned.good_enough(
                    p_weak, strong.predict(xi), target=setting.target, gap=setting.gap
                )
                if served_weak and escalates[i]:  # the scorer rejected the weak answer
                    served_weak = False
                    extra_weak += 1
                    weak.learn(xi, 0.0)
                if not served_weak:
                    reached[position[i]] += 1
                    if u < shadow:  # the weak model answers too; the judge compares the two
                        extra_weak += 2
                        weak.learn(xi, good_weak[i] if u_weak >= wrong else 1.0 - good_weak[i])
                        strong.learn(xi, good_strong[i] if u_strong >= wrong else 1.0 - good_strong[i])
                elif u < up:  # the strong model answers too; the judge compares the two
                    extra_strong += 1
                    extra_weak += 1
                    weak.learn(xi, good_weak[i] if u_weak >= wrong else 1.0 - good_weak[i])
                    strong.learn(xi, good_strong[i] if u_strong >= wrong else 1.0 - good_strong[i])
                elif u < judged:  # the judge grades the weak answer alone
                    extra_weak += 1
                    weak.learn(xi, good_weak[i] if u_weak >= wrong else 1.0 - good_weak[i])
        calls = seeds * len(test)
        runs.append(Replayed(tuple(r / seeds for r in reached), extra_weak / calls, extra_strong / calls))
    return runs


@attrs.frozen
class Job:
    """One fold's replay: the prompts scored, those its priors learn from (None: cold), settings."""

    test: tuple[int, ...]
    prior_from: tuple[int, ...] | None
    settings: tuple[Setting, ...]
    rates: Rates
    seeds: int
    cascade: bool = True


_LABELLED: list[Labelled] = []  # the dataset the worker processes replay (inherited by fork)


def _run(job: Job) -> list[Replayed]:
    data = _LABELLED[0]
    priors = train_priors(data, job.prior_from)
    return replay_learned(data, job.test, priors, job.settings, job.rates, job.seeds, cascade=job.cascade)


def run_jobs(data: Labelled, jobs: Sequence[Job]) -> list[list[Replayed]]:
    """The jobs on every core (each replay is sequential; the folds are independent)."""
    _LABELLED[:] = [data]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [_run(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_run, jobs, chunksize=1)


@attrs.frozen
class Pooled:
    """A setting's replay over several folds, put back in the dataset's order (prompts outside the
    folds: None), with the background calls per prompt of those folds."""

    reached: tuple[float | None, ...]
    extra_weak: float
    extra_strong: float

    @classmethod
    def of(cls, n: int, parts: Sequence[tuple[Sequence[int], Replayed]]) -> Pooled:
        reached: list[float | None] = [None] * n
        for indices, run in parts:
            for i, value in zip(indices, run.reached, strict=True):
                reached[i] = value
        total = sum(len(indices) for indices, _ in parts)
        return cls(
            tuple(reached),
            sum(run.extra_weak * len(indices) for indices, run in parts) / total,
            sum(run.extra_strong * len(indices) for indices, run in parts) / total,
        )

    def point(self, q: routing_metrics.Outcomes) -> tuple[float, float]:
        """(strong share, counting background strong calls; PGR) over the prompts replayed."""
        indices = [i for i, value in enumerate(self.reached) if value is not None]
        share, pgr = routing_metrics.operating_point(q.subset(indices), [self.reached[i] for i in indices])  # type: ignore[misc]
        return share + self.extra_strong, pgr


def choose(q: routing_metrics.Outcomes, pooled: dict[Setting, Pooled]) -> Setting:
    """The operating point with the most PGR beyond the strong share it spends (PGR - strong share:
    what it recovers beyond random routing at the same share), over the prompts replayed; ties to
    the lower share."""
    scored = {setting: run.point(q) for setting, run in pooled.items()}
    return max(scored, key=lambda s: (round(scored[s][1] - scored[s][0], 9), -scored[s][0]))


def _outside(parts: Sequence[Sequence[int]], *excluded: int) -> tuple[int, ...]:
    return tuple(i for k, fold in enumerate(parts) if k not in excluded for i in fold)


@attrs.frozen
class Study:
    """The learned router's methods for one dataset, how their operating points were chosen, and the
    lines that report it."""

    methods: dict[str, Method]
    chosen: tuple[Setting, ...]  # per test fold, on its training folds
    on_all: Setting  # on all folds, the same way
    lines: tuple[str, ...]


def learned_study(dataset: Dataset, seeds: int, rates: Rates, inner_seeds: int = 1) -> Study:
    """The learned router, tuned and scored without seeing its test folds: for each test fold k,
    each other fold j is replayed with priors from the folds other than j and k over the grid
    (TARGETS x GAPS), and `choose` picks the setting on those training folds; fold k is then
    replayed with priors from all folds but k over the chosen setting shifted (SHIFTS), and its
    default point is the chosen setting. Across folds the curve's m-th point is SHIFTS[m] from
    each fold's gap. The default relaybox should ship is chosen the same way on all folds."""
    q = dataset.qualities()
    n = len(dataset.prompts)
    data = labelled(dataset)
    parts = folds(dataset)
    grid = tuple(Setting(t, g) for t in TARGETS for g in GAPS)

    tuning = [(k, j) for k in range(len(parts)) for j in range(len(parts)) if j != k]
    jobs = [Job(tuple(parts[j]), _outside(parts, j, k), grid, rates, inner_seeds) for k, j in tuning]
    jobs += [Job(tuple(parts[k]), _outside(parts, k), grid, rates, inner_seeds) for k in range(len(parts))]
    started = time.perf_counter()
    done = run_jobs(data, jobs)
    print(f"  {dataset.name}: operating points chosen in {time.perf_counter() - started:.0f} s", flush=True)
    inner, outer = done[: len(tuning)], done[len(tuning) :]

    def pooled(runs: Sequence[tuple[int, list[Replayed]]]) -> dict[Setting, Pooled]:
        return {
            setting: Pooled.of(n, [(parts[j], replayed[s]) for j, replayed in runs])
            for s, setting in enumerate(grid)
        }

    chosen = tuple(
        choose(q, pooled([(j, inner[t]) for t, (kk, j) in enumerate(tuning) if kk == k]))
        for k in range(len(parts))
    )
    on_all_runs = pooled(list(enumerate(outer)))
    on_all = choose(q, on_all_runs)

    variants: dict[str, tuple[Rates, bool, bool]] = {"shipped": (rates, False, True)}  # rates, cold, cascade
    if dataset.key != "mmlu_wo_top":  # (there, to save time)
        variants["shipped_exact_labels"] = (attrs.evolve(rates, judge_wrong=0.0), False, True)
    if dataset.name == "mixed":
        variants["shipped_cold"] = (rates, True, True)
    if dataset.outcomes.has_text():
        variants["shipped_no_cascade"] = (rates, False, False)
    jobs = [
        Job(
            tuple(fold),
            None if cold else _outside(parts, k),
            tuple(chosen[k].shifted(shift) for shift in SHIFTS),
            r,
            seeds,
            cascade,
        )
        for r, cold, cascade in variants.values()
        for k, fold in enumerate(parts)
    ]
    started = time.perf_counter()
    done = run_jobs(data, jobs)
    print(f"  {dataset.name}: learned router replayed in {time.perf_counter() - started:.0f} s", flush=True)
    methods: dict[str, Method] = {}
    for v, (name, (_, _, cascade)) in enumerate(variants.items()):
        runs = done[v * len(parts) : (v + 1) * len(parts)]
        sweep = [
            Pooled.of(n, [(parts[k], runs[k][m]) for k in range(len(parts))]) for m in range(len(SHIFTS))
        ]
        default = Pooled.of(n, [(parts[k], runs[k][SHIFTS.index(0.0)]) for k in range(len(parts))])
        prefix = "shipped: learned" if name == "shipped" else "learned"
        what = {
            "shipped": "",
            "shipped_exact_labels": ", a judge never wrong",
            "shipped_cold": ", cold start (no prior)",
            "shipped_no_cascade": ", no cascade",
        }[name]
        with_cascade = " + cascade" if cascade and any(e is not None for e in data.escalates) else ""
        methods[name] = Method(
            f"{prefix}{with_cascade}{what} | sweep T+d, G-d",
            settings(
                [run.reached for run in sweep],  # type: ignore[misc]
                extra_weak_calls=[run.extra_weak for run in sweep],
                extra_strong_calls=[run.extra_strong for run in sweep],
            ),
            default.point(q),
            default.reached,  # type: ignore[arg-type]
            default.extra_strong,
        )
    share, pgr = on_all_runs[on_all].point(q)
    lines = (
        f"learned router: labels {rates.label()} (judge wrong {rates.judge_wrong:.0%}); operating point chosen "
        "by PGR - strong share on the training folds' replays",
        "  per test fold: " + "; ".join(f"{k + 1}: {s.label()}" for k, s in enumerate(chosen)),
        f"  on all folds: {on_all.label()} (share {share:.1%}, PGR {pgr:.3f}, one shuffled order)",
    )
    return Study(methods, chosen, on_all, lines)


def rates_study(
    dataset: Dataset, setting: Setting, seeds: int
) -> tuple[list[str], dict[Rates, tuple[float, float]]]:
    """Each of RATE_STUDY's label rates, replayed as `learned_study` replays its test folds (priors
    from the other folds), at the operating point `setting` and over it shifted (RATE_SHIFTS):
    APGR, CPT(50%), the default point, and what the background calls cost there. With the lines,
    each rate's (score, APGR): score = PGR - strong share (counting shadow-up calls) - the
    weak-priced background calls' cost in strong calls, at `setting`."""
    q = dataset.qualities()
    n = len(dataset.prompts)
    data = labelled(dataset)
    parts = folds(dataset)
    sweep = tuple(setting.shifted(shift) for shift in RATE_SHIFTS)
    jobs = [
        Job(tuple(fold), _outside(parts, k), sweep, rates, seeds)
        for rates in RATE_STUDY
        for k, fold in enumerate(parts)
    ]
    done = run_jobs(data, jobs)
    lines = [
        f"{dataset.name}: label rates at {setting.label()} (shifted by d for the curve), {seeds} shuffled "
        "order(s); background = judge and shadow calls, relative to always-strong's cost",
        f"{'':<22}{'APGR':>6}{'CPT50':>7}{'share':>7}{'PGR':>6}{'PGR-share':>10}{'background':>11}"
        f"{'weak calls':>11}{'strong calls':>13}{'score':>8}",
    ]
    scores = {}
    everyone = list(range(n))
    for r, rates in enumerate(RATE_STUDY):
        runs = done[r * len(parts) : (r + 1) * len(parts)]
        pooled = [
            Pooled.of(n, [(parts[k], runs[k][m]) for k in range(len(parts))]) for m in range(len(RATE_SHIFTS))
        ]
        curve = settings(
            [run.reached for run in pooled],  # type: ignore[misc]
            extra_weak_calls=[run.extra_weak for run in pooled],
            extra_strong_calls=[run.extra_strong for run in pooled],
        )
        summary = routing_metrics.summarise(curve(q, everyone), q)
        default = pooled[RATE_SHIFTS.index(0.0)]
        share, pgr = default.point(q)
        background = (default.extra_weak * COST[WEAK] + default.extra_strong * COST[STRONG]) / COST[STRONG]
        cpt50 = "-" if summary.cpt50 is None else f"{summary.cpt50:.1%}"
        score = pgr - share - default.extra_weak * COST[WEAK] / COST[STRONG]
        scores[rates] = (score, summary.apgr)
        lines.append(
            f"{rates.label():<22}{summary.apgr:>6.3f}{cpt50:>7}{share:>7.1%}{pgr:>6.3f}{pgr - share:>+10.3f}"
            f"{background:>11.2%}{default.extra_weak:>11.3f}{default.extra_strong:>13.3f}{score:>+8.3f}"
        )
    return lines, scores


# --- the table with intervals: every method as a curve --------------------------------------------


@attrs.frozen
class Method:
    label: str
    curve: Callable[[routing_metrics.Outcomes, Sequence[int]], list[routing_metrics.Point]]
    default: tuple[float, float] | None = None  # (strong share, PGR) at the shipped setting
    reached: Sequence[float] | None = None  # at the default, each prompt's chance of the strong model
    extra_strong: float = 0.0  # at the default, background strong calls per prompt


def ranking(scores: Sequence[float]) -> Callable[[routing_metrics.Outcomes, Sequence[int]], list]:  # type: ignore[type-arg]
    return lambda outcomes, indices: routing_metrics.ranking_curve(outcomes, [scores[i] for i in indices])


def settings(
    probabilities: Sequence[Sequence[float]],
    *,
    weak_first: bool = False,
    extra_weak_calls: Sequence[float] = (),
    extra_strong_calls: Sequence[float] = (),
) -> Callable[[routing_metrics.Outcomes, Sequence[int]], list]:  # type: ignore[type-arg]
    return lambda outcomes, indices: routing_metrics.settings_curve(
        outcomes,
        [[setting[i] for i in indices] for setting in probabilities],
        weak_first=weak_first,
        extra_weak_calls=extra_weak_calls,
        extra_strong_calls=extra_strong_calls,
    )


def methods(dataset: Dataset, seeds: int, rates: Rates) -> tuple[dict[str, Method], Study]:
    """Every method of the table, and how the learned router's operating point was chosen. Only the
    oracles read outcomes to decide (they are the bounds)."""
    q = dataset.qualities()
    everyone = list(range(len(dataset.prompts)))
    default = TierThresholds().economy_max
    lengths = [float(sum(len(m.text()) for m in p.messages)) for p in dataset.prompts]
    complexity = [float(classified(p, TierThresholds()).complexity) for p in dataset.prompts]
    found: dict[str, Method] = {}
    share = sum(c > default for c in complexity) / len(complexity)
    alone = ranking(complexity)
    found["router_alone"] = Method(
        f"router alone (classifier tier), economy_max {default} | sweep",
        alone,
        (share, _pgr_at(alone(q, everyone), share)),
    )
    found["longest_first"] = Method("longest prompts to the strong model first", ranking(lengths))
    levels = sorted({-1, *(int(c) for c in complexity)})
    levels = sorted({*levels[:: max(1, len(levels) // 10)], default, levels[-1]})
    probabilities = {e: classifier_tiers(dataset, e, seeds) for e in levels}
    weak_first = dataset.outcomes.has_text()
    curve = settings(list(probabilities.values()), weak_first=weak_first)
    found["classifier_tiers"] = Method(
        f"classifier tiers + learning{' + cascade' if weak_first else ''}, e_max {default} | sweep",
        curve,
        routing_metrics.operating_point(q, probabilities[default]),
    )
    study = learned_study(dataset, seeds, rates)
    found.update(study.methods)
    domains = set(dataset.domains)
    if len(domains) > 1:
        gain: dict[str, list[float]] = {}
        for domain, weak, strong in zip(dataset.domains, q.weak, q.strong, strict=True):
            gain.setdefault(domain, []).append(strong - weak)
        by_domain = {d: sum(g) / len(g) for d, g in gain.items()}
        found["topic_oracle"] = Method(
            "topic oracle (whole domains, by their true gain)",
            ranking([by_domain[d] for d in dataset.domains]),
        )
    found["oracle"] = Method(
        "oracle (per prompt, by its true gain)",
        ranking([s - w for w, s in zip(q.weak, q.strong, strict=True)]),
    )
    return found, study


def _pgr_at(points: Sequence[routing_metrics.Point], share: float) -> float:
    for a, b in itertools.pairwise(points):
        if a.share <= share <= b.share:
            return (
                a.pgr
                if b.share == a.share
                else a.pgr + (share - a.share) / (b.share - a.share) * (b.pgr - a.pgr)
            )
    return points[-1].pgr


def interval_report(
    dataset: Dataset, seeds: int, resamples: int, rates: Rates
) -> tuple[list[str], dict, dict]:  # type: ignore[type-arg]
    """The table with bootstrap intervals, its JSON, and the curves for the plot."""
    q = dataset.qualities()
    everyone = list(range(len(dataset.prompts)))
    lengths = [float(sum(len(m.text()) for m in p.messages)) for p in dataset.prompts]
    lines = [
        f"{dataset.name}: {len(everyone):,} prompts, {len(set(dataset.domains))} domains; "
        f"95% intervals from {resamples} bootstrap resamples of the prompts",
        f"{'':<58}{'APGR':>6}{'[95% CI]':>15}{'CPT50':>8}{'[95% CI]':>15}{'CPT80':>7}{'cost@95%':>9}"
        f"{'default':>9}{'PGR':>6}{'vs longest-first [95% CI]':>27}",
        f"{'random (expected)':<58}{0.5:>6.3f}{'':>15}{0.5:>8.1%}{'':>15}{0.8:>7.1%}",
    ]
    figures, curves = {"random": {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8}}, {}
    found, study = methods(dataset, seeds, rates)
    started = time.perf_counter()
    ci = bootstrap_all(q, found, resamples)
    print(
        f"  {dataset.name}: {resamples} bootstrap resamples in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    longest = routing_metrics.ranking_curve(q, lengths)
    for name, method in found.items():
        points = method.curve(q, everyone)
        curves[name] = points
        summary = routing_metrics.summarise(points, q)
        figures[name] = {
            "apgr": summary.apgr,
            "apgr_ci": [ci[name, "apgr"].low, ci[name, "apgr"].high],
            "cpt50": summary.cpt50,
            "cpt50_ci": [ci[name, "cpt50"].low, ci[name, "cpt50"].high],
            "cpt80": summary.cpt80,
            "cost95": summary.cost95,
            "default_share": None if method.default is None else method.default[0],
            "default_pgr": None if method.default is None else method.default[1],
        }
        versus = ""
        if method.default is not None:
            share, pgr = method.default
            lead = pgr - _pgr_at(longest, share)
            figures[name]["default_pgr_over_longest_first"] = lead
            versus = f"{lead:>+9.3f}"
            if (name, "lead") in ci:
                low, high = ci[name, "lead"].low, ci[name, "lead"].high
                figures[name]["default_pgr_over_longest_first_ci"] = [low, high]
                versus += f" [{low:+.3f}, {high:+.3f}]"
        if name == "shipped":
            versus_longest = summary.apgr - routing_metrics.summarise(curves["longest_first"], q).apgr
            paired = ci[name, "apgr_over_longest_first"]
            figures[name].update(
                {
                    "apgr_over_longest_first": versus_longest,
                    "apgr_over_longest_first_ci": [paired.low, paired.high],
                    "target": [s.target for s in study.chosen],
                    "gap": [s.gap for s in study.chosen],
                    "chosen_on_all_folds": {"target": study.on_all.target, "gap": study.on_all.gap},
                    "rates": {"judge": rates.judge, "shadow": rates.shadow, "shadow_up": rates.shadow_up},
                }
            )

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.1%}"

        apgr_ci = f"[{ci[name, 'apgr'].low:.3f}, {ci[name, 'apgr'].high:.3f}]"
        cpt_ci = f"[{pct(ci[name, 'cpt50'].low)}, {pct(ci[name, 'cpt50'].high)}]"
        at_default = "" if method.default is None else f"{method.default[0]:>9.1%}{method.default[1]:>6.2f}"
        lines.append(
            f"{method.label:<58}{summary.apgr:>6.3f}{apgr_ci:>15}{pct(summary.cpt50):>8}{cpt_ci:>15}"
            f"{pct(summary.cpt80):>7}{pct(summary.cost95):>9}{at_default}{versus}"
        )
    shipped = figures["shipped"]
    lines.append(
        f"shipped's APGR minus longest-first's: {shipped['apgr_over_longest_first']:+.3f} "
        f"[{shipped['apgr_over_longest_first_ci'][0]:+.3f}, {shipped['apgr_over_longest_first_ci'][1]:+.3f}] "
        "(paired: the same resamples)"
    )
    return [*lines, *study.lines], figures, curves


_RESAMPLED: list[tuple[routing_metrics.Outcomes, dict[str, Method]]] = []  # for the workers (fork)


def _resample(indices: list[int]) -> dict[tuple[str, str], float]:
    """One resample's figures: each method's summary; for a method with a replayed default point,
    its PGR there minus longest-first's at the same share; shipped's APGR minus longest-first's."""
    q, found = _RESAMPLED[0]
    sample = q.subset(indices)
    figures: dict[tuple[str, str], float] = {}
    longest: list[routing_metrics.Point] = []
    for name, method in found.items():
        points = method.curve(sample, indices)
        if name == "longest_first":
            longest = points
        summary = routing_metrics.summarise(points, sample)
        for figure in ("apgr", "cpt50", "cpt80", "cost95"):
            value = getattr(summary, figure)
            figures[name, figure] = 1.0 if value is None else value  # never reached counts as 1
    for name, method in found.items():
        if method.reached is not None:
            share, pgr = routing_metrics.operating_point(sample, [method.reached[i] for i in indices])
            figures[name, "lead"] = pgr - _pgr_at(longest, share + method.extra_strong)
    figures["shipped", "apgr_over_longest_first"] = (
        figures["shipped", "apgr"] - figures["longest_first", "apgr"]
    )
    return figures


def bootstrap_all(
    q: routing_metrics.Outcomes, found: dict[str, Method], resamples: int, seed: int = 0
) -> dict[tuple[str, str], routing_metrics.Interval]:
    """95% intervals of every method's figures, all on the same resamples of the prompts (drawn as
    `routing_metrics.bootstrap` draws them), computed on every core."""
    rng = random.Random(seed)
    n = len(q.weak)
    samples = [[rng.randrange(n) for _ in range(n)] for _ in range(resamples)]
    _RESAMPLED[:] = [(q, found)]
    workers = os.cpu_count() or 1
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        results = [_resample(indices) for indices in samples]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_resample, samples, chunksize=max(1, resamples // (4 * workers)))
    return {key: routing_metrics.percentiles([r[key] for r in results]) for key in results[0]}


def targets(figures: dict) -> list[str]:  # type: ignore[type-arg]
    """The learned router's targets, checked on the figures: met or missed."""

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def pct(value: float | None) -> str:
        return "never" if value is None else f"{value:.1%}"

    lines = ["Targets (shipped, as replayed above):"]
    for key in ("mmlu", "mixed"):
        if key not in figures or "topic_oracle" not in figures[key]:
            continue
        shipped, oracle = figures[key]["shipped"], figures[key]["topic_oracle"]
        need = 0.5 + 0.65 * (oracle["apgr"] - 0.5)
        cpt_need = None if oracle["cpt50"] is None else oracle["cpt50"] + 0.08
        cpt_ok = shipped["cpt50"] is not None and cpt_need is not None and shipped["cpt50"] <= cpt_need
        lead, (low, high) = (
            shipped["default_pgr_over_longest_first"],
            shipped["default_pgr_over_longest_first_ci"],
        )
        lines += [
            f"  {key}: APGR {shipped['apgr']:.3f} >= {need:.3f} (0.5 + 0.65 x (topic oracle {oracle['apgr']:.3f} - 0.5)): "
            f"{mark(shipped['apgr'] >= need)}",
            f"  {key}: CPT(50%) {pct(shipped['cpt50'])} <= {pct(cpt_need)} (topic oracle + 8 points): {mark(cpt_ok)}",
            f"  {key}: at the default ({shipped['default_share']:.1%} strong) PGR over longest-first's at that share "
            f"{lead:+.3f} [{low:+.3f}, {high:+.3f}]: {mark(lead > 0)}"
            + ("" if low > 0 else " (inside the noise)"),
        ]
    if "mmlu_wo_top" in figures:
        shipped = figures["mmlu_wo_top"]["shipped"]
        low, high = shipped["apgr_over_longest_first_ci"]
        lines.append(
            f"  mmlu_wo_top: APGR {shipped['apgr']:.3f}, over longest-first's {shipped['apgr_over_longest_first']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}]: {mark(shipped['apgr_over_longest_first'] > 0)}"
            + ("" if low > 0 else " (inside the noise)")
        )
    if "mt_bench" in figures:
        shipped = figures["mt_bench"]["shipped"]
        low, high = shipped["apgr_over_longest_first_ci"]
        lines.append(
            f"  mt_bench: APGR {shipped['apgr']:.3f}, over longest-first's {shipped['apgr_over_longest_first']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}], outside the interval: {mark(low > 0)}"
        )
        low = shipped["apgr_ci"][0]
        lines.append(
            f"  mt_bench: APGR over random's 0.5, outside the interval (low end {low:.3f}): {mark(low > 0.5)}"
        )
    if "gsm8k" in figures:
        shipped = figures["gsm8k"]["shipped"]
        lines.append(
            f"  gsm8k: CPT(50%) with the cascade {pct(shipped['cpt50'])} <= 22%: "
            f"{mark(shipped['cpt50'] is not None and shipped['cpt50'] <= 0.22)}"
        )
        if "shipped_no_cascade" in figures["gsm8k"]:
            alone, longest = figures["gsm8k"]["shipped_no_cascade"], figures["gsm8k"]["longest_first"]
            ok = (
                alone["cpt50"] is not None
                and longest["cpt50"] is not None
                and alone["cpt50"] < longest["cpt50"]
            )
            lines.append(
                f"  gsm8k: CPT(50%) without the cascade {pct(alone['cpt50'])} < longest-first's "
                f"{pct(longest['cpt50'])}: {mark(ok)}"
            )
    return lines


METHOD_ORDER = (
    "router_alone",
    "longest_first",
    "classifier_tiers",
    "shipped",
    "topic_oracle",
    "oracle",
    "shipped_exact_labels",
    "shipped_cold",
    "shipped_no_cascade",
)


def plot(
    curves_by_set: dict[str, dict[str, list[routing_metrics.Point]]],
    shipped_default: dict[str, tuple[float, float]],
) -> Path:
    """One panel per set: every method's curve (the learned router's variants dashed), and the
    shipped default's operating point marked."""
    ensure_installed("matplotlib", "the plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(curves_by_set))
    rows = -(-len(curves_by_set) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows + 0.8), squeeze=False)
    for axis in axes.flat[len(curves_by_set) :]:
        axis.set_visible(False)
    for axis, (name, curves) in zip(axes.flat, curves_by_set.items(), strict=False):
        axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="random")
        for method, points in curves.items():
            colour = f"C{METHOD_ORDER.index(method)}"  # one colour per method in every panel
            style = "--" if method.startswith("shipped_") else "-"
            axis.plot(
                [p.share for p in points],
                [p.pgr for p in points],
                style,
                label=method,
                color=colour,
                linewidth=1.2,
            )
        if name in shipped_default:
            share, pgr = shipped_default[name]
            colour = f"C{METHOD_ORDER.index('shipped')}"
            axis.plot([share], [pgr], "o", color=colour, markersize=6, label="shipped default")
        axis.set_ylim(-0.05, 1.35)
        axis.set_title(name, fontsize="medium")
        axis.set_xlabel("strong share")
        axis.set_ylabel("PGR")
        axis.grid(alpha=0.3)
    handles: dict[str, object] = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=6, fontsize="small")
    figure.text(0.01, 0.995, describe(), fontsize="x-small", color="gray", va="top")
    figure.tight_layout(rect=(0, 0.7 / (4.0 * rows + 0.8), 1, 1 - 0.2 / (4.0 * rows + 0.8)))
    path = RESULTS / "routing_replay.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


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
    parser.add_argument("--seeds", type=int, default=3, help="shuffled orders averaged in the learning modes")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples for the 95%% intervals")
    parser.add_argument("--json", type=Path, help="write every figure of the interval tables here")
    parser.add_argument(
        "--rates",
        action="store_true",
        help="also compare label rates (judge, shadow, shadow up) on mixed and MMLU",
    )
    parser.add_argument("--skip-modes", action="store_true", help="only the table with intervals")
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
    datasets = load(args.data)
    for dataset in datasets:
        if dataset.key in dict(FILES).values() and not args.skip_modes:
            lines += ["", *report(dataset, args.seeds, print)]
    lines += [
        "",
        "Every method as a curve, with intervals. Replayed prequentially over shuffled orders (mean of "
        f"{args.seeds}): classifier tiers (per-category learning from each answer's outcome; its cascade",
        "counts a weak call for every prompt that reached the strong model) and the learned router (shipped: "
        "priors from other folds, labels from a judge wrong 15% of the time,",
        "judge, shadow and escalated calls in the cost; its curve shifts both knobs from each fold's chosen "
        "T and G: T + d, G - d). default: the setting relaybox ships (learned: T and G chosen",
        "on the other folds); vs longest-first: the default's PGR minus longest-first's at the same strong "
        "share.",
    ]
    figures, curves, marked = {}, {}, {}
    for dataset in datasets:
        table, figures[dataset.key], curves[dataset.name] = interval_report(
            dataset, args.seeds, args.bootstrap, RATES
        )
        shipped = figures[dataset.key]["shipped"]
        marked[dataset.name] = (shipped["default_share"], shipped["default_pgr"])
        lines += ["", *table]
        print("\n".join(table), flush=True)
    lines += ["", *targets(figures)]
    if "mixed" in figures:
        on_all = figures["mixed"]["shipped"]["chosen_on_all_folds"]
        same = (on_all["target"], on_all["gap"]) == (DEFAULT.target, DEFAULT.gap)
        lines += [
            "",
            f"Recommended defaults: {DEFAULT.label()} (the mixed stream's choice on all its folds: "
            f"{Setting(on_all['target'], on_all['gap']).label()}{'' if same else ', NOT the same'}); {RATES.label()}.",
        ]
    if args.rates:
        lines += ["", "Label rates (the learned router, everything else as above):"]
        scores: dict[Rates, list[tuple[float, float]]] = {}
        for dataset in datasets:
            if dataset.key in ("mixed", "mmlu"):
                study, score = rates_study(dataset, DEFAULT, 2)
                for rates, figures_of_rates in score.items():
                    scores.setdefault(rates, []).append(figures_of_rates)
                lines += ["", *study]
                print("\n".join(study), flush=True)
        if scores:

            def mean(rates: Rates) -> tuple[float, float]:
                return tuple(round(sum(f[i] for f in scores[rates]) / len(scores[rates]), 3) for i in (0, 1))  # type: ignore[return-value]

            best = max(scores, key=mean)
            lines += [
                "",
                f"Most score, averaged over the sets above (to 3 decimals; ties: the higher APGR): {best.label()} "
                f"(score {mean(best)[0]:+.3f}, APGR {mean(best)[1]:.3f}); shipped: {RATES.label()}"
                + (
                    ""
                    if (best.judge, best.shadow, best.shadow_up)
                    == (RATES.judge, RATES.shadow, RATES.shadow_up)
                    else ", NOT the same"
                ),
            ]
    lines += ["", f"replayed in {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores"]
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('routing_replay', table)}")
    print(f"drawn to {plot(curves, marked)}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
