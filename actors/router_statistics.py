"""What the router counts, and the frozen snapshot it gives of itself (`RouterActor.statistics`)."""

from __future__ import annotations

from collections import Counter

import attrs
from relaybox.actors.learned_routing import LearnedRoutingStatistics
from relaybox.actors.mailbox import MailboxStatistics
from relaybox.actors.messages import AttemptEnded, AttemptResult
from relaybox.protocol.routing.evidence import EvidenceRow

# Histogram bucket bounds for relaybox's own overhead, in milliseconds.
OVERHEAD_BUCKETS_MS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0)


@attrs.frozen
class OutcomeStatistics:
    """One model's attempts, as the router heard of them."""

    successes: int
    failures: dict[str, int]  # by failure kind
    cancelled: int
    served_as_fallback: int


@attrs.define
class _Counts:
    successes: int = 0
    failures: Counter[str] = attrs.field(factory=Counter)
    cancelled: int = 0
    served_as_fallback: int = 0


class Outcomes:
    """How each model's attempts ended, as the router heard of them (working state: a restarted
    router starts counting again)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], _Counts] = {}

    def count(self, ended: AttemptEnded, key: tuple[str, str]) -> None:
        """One attempt, under `key` (see `Catalog.statistics_key`)."""
        job = ended.job
        counts = self._counts.setdefault(key, _Counts())
        if ended.result is AttemptResult.SUCCESS:
            counts.successes += 1
            counts.served_as_fallback += bool(job.state.failures)
        elif ended.result is AttemptResult.CANCELLED:
            counts.cancelled += 1
        elif ended.failure is not None:
            counts.failures[ended.failure.kind.value] += 1

    def statistics(self) -> dict[str, OutcomeStatistics]:
        return {
            f"{provider}/{model}": OutcomeStatistics(
                c.successes, dict(c.failures), c.cancelled, c.served_as_fallback
            )
            for (provider, model), c in sorted(self._counts.items())
        }


@attrs.frozen
class OverheadStatistics:
    bounds_ms: tuple[float, ...]  # each bucket's upper bound; one more bucket holds the rest
    counts: tuple[int, ...]
    sum_ms: float


@attrs.define
class OverheadHistogram:
    """The time relaybox itself added to each answered request (excluding upstream time)."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(OVERHEAD_BUCKETS_MS) + 1))
    sum_ms: float = 0.0

    def observe(self, milliseconds: float) -> None:
        self.sum_ms += milliseconds
        for i, bound in enumerate(OVERHEAD_BUCKETS_MS):
            if milliseconds <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def statistics(self) -> OverheadStatistics:
        return OverheadStatistics(OVERHEAD_BUCKETS_MS, tuple(self.counts), self.sum_ms)


@attrs.frozen
class RouterStatistics:
    mailbox: MailboxStatistics
    outcomes: dict[str, OutcomeStatistics]  # by "provider/model" (a provider's name has no "/")
    mode: str
    evidence_loaded_at: float | None
    evidence: tuple[EvidenceRow, ...]
    disabled: tuple[str, ...]  # providers switched off through the settings API
    overhead: OverheadStatistics
    learned: LearnedRoutingStatistics
