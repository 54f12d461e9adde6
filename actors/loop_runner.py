"""The tool loops' runner: each server-side tool loop runs as a task of its own here.

A loop does slow work between its model calls (MCP tools, the next call's start) while its client
waits. Were that work done by the reader of the answer, the reader's keep-alive timer (which
cancels its wait every 15 s to send a comment) would cancel the work and lose the step. Run here,
the loop hands its events over a memory channel that the reader may stop waiting on at any time;
a reader that goes away closes the channel and cancels the loop's scope.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio
from relaybox.actors.mailbox import Mailbox, MailboxStatistics
from relaybox.actors.messages import LoopToRun

log = logging.getLogger("relaybox.tool_loop")


@attrs.frozen
class LoopRunnerStatistics:
    mailbox: MailboxStatistics
    running: int
    started: int


class LoopRunner:
    kind = "loops"
    name = "tool-loops"

    def __init__(self, *, mailbox: int = 256) -> None:
        self.mailbox: Mailbox[LoopToRun] = Mailbox(mailbox)
        self._running = 0
        self._started = 0

    def statistics(self) -> LoopRunnerStatistics:
        return LoopRunnerStatistics(self.mailbox.statistics(), self._running, self._started)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for loop in self.mailbox.receive:
                nursery.start_soon(self._run_one, loop)

    async def _run_one(self, loop: LoopToRun) -> None:
        """A loop's own faults end its own answer (it catches them); anything that escapes is a
        bug in the loop, logged here rather than taking every other loop down with it."""
        self._running += 1
        self._started += 1
        try:
            await loop.run()
        except Exception:
            log.exception("a tool loop failed")
        finally:
            self._running -= 1

    async def on_crash(self, error: BaseException) -> None:
        """The loops that were running ended with its nursery; those still queued never start."""
        self._abandon_queued()

    def on_give_up(self) -> None:
        log.error("the tool loops' runner stopped: requests on routes with tools are refused")
        self._abandon_queued()

    def _abandon_queued(self) -> None:
        for loop in self.mailbox.drain():
            loop.abandon()
