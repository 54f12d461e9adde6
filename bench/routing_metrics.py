"""Routing curves and their uncertainty, from per-prompt outcomes: PGR against the strong model's
share of prompts, APGR, CPT(x), the cost of reaching 95 % of the strong model's quality, and
bootstrap intervals (prompts resampled with replacement).

A method is one of two kinds:
- a *ranking*: one score per prompt, higher meaning "send to the strong model first"; its curve
  sends the top share of prompts to the strong model, prompts of equal score together (between two
  points the curve is a straight line: choosing at random among the tied prompts achieves it);
- *settings*: each of several settings gives each prompt a probability of going to the strong
  model (a learning router replayed over shuffled orders, a cascade); each setting is one point.

Qualities are per prompt, on any scale (0/1 correctness, a judge's 1-10); cost is in units where a
weak call costs `WEAK_COST` and a strong call `STRONG_COST` (the RouteLLM paper's prices per million
tokens), reported relative to always-strong.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

import attrs

WEAK_COST, STRONG_COST = 0.24, 24.7


@attrs.frozen
class Outcomes:
    """Each prompt's quality from the weak and from the strong model, in one order."""

    weak: tuple[float, ...]
    strong: tuple[float, ...]

    def subset(self, indices: Sequence[int]) -> Outcomes:
        return Outcomes(tuple(self.weak[i] for i in indices), tuple(self.strong[i] for i in indices))

    @property
    def weak_quality(self) -> float:
        return sum(self.weak) / len(self.weak)

    @property
    def strong_quality(self) -> float:
        return sum(self.strong) / len(self.strong)

    def pgr(self, quality: float) -> float:
        span = self.strong_quality - self.weak_quality
        return (quality - self.weak_quality) / span if span else 0.0


@attrs.frozen
class Point:
    share: float  # of prompts sent to the strong model
    pgr: float
    cost: float  # relative to always-strong


@attrs.frozen
class Summary:
    apgr: float
    cpt50: float | None  # strong share where PGR first reaches 0.5 (None: never)
    cpt80: float | None
    cost95: float | None  # relative cost where quality first reaches 95 % of the strong model's


def _cost(share: float, extra_weak: float = 0.0, extra_strong: float = 0.0) -> float:
    """Per prompt, relative to always-strong: `share` served by the strong model, the rest by the
    weak, plus background calls (weak- and strong-priced) per prompt."""
    return ((share + extra_strong) * STRONG_COST + (1 - share + extra_weak) * WEAK_COST) / STRONG_COST


def ranking_curve(outcomes: Outcomes, scores: Sequence[float]) -> list[Point]:
    n = len(scores)
    order = sorted(range(n), key=lambda i: -scores[i])
    points = [Point(0.0, 0.0, _cost(0.0))]
    quality, sent = outcomes.weak_quality, 0
    for _, group in itertools.groupby(order, key=lambda i: scores[i]):
        members = list(group)
        sent += len(members)
        quality += sum(outcomes.strong[i] - outcomes.weak[i] for i in members) / n
        share = sent / n
        points.append(Point(share, outcomes.pgr(quality), _cost(share)))
    return points


def settings_curve(
    outcomes: Outcomes,
    probabilities: Sequence[Sequence[float]],
    *,
    weak_first: bool = False,
    extra_weak_calls: Sequence[float] = (),
    extra_strong_calls: Sequence[float] = (),
) -> list[Point]:
    """One point per setting; `weak_first`: every prompt also called the weak model (a cascade);
    `extra_weak_calls`: per setting, further weak-priced calls per prompt (shadow answers, a judge);
    `extra_strong_calls`: per setting, background strong calls per prompt (shadowing up), counted in
    the strong share as well as in the cost: they call the strong model without serving."""
    points = [Point(0.0, 0.0, _cost(0.0)), Point(1.0, 1.0, _cost(1.0))]
    for index, setting in enumerate(probabilities):
        share, pgr = operating_point(outcomes, setting)
        extra = (share if weak_first else 0.0) + (extra_weak_calls[index] if extra_weak_calls else 0.0)
        strong = extra_strong_calls[index] if extra_strong_calls else 0.0
        points.append(Point(share + strong, pgr, _cost(share, extra, strong)))
    return sorted(points, key=lambda p: (p.share, p.pgr))


def operating_point(outcomes: Outcomes, setting: Sequence[float]) -> tuple[float, float]:
    """(strong share, PGR) of one setting: each prompt's chance of reaching the strong model."""
    n = len(setting)
    quality = (
        sum(w + p * (s - w) for w, s, p in zip(outcomes.weak, outcomes.strong, setting, strict=True)) / n
    )
    return sum(setting) / n, outcomes.pgr(quality)


def summarise(points: Sequence[Point], outcomes: Outcomes) -> Summary:
    apgr = sum((b.share - a.share) * (a.pgr + b.pgr) / 2 for a, b in itertools.pairwise(points))
    target95 = outcomes.pgr(0.95 * outcomes.strong_quality)
    cpt50, cpt80, at95 = (reach(points, target) for target in (0.5, 0.8, target95))
    return Summary(
        apgr,
        None if cpt50 is None else cpt50.share,
        None if cpt80 is None else cpt80.share,
        None if at95 is None else at95.cost,
    )


def reach(points: Sequence[Point], target: float) -> Point | None:
    """Where the piecewise-linear curve first reaches `target` PGR."""
    for a, b in itertools.pairwise(points):
        if a.pgr >= target:
            return a
        if b.pgr >= target:
            f = (target - a.pgr) / (b.pgr - a.pgr)
            return Point(a.share + f * (b.share - a.share), target, a.cost + f * (b.cost - a.cost))
    return None


@attrs.frozen
class Interval:
    low: float | None
    high: float | None


def bootstrap(
    outcomes: Outcomes,
    curve: Callable[[Outcomes, Sequence[int]], list[Point]],
    *,
    resamples: int,
    seed: int = 0,
) -> dict[str, Interval]:
    """95 % intervals of each summary figure, resampling prompts with replacement; `curve(outcomes
    of the sample, the sample's indices)`. A figure never reached in a resample counts as 1."""
    rng = random.Random(seed)
    n = len(outcomes.weak)
    figures: dict[str, list[float]] = {"apgr": [], "cpt50": [], "cpt80": [], "cost95": []}
    for _ in range(resamples):
        indices = [rng.randrange(n) for _ in range(n)]
        sample = outcomes.subset(indices)
        summary = summarise(curve(sample, indices), sample)
        for name in figures:
            value = getattr(summary, name)
            figures[name].append(1.0 if value is None else value)
    return {name: percentiles(values) for name, values in figures.items()}


def percentiles(values: list[float]) -> Interval:
    """The 2.5th and 97.5th percentiles (nearest rank)."""
    if not values:
        return Interval(None, None)
    ordered = sorted(values)
    low = ordered[int(0.025 * (len(ordered) - 1))]
    high = ordered[round(0.975 * (len(ordered) - 1))]
    return Interval(low, high)


def share_reaching(points: Sequence[Point], target: float) -> float | None:
    """The strong share at which the curve first reaches `target` PGR (None: never)."""
    reached = reach(points, target)
    return None if reached is None else reached.share
