"""Smart routing: the cheapest model that can do the job, and the candidates behind it.

Given a classification (category and tier), the catalog, and the evidence, it orders every model
into a route the router walks: first the eligible models of the required tier, cheapest first,
then those of the tiers above (escalation), then the models the evidence excluded (a last resort
is never dropped silently), then the tiers below. Health, capacity and capabilities are checked
when the router walks the route, so a provider that is down costs one skipped step, not a wrong
decision.

Ties (costs within `tie_margin` of each other, e.g. two $0 subscriptions) go to the default
provider, then to the higher priority, then to a Thompson draw from each model's posterior,
so the evidence keeps learning about near-equal choices instead of freezing on the first.
"""

from __future__ import annotations

import random

import attrs
from relaybox.protocol.errors import RelayError
from relaybox.protocol.routing.catalog import TIERS, Candidate, Catalog, Route
from relaybox.protocol.routing.classifier import Classification
from relaybox.protocol.routing.evidence import Evidence, Standing


@attrs.frozen
class SelectionPolicy:
    tie_margin: float = 0.10  # costs within 10% of each other are a tie
    # A model excluded by the threshold still gets this share of its requests, so its evidence
    # keeps coming in (it would otherwise never be observed again, and never be let back).
    explore_share: float = 0.05
    budget_pressure: float = 0.8  # share of the budget spent past which a cheaper tier is asked for


@attrs.frozen
class ABTest:
    """Seed 001 §44: a share of a category's traffic goes to a challenger instead of the baseline."""

    name: str
    baseline: Candidate
    challenger: Candidate
    split: float  # 0..1, the challenger's share
    categories: frozenset[str] = frozenset()  # empty: every category


def smart_route(
    catalog: Catalog,
    classification: Classification,
    evidence: Evidence,
    *,
    now: float,
    rng: random.Random,
    pressure: float = 0.0,
    priorities: dict[str, int] | None = None,
    policy: SelectionPolicy = SelectionPolicy(),
    label: str = "auto",
) -> Route:
    category = classification.category
    tier = classification.tier
    notes = [f"{label}: {classification.describe()}"]
    if pressure >= policy.budget_pressure and tier != TIERS[0]:
        cheaper = TIERS[TIERS.index(tier) - 1]
        notes.append(f"budget {pressure:.0%} spent: {tier} -> {cheaper}")
        tier = cheaper
    level = TIERS.index(tier)
    ranked = {t: _ranked(catalog, t, category, evidence, now, rng, priorities or {}, policy) for t in TIERS}

    def split(
        tiers: tuple[str, ...],
    ) -> tuple[list[tuple[Candidate, Standing]], list[tuple[Candidate, Standing]]]:
        good = [(c, s) for t in tiers for c, s in ranked[t] if s.eligible]
        excluded = [(c, s) for t in tiers for c, s in ranked[t] if not s.eligible]
        return good, excluded

    up_good, up_excluded = split(TIERS[level:])
    down_good, down_excluded = split(tuple(reversed(TIERS[:level])))
    ordered = up_good + up_excluded + down_good + down_excluded
    if not ordered:
        raise _nothing_to_route(label)
    first, standing = ordered[0]
    first_tier = catalog.tier_of(first)
    if up_good:
        why = "cheapest" if first_tier == tier else f"no eligible {tier} model; escalated, cheapest"
        notes.append(
            f"{first.provider}/{first.model}: {why} {first_tier}, {standing.describe()} for {category}"
        )
    elif up_excluded:
        notes.append(
            f"every {tier}+ model is excluded ({up_excluded[0][1].reason}); "
            f"trying {first.provider}/{first.model} anyway"
        )
    else:
        notes.append(f"no {tier} model or above; best below is {first.provider}/{first.model}")
    return Route(tuple(c for c, _ in ordered), "; ".join(notes))


def apply_ab_test(
    route: Route, tests: tuple[ABTest, ...], category: str, rng: random.Random
) -> tuple[Route, tuple[str, str] | None]:
    """Put the test's variant first when a test covers this category and its baseline leads the route.

    Returns the route and (test name, "baseline" | "challenger"), or None when no test applies.
    """
    if not route.candidates:
        return route, None
    for test in tests:
        if test.categories and category not in test.categories:
            continue
        if route.candidates[0] != test.baseline:
            continue
        if rng.random() >= test.split:
            return Route(route.candidates, f"{route.reason}; A/B {test.name}: baseline"), (
                test.name,
                "baseline",
            )
        rest = tuple(c for c in route.candidates if c != test.challenger)
        return (
            Route((test.challenger, *rest), f"{route.reason}; A/B {test.name}: challenger"),
            (test.name, "challenger"),
        )
    return route, None


# Per variant, before an A/B verdict is more than "keep collecting".
AB_MIN_ATTEMPTS = 30


def ab_verdict(baseline: dict[str, float], challenger: dict[str, float]) -> str:
    """Whether the evidence supports promoting the challenger: it must do at least as well with
    confidence (its lower bound over the baseline's mean) and cost no more per attempt.

    Each side: attempts, good (successes weighted by heuristic score), cost_usd."""
    if min(baseline["attempts"], challenger["attempts"]) < AB_MIN_ATTEMPTS:
        return f"collecting: each variant needs {AB_MIN_ATTEMPTS} attempts"

    def bounds(side: dict[str, float]) -> tuple[float, float]:
        a, b = side["good"] + 1, side["attempts"] - side["good"] + 1
        mean = a / (a + b)
        return mean, mean - 1.64 * (a * b / ((a + b) ** 2 * (a + b + 1))) ** 0.5

    baseline_mean, _ = bounds(baseline)
    _, challenger_low = bounds(challenger)
    cheaper = challenger["cost_usd"] / challenger["attempts"] <= baseline["cost_usd"] / baseline["attempts"]
    if challenger_low >= baseline_mean and cheaper:
        return "promote the challenger: at least as good with confidence, and no dearer"
    if not cheaper:
        return "keep the baseline: the challenger costs more per attempt"
    return "keep the baseline: the challenger is not yet shown to be as good"


def _ranked(
    catalog: Catalog,
    tier: str,
    category: str,
    evidence: Evidence,
    now: float,
    rng: random.Random,
    priorities: dict[str, int],
    policy: SelectionPolicy,
) -> list[tuple[Candidate, Standing]]:
    """The tier's models, cheapest first, ties broken by preference and then by a draw."""
    models = [
        (Candidate(p.provider, m.id), catalog.costs.get((p.provider, m.id), float("inf")), p.priority)
        for p in catalog.providers
        for m in p.models
        if m.tier == tier
    ]
    models.sort(key=lambda item: item[1])
    ranked: list[tuple[Candidate, Standing]] = []
    group: list[tuple[Candidate, float, int]] = []

    def flush() -> None:
        def preference(item: tuple[Candidate, float, int]) -> tuple[bool, int, float]:
            candidate, _, configured = item
            return (
                candidate.provider != catalog.default_provider,
                -priorities.get(candidate.provider, configured),
                -evidence.sample(category, candidate.provider, candidate.model, now, rng),
            )

        for candidate, _, _ in sorted(group, key=preference):
            standing = evidence.standing(category, candidate.provider, candidate.model, now)
            if standing.below_threshold and rng.random() < policy.explore_share:
                standing = attrs.evolve(standing, eligible=True, exploring=True)
            ranked.append((candidate, standing))
        group.clear()

    for item in models:
        if group and item[1] > group[0][1] * (1 + policy.tie_margin):
            flush()
        group.append(item)
    flush()
    return ranked


def _nothing_to_route(label: str) -> RelayError:
    return RelayError(
        503,
        f"{label}: no provider is configured; see `relaybox serve` start-up output",
        "service_unavailable",
        code="no_providers",
        retry_after=30,
    )
