"""HTTP/2 to an upstream that speaks it (`http2 = true`): an OpenAI-compatible upstream served by
hypercorn, which speaks HTTP/2 in cleartext to a client that starts with it, and says which
protocol each request came over."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from relaybox.web.config.discovery import discover_providers
from relaybox.web.config.settings import ConfigError

from tests.harness import openai_provider, serve, settings_for

COMPLETION = {
    "id": "chatcmpl-h2",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Over h2."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}


class ProtocolRecordingUpstream:
    """Chat completions, whole or streamed, and the HTTP version of every request."""

    def __init__(self) -> None:
        self.versions: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.versions.append(scope["http_version"])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if json.loads(body).get("stream"):
            chunks = [
                {
                    **COMPLETION,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": w}}],
                }
                for w in ("Over ", "h2.")
            ]
            payload = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
            content_type = b"text/event-stream"
        else:
            payload, content_type = json.dumps(COMPLETION).encode(), b"application/json"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]}
        )
        await send({"type": "http.response.body", "body": payload})


async def test_a_provider_with_http2_speaks_it_and_one_without_does_not(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    upstream = ProtocolRecordingUpstream()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(
        lambda task_status: hypercorn.trio.serve(upstream, config, task_status=task_status)
    )
    base_url = binds[0] + "/v1"
    seen: dict[bool, list[str]] = {}
    for http2 in (True, False):
        upstream.versions.clear()
        provider = openai_provider("up", base_url, http2=http2)
        async with (
            serve(settings_for(tmp_path / str(http2), provider)) as relay,
            httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
        ):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            whole = await client.post("/v1/chat/completions", json=body)
            streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
        assert whole.json()["choices"][0]["message"]["content"] == "Over h2."
        assert '"content":"h2."' in streamed.text.replace(" ", "") and streamed.text.rstrip().endswith(
            "[DONE]"
        )
        seen[http2] = list(upstream.versions)
    assert seen == {True: ["2", "2"], False: ["1.1", "1.1"]}


def test_http2_is_read_from_the_configuration_and_must_be_a_boolean() -> None:
    section = {"base_url": "https://example.test/v1", "models": [{"id": "m", "tier": "economy"}]}

    def fast(**changes: object) -> list[tuple[str, bool]]:
        providers = discover_providers({"providers": {"fast": {**section, **changes}}}, {}, [], [])
        return [(p.name, p.http2) for p in providers if p.name == "fast"]

    assert fast(http2=True) == [("fast", True)] and fast() == [("fast", False)]
    with pytest.raises(ConfigError, match="'http2' must be true or false"):
        fast(http2="yes")
