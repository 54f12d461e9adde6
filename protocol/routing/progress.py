"""Where one request stands in its route: it travels with each attempt, so a restarted router
loses nothing, and the attempt's record is written from it."""

from __future__ import annotations

import attrs
from relaybox.protocol.errors import AttemptFailure
from relaybox.protocol.events import Event
from relaybox.protocol.keys import KeyBudget
from relaybox.protocol.routing.catalog import Route
from relaybox.protocol.routing.learned import Features


@attrs.frozen
class DispatchState:
    request_id: str
    route: Route
    next_index: int = 0
    attempts: int = 0
    failures: tuple[AttemptFailure, ...] = ()
    failed_upstream_ms: float = 0.0
    client: str | None = None  # who asked: "key:NAME" for a client key, else its user agent
    # What the classifier said, for the log and for the evidence the outcome feeds.
    category: str = "other"
    complexity: int = 0
    ab_test: str | None = None
    ab_variant: str | None = None
    # A complete answer the cascade held back for a stronger model: sent if none of them answers.
    held_answer: tuple[Event, ...] = ()
    # Prompt compression: the level (trimming to a model's window happens at "aggressive"), and the
    # tokens the stages before dispatch saved (None: compression was off); trimming for this
    # attempt's model adds to `tokens_saved`.
    compression_level: str = "safe"
    tokens_saved: int | None = None
    key_budget: KeyBudget | None = None  # the client key's own budget, if it has one
    # The prompt's features when the learned router chose the route: its outcomes become labels.
    features: Features | None = None
    # "shadow" or "judge": an attempt relaybox made for its own learning, not the client's.
    purpose: str | None = None
    # The prompt's score when the quality promise decided the route.
    promise_score: float | None = None

    @property
    def learned(self) -> bool:
        """The learned router chose the route: its answer may teach it (a judge may read it)."""
        return self.features is not None or self.promise_score is not None

    def after_failure(
        self, failure: AttemptFailure, upstream_ms: float, held_answer: tuple[Event, ...] = ()
    ) -> DispatchState:
        """Where the request stands once its last attempt failed (and took `upstream_ms`); a poor
        answer the cascade held back is kept for the end."""
        return attrs.evolve(
            self,
            failures=(*self.failures, failure),
            failed_upstream_ms=self.failed_upstream_ms + upstream_ms,
            held_answer=held_answer or self.held_answer,
        )
