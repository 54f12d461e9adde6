"""Smart routing by learned per-prompt quality: the cheapest model predicted to answer this prompt
well enough.

The route is the one smart routing builds from the cheapest tier up (every eligible model,
cheapest first, then the excluded ones as last resorts); the learned step picks where to start on
it. Walking it cheapest first, a model serves when `good_enough` says it will do: its predicted
chance of a good answer clears `quality_target`, or falls short of the strongest candidate's by no
more than `quality_gap`. Otherwise the strongest candidate serves. Cheaper models passed over stay
on the route behind the rest, as last resorts. The classifier's tier is not used, except for
agentic requests (tool loops), where it stays a floor: the public outcomes behind the prior hold
no tool loops. Budget pressure moves the choice one tier down, as it does for the tiers.

Pure: the router hands over the models and the prompt; it learns from the outcomes afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from relaybox.protocol.routing.catalog import TIERS, Candidate, Catalog, Route
from relaybox.protocol.routing.classifier import Classification
from relaybox.protocol.routing.learned import Features, QualityModels, good_enough
from relaybox.protocol.routing.promise import Promise, prompt_score


@attrs.frozen
class LearnedPolicy:
    """`[routing]` settings of the learned router and of the labels it makes for itself."""

    enabled: bool = True
    quality_target: float = 0.75
    quality_gap: float = 0.15
    # Shares of learned-routed answers the judge labels: a cheaper model's answer graded alone
    # (one cheap call), the strongest's compared with the cheapest's shadow answer (two cheap
    # calls), a cheaper model's compared with the strongest's (one strong call: keep it low).
    judge_rate: float = 0.3
    shadow_rate: float = 0.3
    shadow_up_rate: float = 0.0
    judge_model: str | None = None  # "provider:model"; None: the cheapest candidate of the route
    # The quality promise (`promise.py`): keep at least this share of what the route's strongest
    # model adds over its cheapest. The default gives up at most a fifth of the strongest model's
    # advantage: a default should not cost quality a user would notice. None ("off"): decide by the
    # per-prompt quality models above (they learn from their own labels, and can drift cheap).
    quality_kept: float | None = 0.8
    # With a promise: the share of answers also answered by the other end and judged blind.
    probe_rate: float = 0.1
    # Past this share of a budget spent, no shadow answer or judging is started at all.
    stop_at_pressure: float = 0.5


class PromptFeatures:
    """A prompt's features and its score for the quality promise, each computed on first use only
    (most requests name a model and never need them), and kept for what its outcomes teach."""

    def __init__(self, compute: Callable[[], Features], user_text: Callable[[], str] = str) -> None:
        self._compute = compute
        self._user_text = user_text
        self.value: Features | None = None
        self.score: float | None = None

    def get(self) -> Features:
        if self.value is None:
            self.value = self._compute()
        return self.value

    def scored(self) -> float:
        if self.score is None:
            self.score = prompt_score(self._user_text())
        return self.score


def learned_route(
    catalog: Catalog,
    route: Route,
    classification: Classification,
    x: Features,
    models: QualityModels,
    policy: LearnedPolicy,
    *,
    label: str,
    pressure: float = 0.0,
    budget_pressure: float = 0.8,
) -> Route:
    """Where to start on `route` (smart routing's, cheapest tier first) for a prompt."""
    rank = _ranking(catalog)
    candidates, strongest = _eligible(route, classification, rank)
    if strongest is None:
        return route

    def p_good(candidate: Candidate) -> float:
        return models.p_good(catalog.statistics_key(candidate), catalog.tier_of(candidate), x)

    p_strongest = p_good(strongest)
    chosen, p_chosen = strongest, p_strongest
    passed_over: list[str] = []
    for candidate in candidates:
        if candidate == strongest:
            break
        p = p_good(candidate)
        if good_enough(p, p_strongest, target=policy.quality_target, gap=policy.quality_gap):
            chosen, p_chosen = candidate, p
            break
        if len(passed_over) < 2:
            passed_over.append(f"{candidate.model} {p:.2f}")
    why = f"p(good)={p_chosen:.2f}"
    if chosen != strongest:
        why += f" >= target {policy.quality_target:g}" if p_chosen >= policy.quality_target else ""
        why += f", strongest {p_strongest:.2f}"
    elif passed_over:
        why += f"; no cheaper model predicted good enough ({', '.join(passed_over)})"
    labels = models.labels.get(catalog.statistics_key(chosen), 0)
    notes = [f"{label}: learned: {chosen.provider}/{chosen.model} {why} ({_labels(labels)})"]
    if pressure >= budget_pressure and rank(chosen) > 0:
        lower = next((c for c in candidates if rank(c) == rank(chosen) - 1), None)
        if lower is not None:
            notes.append(f"budget {pressure:.0%} spent: {chosen.provider}/{chosen.model} -> {lower.model}")
            chosen = lower
    start = route.candidates.index(chosen)
    ordered = route.candidates[start:] + route.candidates[:start]
    return Route(ordered, "; ".join(notes))


def promised_route(
    catalog: Catalog,
    route: Route,
    classification: Classification,
    score: float,
    promise: Promise,
    *,
    label: str,
) -> Route:
    """Where to start on `route` (smart routing's, cheapest tier first) under the quality promise:
    its strongest candidate when the prompt's score clears the promise's threshold, else its
    cheapest (the ends the promise is about); the rest stay behind as fallbacks."""
    rank = _ranking(catalog)
    candidates, strongest = _eligible(route, classification, rank)
    if strongest is None:
        return route
    strong = promise.serves_strong(score)
    chosen = strongest if strong else candidates[0]
    why = f"score {score:.1f} {'at or above' if strong else 'below'} the threshold"
    note = f"{label}: promise to keep {promise.quality_kept:g}: {chosen.provider}/{chosen.model} ({why})"
    start = route.candidates.index(chosen)
    return Route(route.candidates[start:] + route.candidates[:start], note)


def _ranking(catalog: Catalog) -> Callable[[Candidate], int]:
    def rank(candidate: Candidate) -> int:
        tier = catalog.tier_of(candidate)
        return TIERS.index(tier) if tier in TIERS else 0

    return rank


def _eligible(
    route: Route, classification: Classification, rank: Callable[[Candidate], int]
) -> tuple[list[Candidate], Candidate | None]:
    """The route's candidates a learned choice may start from (requests that offer tools keep the
    classifier's tier as a floor), cheapest first, and the strongest of them."""
    floor = TIERS.index(classification.tier) if classification.agentic else 0
    candidates = [c for c in route.candidates if rank(c) >= floor] or list(route.candidates)
    if not candidates:
        return [], None
    top = max(rank(c) for c in candidates)
    return candidates, next(c for c in candidates if rank(c) == top)


def _labels(count: int) -> str:
    if count == 0:
        return "from the prior alone"
    return f"prior and {count} label{'s' if count != 1 else ''} of its own"
