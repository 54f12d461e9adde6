"""Counting each key's requests per minute in the database, one round trip per batch.

A key's limit holds across every instance only if the count lives in the shared database, but a
database write per request would cost each limited request a round trip on the (single) storage
connection: under load that halves throughput. So requests are counted in batches, as databases
group their commits: the requests of one key and minute that arrive while that slot's previous
count is being written wait together, and one write adds them all. A lone request still costs one
write; fifty concurrent ones cost a handful. The database's answer (the minute's total after the
batch) gives each request of the batch its own place in the minute, so the limit stays exact.

The writes run in the key ring's nursery, not in the requests' tasks: a request that stops waiting
(its 100 ms are up, or its client left) does not stop its batch from being counted.
"""

from __future__ import annotations

import logging

import trio
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import KeyMinute

log = logging.getLogger("relaybox.auth")


class _Batch:
    def __init__(self) -> None:
        self.size = 0
        self.counted = trio.Event()
        self.total: KeyMinute | None = None  # the minute after this batch; None: not counted


class KeyMinutes:
    def __init__(self, storage: Storage, *, timeout: float = 2.0) -> None:
        self.storage = storage
        self.timeout = timeout
        self.writes = 0
        self._open: dict[tuple[str, int], _Batch] = {}  # the batch still taking requests, per slot
        self._writing: set[tuple[str, int]] = set()  # slots whose writer task is running

    async def count(self, nursery: trio.Nursery, name: str, window: int) -> KeyMinute | None:
        """Count one request of key `name` in the minute starting at `window`: the minute's
        requests up to this one and its tokens so far, or None if the database did not answer.
        The caller bounds the wait (it is let through when the database is slow)."""
        slot = (name, window)
        batch = self._open.setdefault(slot, _Batch())
        batch.size += 1
        place = batch.size
        if slot not in self._writing:
            self._writing.add(slot)
            nursery.start_soon(self._write, slot)
        await batch.counted.wait()
        if batch.total is None:
            return None
        return KeyMinute(batch.total.requests - batch.size + place, batch.total.tokens)

    async def _write(self, slot: tuple[str, int]) -> None:
        """Write the slot's open batch, then the one that gathered meanwhile, until none is left."""
        try:
            while (batch := self._open.pop(slot, None)) is not None:
                try:
                    with trio.move_on_after(self.timeout):
                        self.writes += 1
                        batch.total = await self.storage.count_key_requests(*slot, batch.size)
                except StorageError as error:
                    log.warning("cannot count the requests of key %r (let through): %s", slot[0], error)
                finally:
                    batch.counted.set()
        finally:
            self._writing.discard(slot)
