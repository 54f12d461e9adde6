"""The response cache (seed 001's cache.ts): a finished answer to a deterministic request is kept
and replayed to the next identical request, which then costs nothing and takes no upstream time.

It works with deduplication (`web/dedup.py`), one mechanism in two tenses: an identical request
still in flight is joined, a finished one is replayed from here. What is identical is the
normalised request (`cache_key`): model, messages, tools, sampling parameters and route, not the
body's bytes, and not whether it streams: a streaming request is answered from a cached
non-streaming answer as a stream, and the other way round.

Only deterministic requests are cached unless the client opts in: `temperature` 0, or the header
`x-relaybox-cache: on`. `cache-control: no-cache` skips the lookup (the fresh answer is still
kept), `cache-control: no-store` and `x-relaybox-cache: off` leave the cache out entirely, and
`x-relaybox-cache-ttl: SECONDS` sets how long this answer is kept. The cache is an in-memory LRU
bounded in bytes, per relaybox process, over a shared tier in the database (the request log's
SQLite file or PostgreSQL), so instances and `--workers` that share a database share answers: a
miss in memory asks the database (never for longer than `SHARED_LOOKUP_TIMEOUT`, and a database
that cannot answer is a miss), and new answers are written there in the background by the cache
actor, off the request path.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
import trio
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import Answering, ContentDelta, Event, Failed, Finished, ToolCallDelta, Usage
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import CachedRow

if TYPE_CHECKING:
    from relaybox.web.exchange import EventSource

log = logging.getLogger("relaybox.cache")

# A database lookup that takes longer than this is a miss: the request goes upstream.
SHARED_LOOKUP_TIMEOUT = 0.1
# Answers waiting to be written to the shared tier; past this, new ones stay in memory only.
SHARED_QUEUE = 1024
# Body fields that do not change the answer (who asks, how it is delivered, what is stored upstream).
IGNORED_PASSTHROUGH = frozenset(
    {"user", "metadata", "store", "stream_options", "service_tier", "parallel_tool_calls"}
)
# Rough bytes an event costs beyond its text, for the cache's size bound.
EVENT_OVERHEAD = 200


@attrs.frozen
class CachePolicy:
    lookup: bool  # answer from the cache if it can
    store: bool  # keep the fresh answer
    ttl: float


def cache_key(chat: ChatRequest, route_header: str | None) -> bytes:
    """The normalised request: everything that shapes the answer, nothing that only shapes its delivery."""
    fields = attrs.asdict(chat, recurse=True)
    for delivery in ("stream", "include_usage"):
        fields.pop(delivery)
    fields["passthrough"] = {k: v for k, v in chat.passthrough.items() if k not in IGNORED_PASSTHROUGH}
    canonical = json.dumps([fields, route_header], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=20).digest()


def cache_policy(chat: ChatRequest, headers: Mapping[str, str], default_ttl: float) -> CachePolicy | None:
    """What this request may do with the cache; None: nothing (not deterministic, or the client says no)."""
    control = {part.strip().lower() for part in headers.get("cache-control", "").split(",")}
    switch = headers.get("x-relaybox-cache", "").strip().lower()
    if "no-store" in control or switch == "off" or chat.passthrough.get("n", 1) != 1:
        return None
    if switch not in ("", "on"):
        raise RelayError(
            400, "x-relaybox-cache must be 'on' or 'off'", code="invalid_header", param="x-relaybox-cache"
        )
    if not (chat.temperature == 0 or switch == "on"):
        return None
    ttl = default_ttl
    if (override := headers.get("x-relaybox-cache-ttl")) is not None:
        try:
            ttl = float(override)
        except ValueError:
            ttl = -1.0
        if not 0 < ttl <= 30 * 86400:
            raise RelayError(
                400,
                "x-relaybox-cache-ttl must be a number of seconds, above 0 and at most 30 days",
                code="invalid_header",
                param="x-relaybox-cache-ttl",
            )
    return CachePolicy(lookup="no-cache" not in control, store=True, ttl=ttl)


@attrs.frozen
class CachedAnswer:
    events: tuple[Event, ...]  # Answering first, Finished last
    request_id: str  # the request whose answer it is
    stored_at: float
    expires_at: float
    size: int

    @property
    def answering(self) -> Answering:
        first = self.events[0]
        assert isinstance(first, Answering)
        return first

    def cost_usd(self) -> float:
        return sum(e.cost_usd or 0.0 for e in self.events if isinstance(e, Usage))


def answer_size(events: tuple[Event, ...]) -> int:
    text = 0
    for event in events:
        if isinstance(event, ContentDelta):
            text += len(event.text.encode())
        elif isinstance(event, ToolCallDelta):
            text += len((event.arguments or "").encode()) + len(event.name or "")
    return text + EVENT_OVERHEAD * len(events)


class AnswerCache:
    """An LRU of finished answers, bounded in bytes; entries also expire by their own TTL. With
    `shared` storage it is also an actor: its mailbox holds answers to write there."""

    kind = "cache"
    name = "response-cache"

    def __init__(
        self, max_bytes: int, clock: Callable[[], float] = time.time, shared: Storage | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.shared = shared
        self.bytes = 0
        self.hits = self.misses = self.stores = self.evictions = 0
        self.shared_hits = self.shared_writes = self.shared_errors = 0
        self.mailbox: Mailbox[tuple[str, CachedRow]] = Mailbox(SHARED_QUEUE)
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
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
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
                self.shared_errors += 1
        if row is None:
            return None
        try:
            entry = CachedAnswer(
                decode_events(row.answer), row.request_id, row.stored_at, row.expires_at, row.size
            )
        except (ValueError, KeyError, TypeError, cattrs.BaseValidationError):
            self.shared_errors += 1
            return None
        self._keep(key, entry)
        self.shared_hits += 1
        return entry

    def put(self, key: bytes, events: tuple[Event, ...], request_id: str, ttl: float) -> bool:
        size = answer_size(events)
        if not self.enabled or size > self.max_bytes // 4:  # one answer never crowds out the rest
            return False
        now = self.clock()
        entry = CachedAnswer(events, request_id, now, now + ttl, size)
        self._keep(key, entry)
        self.stores += 1
        if self.shared is not None:
            with contextlib.suppress(MailboxFull):  # the database is behind: memory only
                self.mailbox.tell(
                    (key.hex(), CachedRow(encode_events(events), request_id, now, now + ttl, size))
                )
        return True

    def _keep(self, key: bytes, entry: CachedAnswer) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    # --- the actor: writes to the shared tier ---------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for key, row in self.mailbox.receive:
            try:
                await self.shared.put_cached_answer(row, key)  # type: ignore[union-attr]
                self.shared_writes += 1
            except StorageError as error:
                self.shared_errors += 1
                log.warning("cannot write a cached answer to the database: %s", error)

    async def on_crash(self, error: BaseException) -> None:
        return None

    def on_give_up(self) -> None:
        log.error("the response cache's writer stopped: answers are cached in memory only")

    def _drop(self, key: bytes) -> None:
        self.bytes -= self._entries.pop(key).size

    def statistics(self) -> dict[str, Any]:
        mailbox = self.mailbox.statistics()
        return {
            "mailbox": {"depth": mailbox.depth, "capacity": mailbox.capacity, "peak": mailbox.peak},
            "shared": self.shared is not None,
            "shared_hits": self.shared_hits,
            "shared_writes": self.shared_writes,
            "shared_errors": self.shared_errors,
            "entries": len(self._entries),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "stores": self.stores,
            "evictions": self.evictions,
        }


EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (Answering, ContentDelta, ToolCallDelta, Usage, Finished)
}
_converter = cattrs.Converter()


def encode_events(events: tuple[Event, ...]) -> str:
    return json.dumps([{"type": type(e).__name__, **_converter.unstructure(e)} for e in events])


def decode_events(text: str) -> tuple[Event, ...]:
    """Raises ValueError, KeyError or a cattrs error on anything but what `encode_events` wrote."""
    events = []
    for item in json.loads(text):
        kind = EVENT_TYPES[item.pop("type")]
        events.append(_converter.structure(item, kind))
    if not events or not isinstance(events[0], Answering) or not isinstance(events[-1], Finished):
        raise ValueError("not a whole answer")
    return tuple(events)


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
