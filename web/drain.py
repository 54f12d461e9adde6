"""A graceful stop: on SIGTERM (or SIGINT) relaybox stops taking new requests (503 with
`Retry-After`, and `/health` says so, so a load balancer moves on), lets the answers in flight
finish within the grace period, and ends those that would not with an error that says relaybox is
shutting down: a stream gets its error frame instead of being cut mid-answer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import trio
from relaybox.protocol.errors import RelayError

# The answers still going are ended this long before the grace period runs out, so their last
# frame leaves before the server closes the connection.
FINAL_WORD = 1.0


def shutting_down() -> RelayError:
    return RelayError(
        503, "relaybox is shutting down; retry", "service_unavailable", code="shutting_down", retry_after=5
    )


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self.deadline = math.inf  # when the answers still going are ended
        self._waiting: set[trio.CancelScope] = set()

    def stopping(self) -> bool:
        """The grace period is over: what is still waiting ends now."""
        return trio.current_time() >= self.deadline

    def begin(self, grace: float) -> None:
        self.draining = True
        self.deadline = trio.current_time() + max(0.0, grace - FINAL_WORD)
        for scope in self._waiting:
            scope.deadline = min(scope.deadline, self.deadline)

    @contextmanager
    def bounded(self, within: float = math.inf) -> Iterator[trio.CancelScope]:
        """A scope that ends at the drain's deadline (a wait for the next event of an answer), or
        `within` seconds from now if that comes first: one scope where a wait has two limits."""
        with trio.CancelScope(deadline=min(self.deadline, trio.current_time() + within)) as scope:
            self._waiting.add(scope)
            try:
                yield scope
            finally:
                self._waiting.discard(scope)
