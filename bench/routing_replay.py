"""Offline replay of recorded weak/strong outcomes through the real router code, in process.

    python -m bench.routing_replay [--data DIR] [--seeds 3] [--bootstrap 200] [--json OUT]

`--data` is read for whichever of `gsm8k.jsonl.gz`, `mmlu.jsonl.gz`, `mt_bench.jsonl.gz` it holds
(`/work/shared/data/routing/README.md` describes the format); with more than one, a `mixed` stream
of all their prompts is scored too (an MT-Bench answer judged 8 or more counts as good).

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

After the modes' tables, every method as a curve with 95% bootstrap intervals (prompts resampled;
`bench/routing_metrics.py`), drawn to `bench/results/routing_replay.png` and, with `--json`, written
as `{set: {method: {apgr, apgr_ci, cpt50, cpt50_ci, cpt80, cost95, default_share, default_pgr}}}`
(sets by the file's stem, `mixed`, and `mmlu_wo_top`: MMLU without the domain carrying the most
total weak-to-strong gain; shares and costs as fractions of 1, `null` where a level is never
reached). Methods: `router_alone` (the
classifier's tier, ranked by complexity), `longest_first` (a baseline: the longest prompts go to
the strong model first), `shipped` (what relaybox does by default: the classifier's tier,
per-category learning from each attempt's outcome replayed prequentially over shuffled orders, and
the cascade where the data has the weak answer's text), `learned` and `learned_gain` (the learned
per-prompt router of `protocol/routing/learned.py`, sending a prompt up when the weak model's
predicted p(good) is under a threshold, or when the predicted gain p(strong good) - p(weak good) is
over a cutoff; replayed prequentially: for each fold of domains, or of conversations in the mix and
in sets of few domains, priors trained on the other folds, then labels as a live relaybox would get
them: the picked model's answer judged by a judge wrong 15% of the time, 30% of strong-routed
prompts shadowed by the weak model, the shadow and judge calls in the cost), `topic_oracle` (whole
domains sent by their
true weak-to-strong gain: the best any topic-aware router can do) and `oracle` (per prompt).

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


def shipped(
    dataset: Dataset, economy_max: int, seeds: int, reject_below: int = POOR_ANSWER_SCORE
) -> tuple[float, ...]:
    """relaybox's default smart routing replayed prequentially: the classifier's tier, per-category
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


# --- the learned per-prompt router ------------------------------------------------------------------

LEARNED_THRESHOLDS = (0.2, 0.35, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
LEARNED_DEFAULT = 0.7  # the strong model when p(the weak answer is good) is below this
JUDGE_WRONG = 0.15  # share of labels the judge gets wrong
SHADOW_DOWN = 0.3  # share of strong-routed prompts also answered by the weak model, and judged
GAIN_CUTOFFS = (0.3, 0.2, 0.1, 0.05, 0.0, -0.05, -0.1, -0.2, -0.3, -0.45)
GAIN_DEFAULT = 0.0  # the strong model when it is predicted to do any better
FOLDS = 5


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


def learned_router(
    dataset: Dataset, seeds: int, *, by_gain: bool = False
) -> tuple[dict[float, tuple[float, ...]], dict[float, float]]:
    """Each setting's chance per prompt of reaching the strong model, and its extra weak-priced
    calls per prompt (shadow answers and their judging). Prequential: for each test fold, priors
    trained on the other folds' recorded outcomes, then the fold's prompts in shuffled orders; the
    learner sees only what a live relaybox would: the picked model's answer as a judge that is wrong
    JUDGE_WRONG of the time labels it, and SHADOW_DOWN of the strong-routed prompts shadowed by the
    weak model. Settings: the weak model's p(good) under a threshold sends a prompt up; `by_gain`:
    the predicted gain p(strong good) - p(weak good) over a cutoff does (a model for each)."""
    x = [user_features(p) for p in dataset.prompts]
    good = {
        strong: [
            float(dataset.outcomes.feedback(p.id, strong) * 100 >= POOR_ANSWER_SCORE) for p in dataset.prompts
        ]
        for strong in (False, True)
    }
    settings = GAIN_CUTOFFS if by_gain else LEARNED_THRESHOLDS
    n = len(x)
    reached = {t: [0.0] * n for t in settings}
    shadows = dict.fromkeys(settings, 0.0)
    for test in folds(dataset):
        held_out = set(test)
        training = [i for i in range(n) if i not in held_out]
        random.Random(0).shuffle(training)
        priors = {strong: learned.GoodAnswerModel() for strong in (False, True)}
        for i in training:
            for strong, prior in priors.items():
                if by_gain or not strong:
                    prior.learn(x[i], good[strong][i])
        for setting in settings:
            for seed in range(seeds):
                models = {strong: learned.CorrectedModel(prior) for strong, prior in priors.items()}
                rng = random.Random(seed)
                order = list(test)
                rng.shuffle(order)
                for i in order:
                    weak_good = models[False].predict(x[i])
                    if by_gain:
                        strong = models[True].predict(x[i]) - weak_good > setting
                    else:
                        strong = weak_good < setting
                    shadowed = strong and rng.random() < SHADOW_DOWN
                    for model_is_strong in (False, True):
                        labelled = (by_gain and strong) if model_is_strong else (not strong or shadowed)
                        if labelled:
                            truth = good[model_is_strong][i]
                            label = truth if rng.random() >= JUDGE_WRONG else 1.0 - truth
                            models[model_is_strong].learn(x[i], label)
                    reached[setting][i] += strong / seeds
                    shadows[setting] += 2 * shadowed / seeds  # the weak answer, and the judge's call
    return {t: tuple(r) for t, r in reached.items()}, {t: calls / n for t, calls in shadows.items()}


# --- the table with intervals: every method as a curve --------------------------------------------


@attrs.frozen
class Method:
    label: str
    curve: Callable[[routing_metrics.Outcomes, Sequence[int]], list[routing_metrics.Point]]
    default: tuple[float, float] | None = None  # (strong share, PGR) at the shipped setting


def ranking(scores: Sequence[float]) -> Callable[[routing_metrics.Outcomes, Sequence[int]], list]:  # type: ignore[type-arg]
    return lambda outcomes, indices: routing_metrics.ranking_curve(outcomes, [scores[i] for i in indices])


def settings(
    probabilities: Sequence[Sequence[float]],
    *,
    weak_first: bool = False,
    extra_weak_calls: Sequence[float] = (),
) -> Callable[[routing_metrics.Outcomes, Sequence[int]], list]:  # type: ignore[type-arg]
    return lambda outcomes, indices: routing_metrics.settings_curve(
        outcomes,
        [[setting[i] for i in indices] for setting in probabilities],
        weak_first=weak_first,
        extra_weak_calls=extra_weak_calls,
    )


def methods(dataset: Dataset, seeds: int) -> dict[str, Method]:
    """Every method of the table. Only the oracles read outcomes to decide (they are the bounds)."""
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
    probabilities = {e: shipped(dataset, e, seeds) for e in levels}
    weak_first = dataset.outcomes.has_text()
    curve = settings(list(probabilities.values()), weak_first=weak_first)
    found["shipped"] = Method(
        f"shipped: router + learning{' + cascade' if weak_first else ''}, e_max {default} | sweep",
        curve,
        routing_metrics.operating_point(q, probabilities[default]),
    )
    reached, shadow_calls = learned_router(dataset, seeds)
    found["learned"] = Method(
        f"learned, by p(weak good) < {LEARNED_DEFAULT} | sweep",
        settings(list(reached.values()), extra_weak_calls=[shadow_calls[t] for t in reached]),
        routing_metrics.operating_point(q, reached[LEARNED_DEFAULT]),
    )
    reached, shadow_calls = learned_router(dataset, seeds, by_gain=True)
    found["learned_gain"] = Method(
        f"learned, by predicted gain > {GAIN_DEFAULT:g} | sweep",
        settings(list(reached.values()), extra_weak_calls=[shadow_calls[t] for t in reached]),
        routing_metrics.operating_point(q, reached[GAIN_DEFAULT]),
    )
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
    return found


def _pgr_at(points: Sequence[routing_metrics.Point], share: float) -> float:
    for a, b in itertools.pairwise(points):
        if a.share <= share <= b.share:
            return (
                a.pgr
                if b.share == a.share
                else a.pgr + (share - a.share) / (b.share - a.share) * (b.pgr - a.pgr)
            )
    return points[-1].pgr


def interval_report(dataset: Dataset, seeds: int, resamples: int) -> tuple[list[str], dict, dict]:  # type: ignore[type-arg]
    """The table with bootstrap intervals, its JSON, and the curves for the plot."""
    q = dataset.qualities()
    everyone = list(range(len(dataset.prompts)))
    lines = [
        f"{dataset.name}: {len(everyone):,} prompts, {len(set(dataset.domains))} domains; "
        f"95% intervals from {resamples} bootstrap resamples of the prompts",
        f"{'':<58}{'APGR':>6}{'[95% CI]':>15}{'CPT50':>8}{'[95% CI]':>15}{'CPT80':>7}{'cost@95%':>9}"
        f"{'default':>9}{'PGR':>6}",
        f"{'random (expected)':<58}{0.5:>6.3f}{'':>15}{0.5:>8.1%}{'':>15}{0.8:>7.1%}",
    ]
    figures, curves = {"random": {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8}}, {}
    for name, method in methods(dataset, seeds).items():
        points = method.curve(q, everyone)
        curves[name] = points
        summary = routing_metrics.summarise(points, q)
        ci = routing_metrics.bootstrap(q, method.curve, resamples=resamples)
        figures[name] = {
            "apgr": summary.apgr,
            "apgr_ci": [ci["apgr"].low, ci["apgr"].high],
            "cpt50": summary.cpt50,
            "cpt50_ci": [ci["cpt50"].low, ci["cpt50"].high],
            "cpt80": summary.cpt80,
            "cost95": summary.cost95,
            "default_share": None if method.default is None else method.default[0],
            "default_pgr": None if method.default is None else method.default[1],
        }

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.1%}"

        apgr_ci = f"[{ci['apgr'].low:.3f}, {ci['apgr'].high:.3f}]"
        cpt_ci = f"[{pct(ci['cpt50'].low)}, {pct(ci['cpt50'].high)}]"
        at_default = "" if method.default is None else f"{method.default[0]:>9.1%}{method.default[1]:>6.2f}"
        lines.append(
            f"{method.label:<58}{summary.apgr:>6.3f}{apgr_ci:>15}{pct(summary.cpt50):>8}{cpt_ci:>15}"
            f"{pct(summary.cpt80):>7}{pct(summary.cost95):>9}{at_default}"
        )
    return lines, figures, curves


METHOD_ORDER = (
    "router_alone",
    "longest_first",
    "shipped",
    "topic_oracle",
    "oracle",
    "learned",
    "learned_gain",
)


def plot(curves_by_set: dict[str, dict[str, list[routing_metrics.Point]]]) -> Path:
    ensure_installed("matplotlib", "the plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves_by_set), figsize=(4.2 * len(curves_by_set), 4), squeeze=False)
    for axis, (name, curves) in zip(axes[0], curves_by_set.items(), strict=True):
        axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="random")
        for method, points in curves.items():
            colour = f"C{METHOD_ORDER.index(method)}"  # one colour per method in every panel
            axis.plot([p.share for p in points], [p.pgr for p in points], label=method, color=colour)
        axis.set_title(name, fontsize="medium")
        axis.set_xlabel("strong share")
        axis.set_ylabel("PGR")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="x-small")
    figure.text(0.01, 0.005, describe(), fontsize="x-small", color="gray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
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
        if dataset.key in dict(FILES).values():
            lines += ["", *report(dataset, args.seeds, print)]
    lines += [
        "",
        "Every method as a curve, with intervals (shipped: learning replayed prequentially, "
        f"mean of {args.seeds} shuffled orders; the cascade counts a weak call for every prompt):",
    ]
    figures, curves = {}, {}
    for dataset in datasets:
        table, figures[dataset.key], curves[dataset.name] = interval_report(
            dataset, args.seeds, args.bootstrap
        )
        lines += ["", *table]
        print("\n".join(table), flush=True)
    lines += ["", f"replayed in {time.perf_counter() - started:.0f} s"]
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('routing_replay', table)}")
    print(f"drawn to {plot(curves)}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
