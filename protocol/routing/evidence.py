"""What the router knows about how well each model does each kind of task.

Per (category, provider, model): a Beta posterior over the chance an answer is good, fed by
seed 001's three success signals (the call succeeded, the heuristic score of the answer, a
user's rating), decaying so last week counts and last month does not; and a live streak of
consecutive failures that excludes a model for the category for a while, with one probe let
through when the while is over and a longer while each time the probe fails.

Owned by the router actor alone (no locks); pure apart from the clock value passed in.
The shared part (the posterior) is rebuilt from storage's daily rollup at start and every
refresh, so several instances learn from each other; the streaks are this instance's own.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable

import attrs
from relaybox.protocol.routing.catalog import Candidate

DAY = 86_400.0
# An answer scored below this counts as a failure toward the consecutive-failure streak.
POOR_ANSWER_SCORE = 50
RECENT_LIMIT = 200_000

# Failure kinds that say nothing about a model's answers (the breaker and the budget deal with them).
NOT_ABOUT_QUALITY = frozenset(
    {
        "cancelled",
        "rate_limited",
        "saturated",
        "unavailable",
        "over_budget",
        "unsupported",
        "rejected",
        "auth",
        "deduplicated",  # another request's answer, already counted there
        # relaybox's own calls for the learned router (a shadow answer, a judge's verdict): what
        # they teach reaches it as labels, not through these counts
        "shadow",
        "shadow_failed",
        # the tool loop's MCP tool calls: a tool's outcome, not a model's
        "tool",
        "tool_failed",
        # connection tests (`relaybox doctor`, the dashboard's "Test connection")
        "test",
        "test_failed",
        "judge",
        "judge_failed",
    }
)


@attrs.frozen
class EvidencePolicy:
    success_threshold: float = 0.8
    # Below this much (decayed) evidence the threshold does not apply: 8 of 10 is not 80%.
    min_volume: float = 20.0
    # The threshold excludes a model only when the posterior is confident it is below:
    # its upper bound (mean + z standard deviations) under the threshold.
    confidence_z: float = 1.64
    consecutive_failure_limit: int = 3
    exclusion_seconds: float = 60.0  # the first exclusion; doubled on each repeat
    max_exclusion_seconds: float = 3600.0
    probe_wait_seconds: float = 120.0  # a probe with no outcome by then lets another one go
    half_life_days: float = 3.5  # a day-old observation weighs 0.82, a week-old one 0.25
    window_days: float = 7.0  # older evidence is not loaded at all


@attrs.define
class _Posterior:
    good: float = 0.0
    bad: float = 0.0
    as_of: float = 0.0  # the time `good` and `bad` were last decayed to

    def decay_to(self, now: float, half_life: float) -> None:
        if now > self.as_of:
            factor = 0.5 ** ((now - self.as_of) / half_life)
            self.good *= factor
            self.bad *= factor
            self.as_of = now


@attrs.define
class _Streak:
    failures: int = 0
    exclusions: int = 0
    # Set while excluded, and after: until an outcome arrives, which is the probe's.
    excluded_until: float | None = None
    probe_sent: float | None = None  # when the one probe after the exclusion went out


@attrs.frozen
class Standing:
    """One model's standing for one category, as the selection sees it."""

    eligible: bool
    mean: float  # posterior mean with a uniform prior
    volume: float  # decayed number of observations
    reason: str = ""
    # Excluded by the threshold alone (not by a failure streak): selection may still explore it.
    below_threshold: bool = False
    exploring: bool = False

    def describe(self) -> str:
        if self.volume < 1:
            return "no history"
        text = f"{self.mean:.0%} good of {self.volume:.0f}"
        return f"exploring ({text}, below the threshold)" if self.exploring else text


@attrs.frozen
class Observation:
    """One outcome to learn from: `good` is 0..1 (a failed call 0, an answer its heuristic score
    over 100, a rating mapped from 1-5 onto 0..1), `weight` how many observations it counts as."""

    category: str
    provider: str
    model: str
    good: float
    at: float
    weight: float = 1.0
    # A failure that should count toward the consecutive-failure streak (an answered-but-poor
    # outcome counts too); a success ends the streak.
    failed: bool = False


@attrs.frozen
class RollupRow:
    """A day of one (provider, model, category, status) from storage's rollup."""

    day_start: float  # Unix seconds of the day's midnight (UTC)
    provider: str
    model: str
    category: str
    status: str
    attempts: int
    heuristic_sum: float = 0.0
    heuristic_count: int = 0
    rating_sum: float = 0.0
    rating_count: int = 0

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.provider, self.model)


def rating_goodness(rating: int) -> float:
    """A 1-5 rating as a 0..1 goodness."""
    return (min(5, max(1, rating)) - 1) / 4


class Evidence:
    def __init__(self, policy: EvidencePolicy = EvidencePolicy()) -> None:
        self.policy = policy
        self._half_life = policy.half_life_days * DAY
        self._base: dict[tuple[str, str, str], _Posterior] = {}  # from storage
        self._live: dict[tuple[str, str, str], _Posterior] = {}  # observed since the last load
        self._streaks: dict[tuple[str, str, str], _Streak] = {}
        # Observations since the last load, re-added on the next; kept only once loads happen
        # (bounded: a store that stays unreadable must not make this grow without end).
        self._recent: deque[Observation] = deque(maxlen=RECENT_LIMIT)
        self._keeps_recent = False

    # --- learning -----------------------------------------------------------------

    def observe(self, observation: Observation) -> None:
        self._add_live(observation)
        if self._keeps_recent:
            self._recent.append(observation)
        key = (observation.category, observation.provider, observation.model)
        self._streak_after(key, observation.failed, observation.at)

    def _add_live(self, observation: Observation) -> None:
        key = (observation.category, observation.provider, observation.model)
        posterior = self._live.setdefault(key, _Posterior(as_of=observation.at))
        posterior.decay_to(observation.at, self._half_life)
        good = min(1.0, max(0.0, observation.good))
        posterior.good += observation.weight * good
        posterior.bad += observation.weight * (1.0 - good)

    def dispatched(self, category: str, provider: str, model: str, now: float) -> None:
        """An attempt went to this model: if its exclusion is over, that attempt is the probe."""
        streak = self._streaks.get((category, provider, model))
        if streak is not None and streak.excluded_until is not None and now >= streak.excluded_until:
            streak.probe_sent = streak.probe_sent if streak.probe_sent is not None else now

    def _streak_after(self, key: tuple[str, str, str], failed: bool, now: float) -> None:
        streak = self._streaks.setdefault(key, _Streak())
        if not failed:
            self._streaks[key] = _Streak()
            return
        streak.failures += 1
        if streak.excluded_until is not None:
            if now >= streak.excluded_until:  # the probe failed: exclude for longer
                self._exclude(streak, now)
            return  # an attempt that began before the exclusion: already counted in it
        if streak.failures >= self.policy.consecutive_failure_limit:
            self._exclude(streak, now)

    def _exclude(self, streak: _Streak, now: float) -> None:
        seconds = min(self.policy.exclusion_seconds * 2**streak.exclusions, self.policy.max_exclusion_seconds)
        streak.exclusions += 1
        streak.excluded_until = now + seconds
        streak.probe_sent = None

    def load(self, rows: Iterable[RollupRow], *, wall_clock: float, now: float, keep_since: float) -> None:
        """Replace what storage contributed with a fresh read, made at Unix time `wall_clock`
        (`now` is the clock everything else here runs on). Storage holds this instance's own
        outcomes too, up to about when it was read: what was observed from `keep_since` on
        (not yet written when the read began) is kept on top."""
        base: dict[tuple[str, str, str], _Posterior] = {}
        for row in rows:
            if row.status in NOT_ABOUT_QUALITY:
                continue
            # A day's rows count from the middle of the day.
            age = max(0.0, wall_clock - (row.day_start + DAY / 2))
            if age > self.policy.window_days * DAY:
                continue
            weight = 0.5 ** (age / self._half_life)
            key = (row.category, row.provider, row.model)
            posterior = base.setdefault(key, _Posterior(as_of=now))
            if row.status in ("success", "poor_answer"):  # answers, by their heuristic scores
                # Answers without a heuristic score (images) count as good.
                unscored = row.attempts - row.heuristic_count
                good = row.heuristic_sum / 100 + unscored
                posterior.good += weight * good
                posterior.bad += weight * (row.attempts - good)
            else:
                posterior.bad += weight * row.attempts
            if row.rating_count:
                good = (row.rating_sum - row.rating_count) / 4
                posterior.good += weight * good
                posterior.bad += weight * (row.rating_count - good)
        self._base = base
        self._keeps_recent = True
        while self._recent and self._recent[0].at < keep_since:
            self._recent.popleft()
        self._live = {}
        for observation in self._recent:
            self._add_live(observation)

    # --- judging ------------------------------------------------------------------

    def posterior(self, category: str, provider: str, model: str, now: float) -> tuple[float, float]:
        """(good, bad) pseudo-counts, decayed to `now`."""
        key = (category, provider, model)
        good = bad = 0.0
        for layer in (self._base, self._live):
            posterior = layer.get(key)
            if posterior is not None:
                posterior.decay_to(now, self._half_life)
                good += posterior.good
                bad += posterior.bad
        return good, bad

    def standing(self, category: str, provider: str, model: str, now: float) -> Standing:
        good, bad = self.posterior(category, provider, model, now)
        a, b = good + 1, bad + 1
        mean = a / (a + b)
        volume = good + bad
        streak = self._streaks.get((category, provider, model))
        if streak is not None and streak.excluded_until is not None:
            if now < streak.excluded_until:
                return Standing(
                    False,
                    mean,
                    volume,
                    f"{streak.failures} consecutive failures for {category}; "
                    f"excluded for {streak.excluded_until - now:.0f}s more",
                )
            # The exclusion is over: one probe may go; its outcome decides what follows. A probe
            # that never reports (cancelled) lets another go after a while.
            if streak.probe_sent is not None and now - streak.probe_sent < self.policy.probe_wait_seconds:
                return Standing(False, mean, volume, f"a probe after {streak.failures} failures is out")
        if volume >= self.policy.min_volume:
            upper = mean + self.policy.confidence_z * math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
            if upper < self.policy.success_threshold:
                return Standing(
                    False,
                    mean,
                    volume,
                    f"{mean:.0%} good of {volume:.0f} for {category}, "
                    f"below the {self.policy.success_threshold:.0%} threshold",
                    below_threshold=True,
                )
        return Standing(True, mean, volume)

    def sample(self, category: str, provider: str, model: str, now: float, rng: random.Random) -> float:
        """A draw from the posterior (Thompson sampling among near-equal choices)."""
        good, bad = self.posterior(category, provider, model, now)
        return rng.betavariate(good + 1, bad + 1)

    def snapshot(self, now: float) -> tuple[EvidenceRow, ...]:
        """Everything known, for /actors and the dashboard."""
        keys = sorted(set(self._base) | set(self._live) | set(self._streaks))
        rows = []
        for category, provider, model in keys:
            standing = self.standing(category, provider, model, now)
            streak = self._streaks.get((category, provider, model), _Streak())
            rows.append(
                EvidenceRow(
                    category=category,
                    provider=provider,
                    model=model,
                    mean=round(standing.mean, 4),
                    volume=round(standing.volume, 2),
                    eligible=standing.eligible,
                    consecutive_failures=streak.failures,
                    reason=standing.reason,
                )
            )
        return tuple(rows)


@attrs.frozen
class EvidenceRow:
    """What is known of one model for one category, as /actors shows it."""

    category: str
    provider: str
    model: str
    mean: float
    volume: float
    eligible: bool
    consecutive_failures: int
    reason: str


def attempt_observation(
    category: str, provider: str, model: str, now: float, *, outcome: str, score: int | None
) -> Observation | None:
    """What one attempt says about a model, if anything. `outcome`: "success", "cancelled" or the
    failure kind. An answer counts by its heuristic score (a poor one also breaks the streak of
    good ones); a failure that says something about the model counts as a bad outcome; the rest
    (rate limits, cancellations, a full queue, the client's own bad request) says nothing."""
    if outcome in ("success", "poor_answer"):
        score = 100 if score is None else score
        return Observation(category, provider, model, score / 100, now, failed=score < POOR_ANSWER_SCORE)
    if outcome in NOT_ABOUT_QUALITY:
        return None
    return Observation(category, provider, model, 0.0, now, failed=True)
