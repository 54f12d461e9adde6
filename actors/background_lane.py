"""The background lane of a provider: relaybox's own attempts (a judge's verdict, a shadow answer
for the learned router) use its spare capacity only.

Such an attempt is taken only when it can start at once with no client's job waiting, and while
it runs, a client's job that finds every slot busy takes its slot: the newest background attempt
is cancelled (and counted as failed by whoever asked for it). So learning never delays a client,
at the price of fewer labels when a provider is busy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import attrs
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.actors.messages import Job


@attrs.frozen
class BackgroundStatistics:
    admitted: int  # background attempts taken
    refused: int  # not taken: no slot free, or clients waiting
    yielded: int  # cancelled to give a client their slot
    running: int


class BackgroundLane:
    def __init__(self) -> None:
        self._running: dict[int, CancelToken] = {}  # by job, in the order they started
        self._admitted = self._refused = self._yielded = 0

    def statistics(self) -> BackgroundStatistics:
        return BackgroundStatistics(self._admitted, self._refused, self._yielded, len(self._running))

    def admit(self, job: Job, mailbox: Mailbox[Job], free_slots: int) -> bool:
        """Hand a background job to the provider if it can start at once and no client waits."""
        if free_slots <= 0 or mailbox.statistics().depth > 0:
            self._refused += 1
            return False
        try:
            mailbox.tell(job)
        except MailboxFull:
            self._refused += 1
            return False
        self._admitted += 1
        return True

    @contextmanager
    def running(self, job: Job) -> Iterator[None]:
        """While a job runs: a background one may be asked to give its slot up."""
        if job.state.purpose not in BACKGROUND_PURPOSES:
            yield
            return
        self._running[id(job)] = job.cancel
        try:
            yield
        finally:
            self._running.pop(id(job), None)

    def yield_one(self) -> None:
        """A client's job waits for a slot: the newest background attempt gives its up."""
        if self._running:
            _, token = self._running.popitem()
            token.cancel()
            self._yielded += 1


# relaybox's own attempts for learning (a connection test, purpose "test", is the user's own ask).
BACKGROUND_PURPOSES = frozenset({"shadow", "judge"})
