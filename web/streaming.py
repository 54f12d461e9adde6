"""An answer's events as server-sent events, in the dialect of the endpoint that was asked: OpenAI's
`chat.completion.chunk`s ending in `data: [DONE]`, or the Messages API's typed events.

Events that are already waiting leave together in one write: when the client side falls behind (a
thousand streams on one core), each trip through Quart and hypercorn carries several chunks instead
of one. A quiet stream gets a keep-alive every `KEEPALIVE_AFTER` seconds, so a dead peer shows up on
the next write.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import trio
from quart import Response
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import ContentDelta, Event, Failed, Finished, ToolCallDelta, ToolRan, Usage
from relaybox.protocol.wire import anthropic, openai
from relaybox.protocol.wire.responses_output import ResponsesStreamRenderer
from relaybox.protocol.wire.sse import DONE, KEEPALIVE, encode_data, tool_comment
from relaybox.web.answer import (
    KEEPALIVE_AFTER,
    REPLY_IDLE_LIMIT,
    Begun,
    EventSource,
    gateway_timeout,
    unexpected,
)
from relaybox.web.drain import Drain, shutting_down
from relaybox.web.headers import stream_headers

# Renders one event (None: a keep-alive is due) as the bytes to send, and says whether it ended the stream.
Render = Callable[[Event | None], tuple[bytes, bool]]


def event_stream(body: AsyncIterator[bytes], begun: Begun) -> Response:
    response = Response(body, mimetype="text/event-stream", headers=stream_headers(begun.headers))
    response.timeout = None  # Quart would otherwise cut the stream after 60 s
    # A client that hangs up before the body is first read cancels the request before the
    # generator ever runs, so its `finally` never does: release the answer when the response goes.
    weakref.finalize(response, begun.close)
    return response


def openai_stream(begun: Begun, request_id: str, created: int, include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI SSE."""
    model = begun.answering.model
    usage: Usage | None = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body = openai.chunk_body(
            completion_id=request_id, model=model, created=created, delta=delta, finish_reason=finish_reason
        )
        return encode_data(openai.dumps(body))

    def render(event: Event | None) -> tuple[bytes, bool]:
        nonlocal usage
        if event is None:
            return KEEPALIVE, False
        if isinstance(event, ContentDelta):
            return chunk({"content": event.text}), False
        if isinstance(event, ToolCallDelta):
            return chunk({"tool_calls": [openai.tool_call_body(event)]}), False
        if isinstance(event, ToolRan):
            return tool_comment(event.name, event.ok, event.seconds), False
        if isinstance(event, Usage):
            usage = event
            return b"", False
        if isinstance(event, Finished):
            closing = chunk({}, event.finish_reason)
            if include_usage and usage is not None:
                body = openai.usage_chunk_body(
                    completion_id=request_id, model=model, created=created, usage=usage
                )
                closing += encode_data(openai.dumps(body))
            return closing + DONE, True
        if isinstance(event, Failed):
            return encode_data(openai.dumps(event.error.body())), True
        return b"", False

    return _rendered(begun, chunk({"role": "assistant", "content": ""}), render)


class TypedRenderer(Protocol):
    """An API whose stream is typed events, one content block or output item at a time (the
    Messages API's renderer, the Responses API's)."""

    usage: Usage | None

    def text(self, delta: ContentDelta) -> bytes: ...

    def tool(self, delta: ToolCallDelta) -> bytes: ...

    def finish(self, finish_reason: str) -> bytes: ...

    def error(self, error: RelayError) -> bytes: ...


def typed_render(renderer: TypedRenderer, keepalive: bytes) -> Render:
    def render(event: Event | None) -> tuple[bytes, bool]:
        if event is None:
            return keepalive, False
        if isinstance(event, ContentDelta):
            return renderer.text(event), False
        if isinstance(event, ToolCallDelta):
            return renderer.tool(event), False
        if isinstance(event, ToolRan):
            return tool_comment(event.name, event.ok, event.seconds), False
        if isinstance(event, Usage):
            renderer.usage = event
            return b"", False
        if isinstance(event, Finished):
            return renderer.finish(event.finish_reason), True
        if isinstance(event, Failed):
            return renderer.error(event.error), True
        return b"", False

    return render


def anthropic_stream(begun: Begun, renderer: anthropic.MessagesStreamRenderer) -> AsyncIterator[bytes]:
    """Messages API SSE."""
    return _rendered(begun, renderer.start(), typed_render(renderer, anthropic.PING))


def responses_stream(
    begun: Begun, renderer: ResponsesStreamRenderer, stored: Callable[[], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """Responses API SSE; `stored` runs before the last event leaves, so a client that has its
    answer can continue from it on another instance."""
    rendered = _rendered(begun, renderer.start(), typed_render(renderer, KEEPALIVE))
    return _stored_before_end(rendered, renderer, stored, begun)


async def _stored_before_end(
    chunks: AsyncIterator[bytes],
    renderer: ResponsesStreamRenderer,
    stored: Callable[[], Awaitable[None]],
    begun: Begun,
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            if renderer.final is not None:
                await stored()
            yield chunk
    finally:
        begun.close()


class _Silence:
    """Keep-alives for a quiet stream, a last-resort end when it has been quiet far too long, and
    an end with an error frame when the server's grace period runs out."""

    def __init__(self, drain: Drain | None) -> None:
        self.since = trio.current_time()
        self.drain = drain or Drain()

    def ready(self, receive: EventSource) -> Event:
        """The next event if it is already waiting; raises `trio.WouldBlock` if not."""
        event = receive.receive_nowait()
        self.since = trio.current_time()
        return event

    async def next(self, receive: EventSource) -> Event | None:
        """The next event; None means: send a keep-alive. One cancel scope bounds the wait, at the
        keep-alive or the grace period's end, whichever comes first: this runs for most chunks of
        a stream (and the idle limit is checked here, not by `next_event`'s own)."""
        with self.drain.bounded(within=KEEPALIVE_AFTER):
            try:
                event = await receive.receive()
            except trio.EndOfChannel:
                event = Failed(unexpected(None))
            self.since = trio.current_time()
            return event
        if self.drain.stopping():
            return Failed(shutting_down())
        if trio.current_time() - self.since >= REPLY_IDLE_LIMIT:
            return Failed(gateway_timeout())
        return None


async def _rendered(begun: Begun, opening: bytes, render: Render) -> AsyncIterator[bytes]:
    """An answer's events as SSE bytes, waiting events in one write. A client disconnect surfaces
    here as cancellation or generator close; the cleanup in `finally` is synchronous because
    nothing may be awaited there."""
    try:
        pending = [opening]
        silence = _Silence(begun.drain)
        while True:
            try:
                event: Event | None = silence.ready(begun.receive)
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                # Nothing waiting (or the channel ended, which `next` turns into how the answer broke).
                if pending:
                    yield b"".join(pending)
                    pending.clear()
                event = await silence.next(begun.receive)
            data, ended = render(event)
            if data:
                pending.append(data)
            if ended:
                yield b"".join(pending)
                return
    finally:
        begun.close()
