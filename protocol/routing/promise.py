"""The quality promise: `auto` keeps at least `quality_kept` of what the route's strongest model adds
over its cheapest (as a judge sees quality), as cheaply as it can, and says what it kept.

Every prompt gets a score: how much the strongest model's answer is likely to add. Today that is
the prompt's length, a signal every prompt carries, on topics never seen before too (a router that
ranks by it does no worse than sending the longest prompts up; topics and nearest neighbours
learned from the comparisons ranked no better, `bench/promise_signals.py`). Prompts scoring at or
above a threshold go to the strongest model, the others to the cheapest.

The threshold comes from evidence gathered without bias: a small random share of `auto` answers,
drawn with the same known probability whatever they scored or whoever served them, is answered by
the other end of the route too and both answers are judged blind (in a random order, the judge not
told which model wrote which). From those comparisons, the share of the advantage kept by any
threshold is a ratio: the strong-minus-cheap verdicts of the comparisons above it, over those of
all of them. A judge's mistakes shrink both sums alike, so they bias the ratio little; they widen
its interval (the delta method's standard error). The threshold chosen is the highest whose lower
bound still keeps the promise: where the evidence is thin the bound is low and more goes up. Before
there is enough evidence, more than the promise's share goes up: a share chosen at random keeps
that share of the advantage on average, and one ranked by a signal that helps keeps more.

Pure: the router holds a `Promise` and feeds it; nothing here does I/O.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

# Comparisons and scores remembered (the newest): bounded memory, and a promise that follows
# the traffic as it changes.
WINDOW = 2000
# Fewer comparisons than this, or no advantage seen yet: the start rule decides.
MIN_COMPARISONS = 40
# Before the evidence, this much more than the promise goes up.
START_MARGIN = 0.2
# The one-sided bound the threshold keeps the promise at (about 95%), and the reported interval's.
DECIDE_Z = 1.645
REPORT_Z = 1.96
# The strong shares the threshold is chosen among.
SHARES = tuple(i / 50 for i in range(51))
# Scores seen before a threshold is drawn from them; until then everything goes up.
MIN_SCORES = 20
# The threshold is chosen again after this many new scores or comparisons.
REFRESH_EVERY = 20


def prompt_score(user_text: str) -> float:
    """How much the strongest model is likely to add on this prompt: longer prompts, more."""
    return math.log1p(len(user_text))


@attrs.frozen
class Comparison:
    """One blind comparison of the route's cheapest and strongest answers to one prompt."""

    score: float
    served_strong: bool  # which of the two the client got
    cheap_good: bool
    strong_good: bool
    # Which models were compared ("provider/model"), and for which request: for the record only.
    cheap: str = ""
    strong: str = ""
    request_id: str = ""

    @property
    def gain(self) -> int:
        return int(self.strong_good) - int(self.cheap_good)


@attrs.frozen
class KeptEstimate:
    """What the promise kept, as the comparisons tell: the share of the strongest model's advantage
    the answers served kept, with a 95% interval (None until there is evidence)."""

    promised: float
    estimate: float | None
    low: float | None
    high: float | None
    comparisons: int
    strong_share: float | None  # of the answers decided by the promise, the share sent up


@attrs.frozen
class GainSums:
    """What the kept share and its error need from a set of comparisons: their count and four sums
    (so a database can add them up by day, and days add up)."""

    comparisons: int
    gained: int  # the gains (strong minus cheap verdict) of all of them
    gained_kept: int  # of those where the strongest model's answer was served
    changed: int  # comparisons whose two verdicts differ
    changed_kept: int  # of those, where the strongest model's answer was served

    @classmethod
    def of(cls, gains: list[int], kept: list[bool]) -> GainSums:
        pairs = list(zip(gains, kept, strict=True))
        return cls(
            comparisons=len(pairs),
            gained=sum(gains),
            gained_kept=sum(g for g, k in pairs if k),
            changed=sum(1 for g in gains if g),
            changed_kept=sum(1 for g, k in pairs if g and k),
        )

    def __add__(self, other: GainSums) -> GainSums:
        return GainSums(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True)))


def kept_share(gains: list[int], kept: list[bool]) -> tuple[float, float] | None:
    """The ratio of the gains kept to all the gains, and its standard error (delta method); None
    when the comparisons show no advantage to keep."""
    return share_of(GainSums.of(gains, kept))


def share_of(sums: GainSums) -> tuple[float, float] | None:
    """`kept_share` from the sums alone."""
    if sums.gained <= 0:
        return None
    share = sums.gained_kept / sums.gained
    # Var(sum(a - R b)) with a = gain if kept, b = gain; gains are -1, 0 or 1.
    variance = sums.changed_kept * (1 - 2 * share) + share * share * sums.changed
    return share, math.sqrt(max(variance, 0.0)) / sums.gained


def kept_estimate(promised: float, sums: GainSums, strong_share: float | None = None) -> KeptEstimate:
    """The estimate reported for a set of comparisons (none below `MIN_COMPARISONS`)."""
    kept = share_of(sums)
    if sums.comparisons < MIN_COMPARISONS or kept is None:
        return KeptEstimate(promised, None, None, None, sums.comparisons, strong_share)
    share, error = kept
    low, high = share - REPORT_Z * error, share + REPORT_Z * error
    return KeptEstimate(promised, share, low, high, sums.comparisons, strong_share)


class Promise:
    """The router's: scores and comparisons as they come, and the threshold they set."""

    def __init__(self, quality_kept: float) -> None:
        self.quality_kept = quality_kept
        self._comparisons: deque[Comparison] = deque(maxlen=WINDOW)
        self._scores: deque[float] = deque(maxlen=WINDOW)
        self._decided: deque[bool] = deque(maxlen=WINDOW)  # sent up, for each recent decision
        self._threshold = -math.inf  # until scores are seen: everything up
        self._since_refresh = REFRESH_EVERY

    def serves_strong(self, score: float) -> bool:
        """Whether this prompt goes to the strongest model."""
        self._scores.append(score)
        self._since_refresh += 1
        if self._since_refresh >= REFRESH_EVERY:
            self._refresh()
        strong = score >= self._threshold
        self._decided.append(strong)
        return strong

    def add(self, comparison: Comparison, *, stored: bool = False) -> None:
        """A comparison just made, or (`stored`) one read back from storage: a restarted instance's
        evidence, or another instance's. A stored one's prompt was drawn at random from the traffic,
        so its score joins the scores too: a restart does not send everything up while they refill."""
        self._comparisons.append(comparison)
        if stored:
            self._scores.append(comparison.score)
        self._since_refresh += 1

    @property
    def threshold(self) -> float:
        """The score at or above which prompts go to the strongest model now."""
        return self._threshold

    def strong_share(self) -> float:
        """The share the threshold sends up now (what the evidence, or its absence, calls for)."""
        comparisons = list(self._comparisons)
        if len(comparisons) < MIN_COMPARISONS or sum(c.gain for c in comparisons) <= 0:
            return min(1.0, self.quality_kept + START_MARGIN)
        gains = [c.gain for c in comparisons]
        ordered = sorted(self._scores)
        for share in SHARES:
            threshold = self._threshold_for(share, ordered)
            kept = kept_share(gains, [c.score >= threshold for c in comparisons])
            if kept is not None and kept[0] - DECIDE_Z * kept[1] >= self.quality_kept:
                return share
        return 1.0

    def estimate(self) -> KeptEstimate:
        comparisons = list(self._comparisons)
        decided = sum(self._decided) / len(self._decided) if self._decided else None
        sums = GainSums.of([c.gain for c in comparisons], [c.served_strong for c in comparisons])
        return kept_estimate(self.quality_kept, sums, decided)

    def _refresh(self) -> None:
        self._since_refresh = 0
        if len(self._scores) < MIN_SCORES:
            self._threshold = -math.inf
        else:
            self._threshold = self._threshold_for(self.strong_share(), sorted(self._scores))

    def _threshold_for(self, share: float, ordered: list[float]) -> float:
        """The score at or above which `share` of the recent prompts (`ordered`, sorted) lie."""
        if share >= 1.0:
            return -math.inf
        if share <= 0.0 or not ordered:
            return math.inf
        return ordered[min(len(ordered) - 1, math.ceil(len(ordered) * (1 - share)))]
