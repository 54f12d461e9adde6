"""One request's exchange with the actor system: dispatch it, wait for the answer to begin,
collect it. Shared by every endpoint that asks a provider something."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import MailboxFull
from relaybox.actors.messages import Dispatch
from relaybox.actors.router import OverheadObserved
from relaybox.protocol.chat import ChatRequest, ImageRequest
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import (
    Answering,
    ContentDelta,
    Event,
    Failed,
    Finished,
    GeneratedImages,
    ToolCallDelta,
    Usage,
)
from relaybox.storage.records import KeyBudget
from relaybox.web.system import System

# Events buffered between a provider and a slow client before the provider waits.
REPLY_BUFFER = 64
# A dead peer shows up on the next write: send a comment when a stream has been quiet this long.
KEEPALIVE_AFTER = 15.0
# Last-resort guard: no event at all for this long means something was lost.
REPLY_IDLE_LIMIT = 900.0


def header_safe(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:300]


class EventSource(Protocol):
    """Where an answer's events come from: a memory channel, or a reader of a shared answer."""

    async def receive(self) -> Event: ...

    def receive_nowait(self) -> Event:
        """The next event if it is already here; raises `trio.WouldBlock` if not."""
        ...

    def close(self) -> None: ...


@attrs.define
class Begun:
    """A request some provider has begun to answer."""

    answering: Answering
    receive: EventSource
    token: CancelToken
    headers: dict[str, str]

    def close(self) -> None:
        """Synchronous on purpose: it runs where a cancelled task may not await."""
        self.token.cancel()
        self.receive.close()

    async def collect(self) -> Collected:
        """The whole answer (for non-streaming replies), releasing the exchange either way."""
        try:
            return await collect(self.receive)
        finally:
            self.close()


@attrs.frozen
class Collected:
    text: str
    tool_calls: list[ToolCallDelta]
    usage: Usage | None
    finish_reason: str
    images: list[dict[str, Any]] = attrs.field(factory=list)


def unexpected(event: object) -> RelayError:
    return RelayError(
        502,
        f"the provider's answer ended unexpectedly ({type(event).__name__})",
        "upstream_error",
        code="broken_stream",
    )


async def next_event(receive: EventSource) -> Event:
    """The next event; a channel that ends without a terminal event, or goes silent for far too
    long, is a broken answer rather than a hang."""
    with trio.move_on_after(REPLY_IDLE_LIMIT):
        try:
            return await receive.receive()
        except trio.EndOfChannel:
            return Failed(unexpected(None))
    return Failed(
        RelayError(
            504, "no answer from relaybox's providers in time", "upstream_error", code="gateway_timeout"
        )
    )


async def collect(receive: EventSource) -> Collected:
    text: list[str] = []
    calls: list[ToolCallDelta] = []
    images: list[dict[str, Any]] = []
    usage: Usage | None = None
    while True:
        event = await next_event(receive)
        if isinstance(event, ContentDelta):
            text.append(event.text)
        elif isinstance(event, GeneratedImages):
            images.extend(event.images)
        elif isinstance(event, ToolCallDelta):
            calls.append(event)
        elif isinstance(event, Usage):
            usage = event
        elif isinstance(event, Finished):
            return Collected("".join(text), calls, usage, event.finish_reason, images)
        else:
            raise event.error if isinstance(event, Failed) else unexpected(event)


async def dispatch(
    system: System,
    chat: ChatRequest | ImageRequest,
    request_id: str,
    client: str | None = None,
    route_header: str | None = None,
    tokens_saved: int | None = None,
    compression_level: str = "safe",
    key_budget: KeyBudget | None = None,
) -> Begun:
    """Hand a request to the router and wait until a provider begins to answer (or all have failed).
    `tokens_saved`: what prompt compression saved on `chat` (None: it did not run)."""
    started = trio.current_time()
    if not system.router_running():
        raise RelayError(
            503,
            "relaybox's router is down; see /actors",
            "service_unavailable",
            code="router_down",
            retry_after=5,
        )
    send, receive = trio.open_memory_channel[Event](REPLY_BUFFER)
    token = CancelToken()
    try:
        system.router.mailbox.tell(
            Dispatch(
                request_id,
                chat,
                send,
                token,
                client,
                route_header,
                compression_level=compression_level,
                tokens_saved=tokens_saved,
                key_budget=key_budget,
            )
        )
    except MailboxFull:
        raise RelayError(
            503,
            "relaybox is overloaded (router queue full); retry shortly",
            "service_unavailable",
            code="overloaded",
            retry_after=1,
        ) from None
    try:
        first = await next_event(receive)
    except BaseException:
        token.cancel()
        receive.close()
        raise
    if not isinstance(first, Answering):
        token.cancel()
        receive.close()
        raise first.error if isinstance(first, Failed) else unexpected(first)
    overhead_ms = max(0.0, (trio.current_time() - started) * 1000 - first.upstream_ms)
    with contextlib.suppress(MailboxFull):  # statistics: never worth failing a request over
        system.router.mailbox.tell(OverheadObserved(overhead_ms))
    headers = {
        "x-task-id": request_id,
        "x-provider": first.provider,
        "x-model": first.model,
        "x-router-reason": header_safe(first.reason),
        "x-fallback-used": "true" if first.fallback_used else "false",
        "x-overhead-ms": f"{overhead_ms:.2f}",
    }
    if tokens_saved is not None:
        headers["x-tokens-saved"] = str(tokens_saved)
    return Begun(first, receive, token, headers)
