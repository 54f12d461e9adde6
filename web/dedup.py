"""Deduplication: identical requests arriving within a few seconds of one still in flight share its
upstream call instead of paying for their own.

Agents and retrying clients send the same request twice more often than one would think (a
client-side timeout, a double submit); for a slow CLI answer that is a second subscription spent.

Identical means the same request body bytes on the same endpoint and route header. The first
request (the leader) dispatches as usual; a follower waits for the same answer to begin and then
reads the same events, from the first one, at its own pace. Whoever reads first pulls the next
event from the provider, so a slow or departed leader never holds followers back, and the upstream
call is cancelled only when the last reader has gone. The request pipeline logs a follower as its
own request (status `deduplicated`, no cost) pointing at the leader's task id. When the leader's
request may be cached, its answer is kept whichever reader reads it to the end, under the leader's
cache policy.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import Event, Failed, Finished, Usage
from relaybox.web.answer import Begun, Origin


class InFlightAnswers:
    """The answers in flight that an identical request may still join, by request key. The request
    pipeline holds the one instance and is the only one that reads or changes it."""

    def __init__(self, window: float) -> None:
        self.window = window  # seconds after its start during which an answer can be joined
        self._answers: dict[bytes, _SharedAnswer] = {}

    async def join(self, key: bytes) -> Begun | None:
        """A reader of the identical request's answer still in flight, from its first event; None
        when there is none to join (the request then leads its own, see `lead`). Raises the
        leader's error when the leader's request was refused: the same request would be too."""
        shared = self._answers.get(key)
        if shared is None or shared.ended or trio.current_time() - shared.opened_at > self.window:
            return None
        return await shared.join()

    def lead(self, key: bytes, leader_id: str) -> Lead:
        """Open an answer identical requests may join until `window` has passed."""
        shared = _SharedAnswer(key, trio.current_time(), self.window, leader_id, self._forget)
        self._answers[key] = shared
        return Lead(shared)

    def _forget(self, shared: _SharedAnswer) -> None:
        if self._answers.get(shared.key) is shared:
            del self._answers[shared.key]


class Lead:
    """The leader's side of an answer others may join: its answer begins (`started`), or its request
    fails first (`failed`)."""

    def __init__(self, shared: _SharedAnswer) -> None:
        self._shared = shared

    def started(self, begun: Begun) -> Begun:
        """The leader's own reader of its answer, which followers now read too."""
        return self._shared.lead(begun)

    def failed(self, error: BaseException) -> None:
        """Followers waiting to join get the same error when the request was refused (the same
        request would be); when it was cancelled or broke otherwise, each goes alone."""
        self._shared.failed(error if isinstance(error, RelayError) else None)
        self._shared.withdraw()


# Events a shared answer holds for its readers at most: a reader that falls this far behind the
# others is left behind (its stream ends with an error) rather than the answer held for it.
HELD_EVENTS_LIMIT = 4096


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
        self._joinable = True  # new readers may still start from the answer's first event
        self._readers: set[_Reader] = set()
        self._pulling = False
        self._exhausted = False
        self._changed = trio.Event()
        self._seats: list[_Seat] = []  # followers waiting for the answer to begin

    def lead(self, begun: Begun) -> Begun:
        """The answer began: every follower already waiting gets its reader now, at the first
        event, before the leader can read on. (Were they seated when they next ran, a leader that
        collects a whole answer without a checkpoint would have read it all and let it go.)"""
        self._begun = begun
        for seat in self._seats:
            seat.reader = _Reader(self, self._offset, follower=True)
            self._readers.add(seat.reader)
        self._seats.clear()
        self._settled.set()
        return self._reader(begun.origin)

    def failed(self, error: RelayError | None) -> None:
        """The leader's dispatch failed (with the client's error) or was abandoned (None)."""
        self._error = error
        self._seats.clear()
        self._settled.set()

    async def join(self) -> Begun | None:
        """The leader's answer for another request; None when the leader gave up before it began."""
        if not self._settled.is_set():
            return await self._wait_for_the_start()
        if self._error is not None:
            raise self._error
        if self._begun is None or self.ended or self.closed or self._offset > 0 or not self._joinable:
            return None  # gone, finished, released, or its start dropped: this request goes alone
        return self._reader(self._follower_origin(), follower=True)

    async def _wait_for_the_start(self) -> Begun | None:
        seat = _Seat()
        self._seats.append(seat)
        try:
            await self._settled.wait()
        except BaseException:
            if seat.reader is not None:
                seat.reader.close()
            elif seat in self._seats:
                self._seats.remove(seat)
            raise
        if self._error is not None:
            raise self._error
        if seat.reader is None or self._begun is None:
            return None  # the leader gave up before its answer began
        return Begun(self._begun.answering, seat.reader, CancelToken(), self._follower_origin())

    def _follower_origin(self) -> Origin:
        assert self._begun is not None
        return attrs.evolve(self._begun.origin, deduplicated_from=self.leader_id)

    def withdraw(self) -> None:
        """No longer joinable: a request arriving now leads an answer of its own."""
        self._forget(self)

    def _reader(self, origin: Origin, *, follower: bool = False) -> Begun:
        assert self._begun is not None
        reader = _Reader(self, self._offset, follower)
        self._readers.add(reader)
        # Each reader gets a token of its own: cancelling it (the client left) cancels nothing
        # shared; the upstream call is cancelled when the last reader closes.
        return Begun(self._begun.answering, reader, CancelToken(), origin)

    async def next_for(self, reader: _Reader) -> Event:
        assert self._begun is not None
        waited = False
        while True:
            try:
                event = self.ready_for(reader)
            except trio.WouldBlock:
                pass
            else:
                if not waited:
                    # A checkpoint, as a channel's receive has when an event is waiting: a whole
                    # buffered answer must not be consumed before the followers waiting to join
                    # it have run. Waiting for the event below was one already, and a second
                    # would cost each chunk of a stream another trip through the scheduler.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return event
            if self._exhausted:
                raise trio.EndOfChannel
            waited = True
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
        if reader.left_behind:
            reader.close()
            return Failed(
                RelayError(
                    502,
                    "this client fell too far behind the answer it shared with an identical request",
                    "upstream_error",
                    code="fell_behind",
                )
            )
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
        if len(self._events) > HELD_EVENTS_LIMIT:
            self._leave_the_slowest_behind()

    def _leave_the_slowest_behind(self) -> None:
        """Too many events held: the reader furthest behind is cut loose, and no one new may join
        (a joiner would start from the first event, which may have to go)."""
        self._joinable = False
        self._forget(self)
        positions = [r.position for r in self._readers if not r.left_behind]
        if positions and min(positions) < max(positions):
            for reader in self._readers:
                if reader.position == min(positions):
                    reader.left_behind = True
        self._trim()

    def _trim(self) -> None:
        """Drop events every reader has passed, once no new reader can join at the start."""
        if self._joinable and not self.ended and trio.current_time() - self.opened_at <= self.window:
            return
        positions = [r.position for r in self._readers if not r.left_behind]
        lowest = min(positions, default=self._offset + len(self._events))
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


@attrs.define(eq=False)
class _Seat:
    """A follower waiting for the leader's answer to begin: its reader once it has."""

    reader: _Reader | None = None


class _Reader:
    """One client's cursor into a shared answer; quacks like a memory receive channel."""

    def __init__(self, shared: _SharedAnswer, position: int, follower: bool) -> None:
        self.shared = shared
        self.position = position
        self.follower = follower
        self.closed = False
        self.left_behind = False  # too slow for the others: its next event is an error

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
