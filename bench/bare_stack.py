"""The stack's own ceiling: a bare quart-trio app on hypercorn, as relaybox is served.

    python -m bench.bare_stack --port P --upstream http://127.0.0.1:U/v1

Three endpoints, nothing else: `POST /static/v1/chat/completions` answers a fixed completion
without calling anything; `POST /proxy/v1/chat/completions` reads the body and passes it to the
upstream with one shared httpx client, returning what comes back (the naive pass-through);
`POST /stream/v1/chat/completions` generates an SSE stream of 20 chunks 100 ms apart itself;
`POST /relay/v1/chat/completions` streams the upstream's answer through unread (its bytes as they
arrive, over 16 httpx clients as relaybox spreads its connections). The benchmarks load these in
the same run as relaybox, so relaybox's figures can be read against what the design card's stack
does with no gateway in it.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import AsyncIterator

import httpx
import hypercorn.trio
import trio
from hypercorn.config import Config
from quart import Response, request
from quart_trio import QuartTrio

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

    relay_clients: list[httpx.AsyncClient] = []
    turns = itertools.count()

    @app.post("/relay/v1/chat/completions")
    async def stream_through() -> Response:
        if not relay_clients:
            limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
            relay_clients.extend(httpx.AsyncClient(limits=limits, timeout=None) for _ in range(16))
        client = relay_clients[next(turns) % len(relay_clients)]
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
    await hypercorn.trio.serve(create(upstream), config)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    arguments = parser.parse_args()
    trio.run(main, arguments.port, arguments.upstream)
