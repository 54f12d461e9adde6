"""How the HTTP transport reads an upstream's streamed body: unencoded bytes as they arrive, a
compressed body decompressed, and a malformed one as this attempt's failure. The upstream is
httpx's `MockTransport` (the network edge); the dialect is relaybox's own."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from relaybox.actors.transports.http_api import HttpApiTransport
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, TransportEvent
from relaybox.protocol.wire.openai_upstream import OpenAIDialect

REQUEST = ChatRequest(model="m", messages=(ChatMessage("user", "hi"),), stream=True)


def sse(*texts: str) -> bytes:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]} for text in texts
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


async def streamed(body: bytes, headers: dict[str, str]) -> tuple[list[TransportEvent], str]:
    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7):  # in small pieces, as a stream comes
            yield body[start : start + 7]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream", **headers}, content=pieces())

    transport = HttpApiTransport(
        base_url="http://upstream.test/v1",
        api_key="sk-test",
        dialect=OpenAIDialect(),
        client_transport=httpx.MockTransport(answer),
    )
    events: list[TransportEvent] = []

    async def emit(event: TransportEvent) -> None:
        events.append(event)

    async with transport.session():
        finish_reason = await transport.run(REQUEST, "m", emit)
    return events, finish_reason


@pytest.mark.parametrize("encoding", [None, "identity", "gzip", " GZIP "])
async def test_a_streamed_answer_reads_the_same_whether_the_upstream_compressed_it_or_not(
    encoding: str | None,
) -> None:
    body = sse("Hello", ", ", "world")
    if encoding is None:
        events, finish_reason = await streamed(body, {})
    elif encoding.strip().lower() == "gzip":
        events, finish_reason = await streamed(gzip.compress(body), {"content-encoding": encoding})
    else:
        events, finish_reason = await streamed(body, {"content-encoding": encoding})
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == "Hello, world"
    assert finish_reason == "stop"


async def test_a_malformed_piece_of_a_stream_is_this_attempts_failure() -> None:
    body = b'data: {"choices": "not a list"}\n\n'
    with pytest.raises(ProviderFailure) as failure:
        await streamed(body, {})
    assert failure.value.kind is FailureKind.TRANSPORT
    assert failure.value.message.startswith("malformed upstream stream: ")
