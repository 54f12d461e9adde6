"""A client that hangs up mid-stream cancels the upstream work at once."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, settings_for


async def open_stream(base_url: str, payload: bytes) -> trio.socket.SocketType:
    host, port = base_url.removeprefix("http://").split(":")
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect((host, int(port)))
    await sock.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s:%s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (host.encode(), port.encode(), len(payload), payload)
    )
    return sock


async def test_hang_up_mid_stream_closes_the_upstream_stream(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.push(Reply(text="z" * 50, pieces=50, chunk_delay=0.2))  # ten seconds of stream
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        sock = await open_stream(
            relay.base_url,
            b'{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "go"}]}',
        )
        received = b""
        with trio.fail_after(10):
            while b'"content":"z"' not in received:
                received += await sock.recv(65536)
        provider = relay.system.providers["up"]
        assert provider.statistics().in_flight == 1
        sock.close()
        took = await eventually(lambda: provider.statistics().in_flight == 0, within=1.0)
        outcomes = relay.system.router.statistics().outcomes
    assert took < 1.0
    assert outcomes["up/gpt-4o-mini"].cancelled == 1
    assert provider.breaker.statistics(trio.current_time()).window_total == 0, "a hang-up is not a failure"


async def test_hang_up_before_the_first_token_cancels_the_attempt(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(delay=10))
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        sock = await open_stream(
            relay.base_url,
            b'{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "go"}]}',
        )
        provider = relay.system.providers["up"]
        await eventually(lambda: provider.statistics().in_flight == 1, within=5.0)
        sock.close()
        took = await eventually(lambda: provider.statistics().in_flight == 0, within=1.0)
    assert took < 1.0
