"""Deduplication (seed 001): identical requests arriving within a few seconds of one still in
flight share its upstream call instead of paying for their own.

Agents and retrying clients send the same request twice more often than one would think (a
client-side timeout, a double submit); for a slow CLI answer that is a second subscription spent.

Identical means the same request body bytes on the same endpoint and route header. The first
request (the leader) dispatches as usual; a follower waits for the same answer to begin and then
reads the same events, from the first one, at its own pace. Whoever reads first pulls the next
event from the provider, so a slow or departed leader never holds followers back, and the upstream
call is cancelled only when the last reader has gone. A follower is logged as its own request
(status `deduplicated`, no cost) pointing at the leader's task id.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.provider import RecordSink, group_id
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import Answering, Event, Failed, Finished, Usage
from relaybox.storage.records import AttemptRecord
from relaybox.web.answer_cache import AnswerCache, CachedAnswer, CachePolicy, StoringSource, replay
from relaybox.web.exchange import Begun


class Deduplicator:
    def __init__(
        self, window: float, recorder: RecordSink | None = None, cache: AnswerCache | None = None
    ) -> None:
        self.window = window
        self.recorder = recorder
        self.cache = cache
        self.shared = 0  # followers served from another request's call, for /actors and tests
        self._inflight: dict[bytes, _SharedAnswer] = {}

    async def begin(
        self,
        key: bytes | None,
        request_id: str,
        client: str | None,
        start: Callable[[], Awaitable[Begun]],
        cached: tuple[bytes, CachePolicy] | None = None,
    ) -> Begun:
        """`start()` dispatches the request; it runs unless a cached answer can be replayed
        (`cached`: the normalised key and what the request allows) or an identical request in
        flight can be joined."""
        cache = self.cache if self.cache is not None and self.cache.enabled else None
        if cache is not None and cached is not None and cached[1].lookup:
            entry = cache.get(cached[0]) or await cache.get_shared(cached[0])
            if entry is not None:
                return self._replay(entry, request_id, client)
        begun = await self._shared_or_new(key, request_id, client, start)
        if (
            cache is not None
            and cached is not None
            and cached[1].store
            and not begun.headers.get("x-deduplicated-from")
        ):
            cache_key, policy = cached

            def keep(events: tuple[Event, ...]) -> None:
                cache.put(cache_key, events, request_id, policy.ttl)

            begun.receive = StoringSource(begun.receive, begun.answering, keep)
            begun.headers["x-cache-hit"] = "false"
        return begun

    def _replay(self, entry: CachedAnswer, request_id: str, client: str | None) -> Begun:
        age = time.time() - entry.stored_at
        reason = f"cache hit: the answer to {entry.request_id} from {age:.0f} s ago"
        answering = attrs.evolve(entry.answering, reason=reason, fallback_used=False, upstream_ms=0.0)
        headers = {
            "x-task-id": request_id,
            "x-provider": answering.provider,
            "x-model": answering.model,
            "x-router-reason": reason,
            "x-fallback-used": "false",
            "x-overhead-ms": "0.00",
            "x-cache-hit": "true",
            "x-cached-from": entry.request_id,
        }
        # Its saving is the answer's cost: the baseline the dashboard's "saved" compares with.
        self._record(
            answering, request_id, client, reason, cache_hit=True, baseline_cost_usd=entry.cost_usd()
        )
        return Begun(answering, replay(entry), CancelToken(), headers)

    async def _shared_or_new(
        self, key: bytes | None, request_id: str, client: str | None, start: Callable[[], Awaitable[Begun]]
    ) -> Begun:
        if key is None or self.window <= 0:
            return await start()
        now = trio.current_time()
        shared = self._inflight.get(key)
        if shared is not None and not shared.ended and now - shared.opened_at <= self.window:
            joined = await shared.join(request_id)
            if joined is not None:
                self.shared += 1
                reason = f"deduplicated: shared the upstream call of {shared.leader_id}"
                self._record(joined.answering, request_id, client, reason, status="deduplicated")
                return joined
        shared = _SharedAnswer(key, now, self.window, request_id, self._forget)
        self._inflight[key] = shared
        try:
            begun = await start()
        except BaseException as error:
            shared.failed(error if isinstance(error, RelayError) else None)
            self._forget(shared)
            raise
        return shared.lead(begun)

    def _forget(self, shared: _SharedAnswer) -> None:
        if self._inflight.get(shared.key) is shared:
            del self._inflight[shared.key]

    def _record(
        self, answering: Answering, request_id: str, client: str | None, reason: str, **fields: Any
    ) -> None:
        """The log row of a request answered without an upstream call of its own (cost 0)."""
        if self.recorder is None:
            return
        self.recorder.record(
            AttemptRecord(
                id=str(uuid.uuid4()),
                created_at=time.time(),
                request_group_id=group_id(request_id),
                attempt=1,
                provider=answering.provider,
                model_selected=answering.model,
                router_reason=reason,
                client=client,
                **fields,
            )
        )


class _SharedAnswer:
    """One answer being read by one or more clients."""

    def __init__(
        self,
        key: bytes,
        opened_at: float,
        window: float,
        leader_id: str,
        forget: Callable[[_SharedAnswer], None],
    ) -> None:
        self.key = key
        self.opened_at = opened_at
        self.window = window
        self.leader_id = leader_id
        self.ended = False  # the answer has ended (its terminal event read, or the channel closed)
        self.closed = False  # every reader has gone and the upstream call was released
        self._forget = forget
        self._begun: Begun | None = None
        self._error: RelayError | None = None
        self._settled = trio.Event()  # the leader's dispatch has an answer or an error
        self._events: list[Event] = []
        self._offset = 0  # index of _events[0] in the whole answer (consumed events are dropped)
        self._readers: set[_Reader] = set()
        self._pulling = False
        self._exhausted = False
        self._changed = trio.Event()

    def lead(self, begun: Begun) -> Begun:
        self._begun = begun
        self._settled.set()
        return self._reader(begun.headers)

    def failed(self, error: RelayError | None) -> None:
        """The leader's dispatch failed (with the client's error) or was abandoned (None)."""
        self._error = error
        self._settled.set()

    async def join(self, request_id: str) -> Begun | None:
        """The leader's answer for another request; None when the leader gave up before it began."""
        await self._settled.wait()
        if self._error is not None:
            raise self._error
        if self._begun is None or self.ended or self.closed or self._offset > 0:
            return None  # gone, finished, released, or its start dropped: this request goes alone
        headers = {**self._begun.headers, "x-task-id": request_id, "x-deduplicated-from": self.leader_id}
        return self._reader(headers, follower=True)

    def _reader(self, headers: dict[str, str], *, follower: bool = False) -> Begun:
        assert self._begun is not None
        reader = _Reader(self, self._offset, follower)
        self._readers.add(reader)
        # Each reader gets a token of its own: cancelling it (the client left) cancels nothing
        # shared; the upstream call is cancelled when the last reader closes.
        return Begun(self._begun.answering, reader, CancelToken(), headers)

    async def next_for(self, reader: _Reader) -> Event:
        assert self._begun is not None
        # A checkpoint, as a channel's receive is: a whole buffered answer must not be consumed
        # before the followers waiting to join it have run.
        await trio.lowlevel.checkpoint()
        while True:
            with contextlib.suppress(trio.WouldBlock):
                return self.ready_for(reader)
            if self._exhausted:
                raise trio.EndOfChannel
            if self._pulling:
                changed = self._changed
                await changed.wait()
                continue
            self._pulling = True
            try:
                self._store(await self._begun.receive.receive())
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._store(None)
            finally:
                self._pulling = False
                self._changed.set()
                self._changed = trio.Event()

    def ready_for(self, reader: _Reader) -> Event:
        """The reader's next event if it has already arrived; raises `trio.WouldBlock` if not."""
        assert self._begun is not None
        index = reader.position - self._offset
        if index >= len(self._events) and not (self._pulling or self._exhausted):
            try:
                self._store(self._begun.receive.receive_nowait())
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._store(None)
                raise trio.WouldBlock from None  # `next_for` reports the end
        if index >= len(self._events):
            raise trio.WouldBlock
        reader.position += 1
        event = self._events[index]
        self._trim()
        return event

    def _store(self, event: Event | None) -> None:
        """Keep an event of the answer for every reader; None: the channel ended without one."""
        if event is None:
            self._exhausted = True
        else:
            self._events.append(event)
        if event is None or isinstance(event, Finished | Failed):
            self.ended = True
            self._forget(self)

    def _trim(self) -> None:
        """Drop events every reader has passed, once no new reader can join at the start."""
        if not self.ended and trio.current_time() - self.opened_at <= self.window:
            return
        lowest = min((r.position for r in self._readers), default=self._offset + len(self._events))
        drop = lowest - self._offset
        if drop > 0:
            del self._events[:drop]
            self._offset = lowest

    def close_reader(self, reader: _Reader) -> None:
        self._readers.discard(reader)
        if self._readers or self._begun is None:
            return
        self.closed = True
        self._forget(self)
        self._begun.close()


class _Reader:
    """One client's cursor into a shared answer; quacks like a memory receive channel."""

    def __init__(self, shared: _SharedAnswer, position: int, follower: bool) -> None:
        self.shared = shared
        self.position = position
        self.follower = follower
        self.closed = False

    async def receive(self) -> Event:
        if self.closed:
            raise trio.ClosedResourceError
        return self._as_seen(await self.shared.next_for(self))

    def receive_nowait(self) -> Event:
        if self.closed:
            raise trio.ClosedResourceError
        return self._as_seen(self.shared.ready_for(self))

    def _as_seen(self, event: Event) -> Event:
        if self.follower and isinstance(event, Usage) and event.cost_usd:
            return attrs.evolve(event, cost_usd=0.0)  # the tokens were used; this client paid nothing
        return event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.shared.close_reader(self)
