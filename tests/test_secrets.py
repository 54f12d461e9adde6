"""No secret leaves relaybox: provider keys and client keys are absent from logs, introspection,
the APIs, metrics, error bodies and the database (a client key's hash excepted), even when an
upstream echoes the key back in its error."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
import trio
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, settings_for

PROVIDER_KEY = "sk-upstream-4f1c9a0e7d2b8c6f5e3a1d0b9c8e7f6a"


async def test_no_secret_appears_anywhere(
    tmp_path: Path, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client_key = new_key()
    fake_openai.replies.push(
        Reply(status=401, error_message=f"Incorrect API key provided: {PROVIDER_KEY}"),
        Reply(status=500, error_message=f"internal error for key {PROVIDER_KEY}"),
        Reply(text="fine"),
    )
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url, api_key=PROVIDER_KEY))
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client:
        await relay.system.storage.create_key(
            ApiKey("ci", key_hash(client_key), shown_prefix(client_key), True, time.time())
        )
        assert relay.system.keys is not None
        await relay.system.keys.load()
        auth = {"authorization": f"Bearer {client_key}"}
        bodies = []
        for _ in range(3):
            answer = await client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                headers=auth,
            )
            bodies.append(answer.text + str(answer.headers))
        bodies.append(
            (
                await client.post("/v1/chat/completions", json={}, headers={"authorization": "Bearer wrong"})
            ).text
        )
        await eventually(lambda: relay.system.recorder.written >= 3, within=10)
        for path in (
            "/actors",
            "/health",
            "/metrics",
            "/api/stats",
            "/api/requests",
            "/api/providers",
            "/api/budget",
            "/v1/models",
        ):
            response = await client.get(path, headers=auth)
            assert response.status_code == 200, path
            bodies.append(response.text)
        bodies.append((await client.post("/api/providers/up/test", headers=auth, json={})).text)
    assert any("401" in b for b in bodies[:3]), "the failures did happen"
    stored = await trio.to_thread.run_sync(
        lambda: b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    )
    for secret in (PROVIDER_KEY, client_key):
        for body in bodies:
            assert secret not in body
        assert secret not in caplog.text
        assert secret.encode() not in stored
    assert key_hash(client_key).encode() in stored
