"""The response cache's writer: answers kept in memory are also written to the cache's shared tier
in the database (`response_cache`), so instances and `--workers` sharing a database share answers.
It runs off the request path: a full mailbox means the database is behind, and the answer stays in
that process's memory only."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import attrs
import trio
from relaybox.actors.mailbox import Mailbox, MailboxFull, MailboxStatistics
from relaybox.actors.messages import CacheWrite
from relaybox.storage.contract import Storage, StorageError

log = logging.getLogger("relaybox.cache")

# Answers waiting to be written to the shared tier; past this, new ones stay in memory only.
SHARED_QUEUE = 1024
# On stop, how long the answers still queued may take to be written.
DRAIN_TIMEOUT = 5.0


@attrs.frozen
class CacheWriterStatistics:
    mailbox: MailboxStatistics
    writes: int
    errors: int


class CacheWriter:
    kind = "cache"
    name = "response-cache"

    def __init__(self, storage: Storage, *, mailbox: int = SHARED_QUEUE) -> None:
        self.storage = storage
        self.mailbox: Mailbox[CacheWrite] = Mailbox(mailbox)
        self._writes = 0
        self._errors = 0

    def write(self, message: CacheWrite) -> None:
        """For the request path: hand over an answer without waiting. A full queue means the
        database is behind: the answer stays in this process's memory only."""
        with contextlib.suppress(MailboxFull):
            self.mailbox.tell(message)

    def statistics(self) -> CacheWriterStatistics:
        return CacheWriterStatistics(self.mailbox.statistics(), self._writes, self._errors)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            async for message in self.mailbox.receive:
                await self._write(message)
        finally:
            # Stopping: the answers still queued are written, if the database takes them in time.
            with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT):
                for message in self.mailbox.drain():
                    await self._write(message)

    async def _write(self, message: CacheWrite) -> None:
        try:
            await self.storage.put_cached_answer(message.row, message.key)
            self._writes += 1
        except StorageError as error:
            self._errors += 1
            log.warning("cannot write a cached answer to the database: %s", error)

    async def on_crash(self, error: BaseException) -> None:
        return None

    def on_give_up(self) -> None:
        log.error("the response cache's writer stopped: answers are cached in memory only")
