"""The router's view of the shared evidence: storage's routing rollup (written by every instance
of relaybox) read at start and every `refresh_seconds`, and handed to the router by message.

A slow database delays the next refresh, never routing; a failed read keeps what is known."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Protocol

import trio
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.actors.messages import EvidenceLoaded, RouterMessage
from relaybox.protocol.routing.evidence import DAY, RollupRow

log = logging.getLogger("relaybox.router")

REFRESH_TIMEOUT = 10.0


class EvidenceSource(Protocol):
    async def routing_evidence(self, *, since: float) -> list[RollupRow]: ...


async def refresh_evidence(
    storage: EvidenceSource, router: Mailbox[RouterMessage], *, window_days: float, every: float
) -> None:
    """Read the last `window_days` of evidence now and every `every` seconds, for as long as the
    router runs (it is a task in the router's nursery)."""
    while True:
        at, started = time.time(), trio.current_time()
        rows = None
        with trio.move_on_after(REFRESH_TIMEOUT):
            try:
                rows = await storage.routing_evidence(since=at - window_days * DAY)
            except Exception as error:  # storage down: routing goes on with what it has
                log.warning("could not load routing evidence from storage: %s", error)
        if rows is not None:
            with contextlib.suppress(MailboxFull):
                router.tell(EvidenceLoaded(tuple(rows), at, started))
        await trio.sleep(every)
