"""Bounded mailboxes, and the two ways to talk to an actor: `tell` and `ask`.

A mailbox outlives the actor incarnations that read it: when a supervisor restarts an actor,
the new incarnation reads the same mailbox, so addresses handed out earlier stay valid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs
import trio

M = TypeVar("M")
R = TypeVar("R")


class MailboxFull(Exception):
    """The actor is not keeping up; the caller should try elsewhere or answer 429/503."""


@attrs.frozen
class MailboxStatistics:
    depth: int
    capacity: int
    peak: int
    purged: int = 0  # messages dropped unread because their sender had given up on them


class Mailbox(Generic[M]):
    """A bounded mailbox. With `is_stale`, a full mailbox first drops the messages nobody waits
    for any more (a job whose client hung up), so they never take the place of a live one."""

    def __init__(self, capacity: int, *, is_stale: Callable[[M], bool] | None = None) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one message")
        self._send, self.receive = trio.open_memory_channel[M](capacity)
        self.capacity = capacity
        self._is_stale = is_stale
        self._peak = 0
        self._purged = 0

    def tell(self, message: M) -> None:
        """Deliver without waiting; raise `MailboxFull` when there is no room."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            if not self._purge_stale():
                raise MailboxFull from None
            self._send.send_nowait(message)
        self._note_depth()

    def _purge_stale(self) -> bool:
        """Drop stale messages, keeping the others in order; True when that made room. (Synchronous:
        nothing else runs while the queue is taken out and put back.)"""
        if self._is_stale is None:
            return False
        waiting = self.drain()
        live = [m for m in waiting if not self._is_stale(m)]
        for message in live:
            self._send.send_nowait(message)
        self._purged += len(waiting) - len(live)
        return len(live) < len(waiting)

    async def send(self, message: M) -> None:
        """Deliver, waiting for room: for messages that must not be lost (outcome reports)."""
        await self._send.send(message)
        self._note_depth()

    def drain(self) -> list[M]:
        """Take every queued message at once (a crashed actor's queue, to fail them cleanly)."""
        drained = []
        while True:
            try:
                drained.append(self.receive.receive_nowait())
            except trio.WouldBlock:
                return drained

    def _note_depth(self) -> None:
        self._peak = max(self._peak, self._send.statistics().current_buffer_used)

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            depth=self._send.statistics().current_buffer_used,
            capacity=self.capacity,
            peak=self._peak,
            purged=self._purged,
        )


class NoReply(Exception):
    """The actor asked closed the reply channel without an answer: it has none to give."""


async def ask(mailbox: Mailbox[M], make: Callable[[trio.MemorySendChannel[R]], M]) -> R:
    """Send a message carrying a reply channel and wait for the single reply. The actor resolves
    the reply on every path: it sends its answer, or closes the channel when it has none (crashed,
    stopped), which raises `NoReply` here at once instead of leaving the caller waiting."""
    send, receive = trio.open_memory_channel[R](1)
    with receive:
        mailbox.tell(make(send))
        try:
            return await receive.receive()
        except trio.EndOfChannel:
            raise NoReply from None
