"""The stack's own ceiling: a bare quart-trio app on hypercorn, as relaybox is served.

    python -m bench.bare_stack --port P --upstream http://127.0.0.1:U/v1

Three endpoints, nothing else: `POST /static/v1/chat/completions` answers a fixed completion
without calling anything; `POST /proxy/v1/chat/completions` reads the body and passes it to the
upstream with one shared httpx client, returning what comes back (the naive pass-through);
`POST /proxy-hop/v1/chat/completions` is that pass-through with the call made as an actor design
makes it: the request told to a long-lived task through its mailbox, which runs the call in a task
of its own, whose answer comes back through a reply channel;
`POST /stream/v1/chat/completions` generates an SSE stream of 20 chunks 100 ms apart itself;
`POST /relay/v1/chat/completions` streams the upstream's answer through unread (its bytes as they
arrive, over 16 httpx clients as relaybox spreads its connections); `POST /hop/v1/chat/completions`
is the same relay with the upstream read by a task of its own that hands each piece to the response
through a memory channel, as an actor design does (relaybox's provider actor runs each attempt in
its own task, and the handler reads the answer's events from a channel). The benchmarks load these in
the same run as relaybox, so relaybox's figures can be read against what the design card's stack
does with no gateway in it. Once serving it settles its heap as relaybox does (`settle_the_heap`:
the garbage collector leaves startup's objects alone and collects young ones less often).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from functools import partial

import httpx
import hypercorn.trio
import trio
from hypercorn.config import Config
from quart import Response, request
from quart_trio import QuartTrio
from relaybox.web.cli import settle_the_heap

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bare",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
)


# The stream `bench.streaming_fanout` loads: 20 chunks 100 ms apart.
STREAM_CHUNKS = 20
STREAM_GAP = 0.1


def create(upstream: str) -> QuartTrio:
    app = QuartTrio(__name__)
    client: httpx.AsyncClient | None = None

    @app.post("/static/v1/chat/completions")
    async def fixed_answer() -> Response:
        await request.get_data()
        return Response(ANSWER, mimetype="application/json")

    @app.post("/proxy/v1/chat/completions")
    async def pass_through() -> Response:
        nonlocal client
        if client is None:
            client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512))
        body = await request.get_data()
        answer = await client.post(
            upstream + "/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        return Response(answer.content, status=answer.status_code, mimetype="application/json")

    mailbox_in, mailbox = trio.open_memory_channel[tuple[bytes, trio.MemorySendChannel[httpx.Response]]](256)
    actor_started = False

    async def actor() -> None:
        async def job(body: bytes, reply: trio.MemorySendChannel[httpx.Response]) -> None:
            assert client is not None
            async with reply:
                answer = await client.post(
                    upstream + "/chat/completions", content=body, headers={"content-type": "application/json"}
                )
                with contextlib.suppress(trio.BrokenResourceError):
                    await reply.send(answer)

        async with trio.open_nursery() as jobs:
            async for body, reply in mailbox:
                jobs.start_soon(job, body, reply)

    @app.post("/proxy-hop/v1/chat/completions")
    async def pass_through_an_actor() -> Response:
        nonlocal client, actor_started
        if client is None:
            client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512))
        if not actor_started:
            actor_started = True
            app.nursery.start_soon(actor)
        reply, replies = trio.open_memory_channel[httpx.Response](1)
        await mailbox_in.send((await request.get_data(), reply))
        async with replies:
            answer = await replies.receive()
        return Response(answer.content, status=answer.status_code, mimetype="application/json")

    relay_clients: list[httpx.AsyncClient] = []
    turns = itertools.count()

    def relay_client() -> httpx.AsyncClient:
        """The next of 16 clients, as relaybox spreads its connections over its pools."""
        if not relay_clients:
            limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
            relay_clients.extend(httpx.AsyncClient(limits=limits, timeout=None) for _ in range(16))
        return relay_clients[next(turns) % len(relay_clients)]

    @app.post("/relay/v1/chat/completions")
    async def stream_through() -> Response:
        client = relay_client()
        upstream_request = client.build_request(
            "POST",
            upstream + "/chat/completions",
            content=await request.get_data(),
            headers={"content-type": "application/json"},
        )
        answer = await client.send(upstream_request, stream=True)

        async def relayed() -> AsyncIterator[bytes]:
            try:
                async for data in answer.aiter_raw():
                    yield data
            finally:
                with trio.CancelScope(shield=True):
                    await answer.aclose()

        response = Response(relayed(), mimetype="text/event-stream")
        response.timeout = None
        return response

    @app.post("/hop/v1/chat/completions")
    async def stream_through_a_task() -> Response:
        client = relay_client()
        body = await request.get_data()
        into_channel, out_of_channel = trio.open_memory_channel[bytes](64)

        async def upstream_call() -> None:
            with contextlib.suppress(trio.BrokenResourceError, httpx.HTTPError):
                async with (
                    into_channel,
                    client.stream(
                        "POST",
                        upstream + "/chat/completions",
                        content=body,
                        headers={"content-type": "application/json"},
                    ) as answer,
                ):
                    async for data in answer.aiter_raw():
                        await into_channel.send(data)

        app.nursery.start_soon(upstream_call)

        async def relayed() -> AsyncIterator[bytes]:
            async with out_of_channel:
                async for data in out_of_channel:
                    yield data

        response = Response(relayed(), mimetype="text/event-stream")
        response.timeout = None
        return response

    @app.post("/stream/v1/chat/completions")
    async def generated_stream() -> Response:
        await request.get_data()

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(STREAM_CHUNKS):
                delta = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
                await trio.sleep(STREAM_GAP)
            yield b"data: [DONE]\n\n"

        response = Response(chunks(), mimetype="text/event-stream")
        response.timeout = None  # Quart would cut the stream after 60 s
        return response

    return app


async def main(port: int, upstream: str) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.backlog = 4096  # as relaybox serve
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(hypercorn.trio.serve, create(upstream), config))  # type: ignore[arg-type]
        settle_the_heap()  # the garbage collector's settings relaybox serves with, so neither has an edge


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    arguments = parser.parse_args()
    trio.run(main, arguments.port, arguments.upstream)
