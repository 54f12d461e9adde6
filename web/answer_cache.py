"""The response cache's memory: finished answers to deterministic requests, replayed to the next
identical request, which then costs nothing and takes no upstream time.

It is the request pipeline's own (one per relaybox process): an LRU bounded in bytes, whose entries
also expire by their own TTL, over a shared tier in the database (the request log's SQLite file or
PostgreSQL), so instances and `--workers` that share a database share answers. A miss in memory asks
the database (never for longer than `SHARED_LOOKUP_TIMEOUT`, and a database that cannot answer is a
miss); new answers are handed to the cache writer actor (`actors/cache_writer.py`), which writes
them there off the request path. The rules (what is the same request, what a request allows) are
pure, in `protocol/caching.py`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import attrs
import cattrs
import trio
from relaybox.actors.cache_writer import CacheWriter
from relaybox.actors.mailbox import MailboxStatistics
from relaybox.actors.messages import CacheWrite
from relaybox.protocol.caching import CachedAnswer, answer_size, decode_events, encode_events
from relaybox.protocol.events import Answering, Event, Failed, Finished, Usage
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import CachedRow
from relaybox.web.answer import EventSource

# A database lookup that takes longer than this is a miss: the request goes upstream.
SHARED_LOOKUP_TIMEOUT = 0.1


@attrs.frozen
class AnswerCacheStatistics:
    mailbox: MailboxStatistics | None  # the writer's, when there is a shared tier
    shared: bool
    shared_hits: int
    shared_writes: int
    shared_errors: int
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    stores: int
    evictions: int


class AnswerCache:
    """An LRU of finished answers, bounded in bytes, over the database's shared tier when there is
    a `writer` (the actor that writes there; lookups read its storage)."""

    def __init__(
        self, max_bytes: int, clock: Callable[[], float] = time.time, *, writer: CacheWriter | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.writer = writer
        self.shared: Storage | None = None if writer is None else writer.storage
        self.bytes = 0
        self._hits = self._misses = self._stores = self._evictions = 0
        self._shared_hits = self._lookup_errors = 0
        self._entries: collections.OrderedDict[bytes, CachedAnswer] = collections.OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: bytes) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= self.clock():
            self._drop(key)
            entry = None
        if entry is None:
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return entry

    async def get_shared(self, key: bytes) -> CachedAnswer | None:
        """A memory miss asked of the database; kept in memory when found there."""
        if self.shared is None:
            return None
        row = None
        with trio.move_on_after(SHARED_LOOKUP_TIMEOUT):
            try:
                row = await self.shared.cached_answer(key.hex(), self.clock())
            except StorageError:
                self._lookup_errors += 1
        if row is None:
            return None
        try:
            entry = CachedAnswer(
                decode_events(row.answer), row.request_id, row.stored_at, row.expires_at, row.size
            )
        except (ValueError, KeyError, TypeError, cattrs.BaseValidationError):
            self._lookup_errors += 1
            return None
        self._keep(key, entry)
        self._shared_hits += 1
        return entry

    def put(self, key: bytes, events: tuple[Event, ...], request_id: str, ttl: float) -> bool:
        size = answer_size(events)
        if not self.enabled or size > self.max_bytes // 4:  # one answer never crowds out the rest
            return False
        now = self.clock()
        entry = CachedAnswer(events, request_id, now, now + ttl, size)
        self._keep(key, entry)
        self._stores += 1
        if self.writer is not None:
            self.writer.write(
                CacheWrite(key.hex(), CachedRow(encode_events(events), request_id, now, now + ttl, size))
            )
        return True

    def statistics(self) -> AnswerCacheStatistics:
        writer = None if self.writer is None else self.writer.statistics()
        return AnswerCacheStatistics(
            mailbox=None if writer is None else writer.mailbox,
            shared=self.shared is not None,
            shared_hits=self._shared_hits,
            shared_writes=0 if writer is None else writer.writes,
            shared_errors=self._lookup_errors + (0 if writer is None else writer.errors),
            entries=len(self._entries),
            bytes=self.bytes,
            max_bytes=self.max_bytes,
            hits=self._hits,
            misses=self._misses,
            stores=self._stores,
            evictions=self._evictions,
        )

    def _keep(self, key: bytes, entry: CachedAnswer) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self._evictions += 1

    def _drop(self, key: bytes) -> None:
        self.bytes -= self._entries.pop(key).size


class StoringSource:
    """Reads an answer through to its client and keeps its events; a complete answer (ending in
    `Finished`, with no failure) is handed to `keep`."""

    def __init__(
        self, inner: EventSource, answering: Answering, keep: Callable[[tuple[Event, ...]], None]
    ) -> None:
        self.inner = inner
        self._events: list[Event] | None = [answering]
        self._keep = keep

    async def receive(self) -> Event:
        return self._seen(await self.inner.receive())

    def receive_nowait(self) -> Event:
        return self._seen(self.inner.receive_nowait())

    def close(self) -> None:
        self.inner.close()

    def _seen(self, event: Event) -> Event:
        if self._events is not None:
            self._events.append(event)
            if isinstance(event, Finished):
                self._keep(tuple(self._events))
            if isinstance(event, Finished | Failed):
                self._events = None
        return event


def replay(entry: CachedAnswer) -> trio.MemoryReceiveChannel[Event]:
    """A cached answer as a reply channel: every event but `Answering`, its cost zeroed (the tokens
    were paid for once, by the request that fetched it)."""
    events = [attrs.evolve(e, cost_usd=0.0) if isinstance(e, Usage) else e for e in entry.events[1:]]
    send, receive = trio.open_memory_channel[Event](len(events))
    for event in events:
        send.send_nowait(event)
    send.close()
    return receive
