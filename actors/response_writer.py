"""The Responses API's writer: stored responses (`store`, on by default) go to the database in
batches, off the request path, so that a conversation continues by `previous_response_id` on any
instance sharing it. A full mailbox or a database that refuses them leaves them in the memory of
the instance that answered (`web/stored_responses.py`)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import attrs
import trio
from relaybox.actors.mailbox import Mailbox, MailboxFull, MailboxStatistics
from relaybox.actors.messages import KeepResponse
from relaybox.storage.contract import Storage, StorageError

log = logging.getLogger("relaybox.responses")

QUEUE = 1024
# How long a stored response is kept, as OpenAI keeps them.
KEEP_SECONDS = 30 * 86400.0
# A batch the database refused is tried again this often, this many times.
RETRY_AFTER = 1.0
RETRIES = 3
DRAIN_TIMEOUT = 5.0


@attrs.frozen
class ResponseWriterStatistics:
    mailbox: MailboxStatistics
    writes: int
    errors: int


class ResponseWriter:
    kind = "responses"
    name = "responses"

    def __init__(self, storage: Storage, *, mailbox: int = QUEUE) -> None:
        self.storage = storage
        self.mailbox: Mailbox[KeepResponse] = Mailbox(mailbox)
        self._writes = 0
        self._errors = 0

    def keep(self, message: KeepResponse) -> bool:
        """For the request path: hand over a response without waiting; False when the queue is full."""
        with contextlib.suppress(MailboxFull):
            self.mailbox.tell(message)
            return True
        message.written.set()
        return False

    def statistics(self) -> ResponseWriterStatistics:
        return ResponseWriterStatistics(self.mailbox.statistics(), self._writes, self._errors)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            async for first in self.mailbox.receive:
                await self._write([first, *self.mailbox.drain()])
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT):
                await self._write(self.mailbox.drain(), retries=0)

    async def _write(self, batch: list[KeepResponse], *, retries: int = RETRIES) -> None:
        if not batch:
            return
        try:
            for attempt in range(retries + 1):
                try:
                    rows = [message.row for message in batch]
                    await self.storage.put_responses(rows, expire_before=time.time() - KEEP_SECONDS)
                    self._writes += len(batch)
                    return
                except StorageError as error:
                    self._errors += 1
                    log.warning("cannot store %d responses (try %d): %s", len(batch), attempt + 1, error)
                    if attempt < retries:
                        await trio.sleep(RETRY_AFTER)
        finally:
            for message in batch:
                message.written.set()

    async def on_crash(self, error: BaseException) -> None:
        return None

    def on_give_up(self) -> None:
        log.error("the responses writer stopped: stored responses are kept in memory only")
