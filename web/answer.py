"""An answer as the request pipeline hands it to a handler: the provider's `Answering`, where its
events come from, and where the answer itself came from (which the response headers say).

Handlers either collect it whole (non-streaming replies) or render its events as they come
(`web/streaming.py`). Either way they release it when done: `Begun.close` cancels whatever is
still working on it upstream.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import (
    Answering,
    ContentDelta,
    Embedded,
    Event,
    Failed,
    Finished,
    GeneratedImages,
    ToolCallDelta,
    ToolRan,
    Usage,
)
from relaybox.web.drain import Drain, shutting_down

# Events buffered between a provider and a slow client before the provider waits.
REPLY_BUFFER = 64
# A dead peer shows up on the next write: send a comment when a stream has been quiet this long.
KEEPALIVE_AFTER = 15.0
# Last-resort guard: no event at all for this long means something was lost.
REPLY_IDLE_LIMIT = 900.0


class EventSource(Protocol):
    """Where an answer's events come from: a memory channel, a reader of a shared answer, a
    cached answer's replay."""

    async def receive(self) -> Event: ...

    def receive_nowait(self) -> Event:
        """The next event if it is already here; raises `trio.WouldBlock` if not."""
        ...

    def close(self) -> None: ...


@attrs.frozen
class Origin:
    """Where an answer comes from, beyond the provider that gave it: what its headers say."""

    overhead_ms: float = 0.0  # relaybox's own time before the answer began (upstream time excluded)
    tokens_saved: int | None = None  # what prompt compression saved (None: it did not run)
    cache_hit: bool | None = None  # None: the response cache had no part in it
    cached_from: str | None = None  # the request whose cached answer this is
    deduplicated_from: str | None = None  # the request in flight whose answer this shares


@attrs.define
class Begun:
    """A request some provider has begun to answer (or relaybox itself, from its cache)."""

    answering: Answering
    receive: EventSource
    token: CancelToken
    origin: Origin = attrs.field(factory=Origin)
    headers: dict[str, str] = attrs.field(factory=dict)  # set once, by the request pipeline
    drain: Drain | None = None  # the server's graceful stop, which ends a wait that would outlast it

    def close(self) -> None:
        """Synchronous on purpose: it runs where a cancelled task may not await."""
        self.token.cancel()
        self.receive.close()

    async def collect(self) -> Collected:
        """The whole answer (for non-streaming replies), releasing the exchange either way; a 503
        when the server's grace period ends first."""
        try:
            if self.drain is None:
                return await collect(self.receive)
            with self.drain.bounded():
                return await collect(self.receive)
            raise shutting_down()
        finally:
            self.close()


@attrs.frozen
class Collected:
    text: str
    tool_calls: list[ToolCallDelta]
    usage: Usage | None
    finish_reason: str
    images: list[dict[str, Any]] = attrs.field(factory=list)
    vectors: tuple[tuple[float, ...], ...] = ()


def unexpected(event: object) -> RelayError:
    return RelayError(
        502,
        f"the provider's answer ended unexpectedly ({type(event).__name__})",
        "upstream_error",
        code="broken_stream",
    )


def gateway_timeout() -> RelayError:
    return RelayError(
        504, "no answer from relaybox's providers in time", "upstream_error", code="gateway_timeout"
    )


async def next_event(receive: EventSource) -> Event:
    """The next event; a channel that ends without a terminal event, or goes silent for far too
    long, is a broken answer rather than a hang."""
    with trio.move_on_after(REPLY_IDLE_LIMIT):
        try:
            return await receive.receive()
        except trio.EndOfChannel:
            return Failed(unexpected(None))
    return Failed(gateway_timeout())


async def collect(receive: EventSource) -> Collected:
    text: list[str] = []
    calls: list[ToolCallDelta] = []
    images: list[dict[str, Any]] = []
    vectors: tuple[tuple[float, ...], ...] = ()
    usage: Usage | None = None
    while True:
        # What has arrived is taken without a checkpoint each: a whole answer's events usually
        # come in one go, and waking this task once for them all is enough.
        try:
            event = receive.receive_nowait()
        except trio.WouldBlock:
            event = await next_event(receive)
        except trio.EndOfChannel:
            event = Failed(unexpected(None))
        if isinstance(event, ContentDelta):
            text.append(event.text)
        elif isinstance(event, GeneratedImages):
            images.extend(event.images)
        elif isinstance(event, Embedded):
            vectors += event.vectors
        elif isinstance(event, ToolCallDelta):
            calls.append(event)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, ToolRan):
            continue  # the tool loop's progress, for streams only
        elif isinstance(event, Finished):
            return Collected("".join(text), calls, usage, event.finish_reason, images, vectors)
        else:
            raise event.error if isinstance(event, Failed) else unexpected(event)
