"""Client keys: `relaybox keys`, the checks on every request, who may change settings, and the
rule that relaybox serves beyond loopback only with keys (or an explicit, warned opt-out)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import eventually, openai_provider, serve, settings_for, wait_until_serving

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def relaybox(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "RELAYBOX_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "relaybox.web.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_keys_are_created_once_listed_without_their_secret_and_revoked(tmp_path: Path) -> None:
    created = relaybox("keys", "create", "ci", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("rbx-") and len(key) > 40
    taken = relaybox("keys", "create", "ci", data_dir=tmp_path)
    assert taken.returncode == 1 and "exists" in taken.stderr
    admin = relaybox("keys", "create", "ops", "--admin", "--rpm", "30", data_dir=tmp_path)
    listed = relaybox("keys", "list", data_dir=tmp_path)
    assert relaybox("keys", "create", "bad", "--rpm", "0", data_dir=tmp_path).returncode == 2
    assert admin.returncode == 0 and "admin key 'ops' created" in admin.stdout
    assert key not in listed.stdout and shown_prefix(key) in listed.stdout
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["ci", "ops"]
    assert "in force" in listed.stdout and "admin" in listed.stdout and "30/min" in listed.stdout
    revoked = relaybox("keys", "revoke", "ci", data_dir=tmp_path)
    again = relaybox("keys", "revoke", "ci", data_dir=tmp_path)
    assert revoked.returncode == 0 and again.returncode == 1
    assert "revoked" in relaybox("keys", "list", data_dir=tmp_path).stdout
    stored = (tmp_path / "relaybox.db").read_bytes()
    assert key.encode() not in stored and key_hash(key).encode() in stored  # the hash only


async def test_with_keys_every_request_needs_one_and_settings_need_an_admin(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    member, admin = new_key(), new_key()
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        open_before = await client.post("/v1/chat/completions", json=HELLO)  # no key exists yet
        storage, keys = relay.system.storage, relay.system.keys
        assert keys is not None
        await storage.create_key(ApiKey("ci", key_hash(member), shown_prefix(member), False, time.time()))
        await storage.create_key(ApiKey("ops", key_hash(admin), shown_prefix(admin), True, time.time()))
        await keys.load()
        missing = await client.post("/v1/chat/completions", json=HELLO)
        wrong = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"authorization": "Bearer rbx-nope"}
        )
        bearer = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"authorization": f"Bearer {member}"}
        )
        anthropic_style = await client.post(
            "/v1/messages",
            json={**HELLO, "max_tokens": 10},
            headers={"x-api-key": member, "anthropic-version": "2023-06-01"},
        )
        member_put = await client.put(
            "/api/providers/up", json={"priority": 3}, headers={"x-api-key": member}
        )
        admin_put = await client.put("/api/providers/up", json={"priority": 3}, headers={"x-api-key": admin})
        member_reads = await client.get("/api/stats", headers={"x-api-key": member})
        anonymous_reads = await client.get("/api/stats")
        open_paths = [await client.get(path) for path in ("/ping", "/health", "/dashboard")]
        await eventually(lambda: relay.system.recorder.written >= 3, within=10)
        rows = (await client.get("/api/requests", params={"limit": 5}, headers={"x-api-key": admin})).json()[
            "data"
        ]
        await storage.revoke_key("ci", time.time())
        await keys.load()
        after_revoke = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"authorization": f"Bearer {member}"}
        )
    assert open_before.status_code == 200
    for refused in (missing, wrong, after_revoke):
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert "relaybox keys create" in missing.json()["error"]["message"]
    assert bearer.status_code == 200 and anthropic_style.status_code == 200
    assert member_put.status_code == 403 and member_put.json()["error"]["code"] == "admin_key_required"
    assert (
        admin_put.status_code == 200
        and member_reads.status_code == 200
        and anonymous_reads.status_code == 401
    )
    assert [r.status_code for r in open_paths] == [200, 200, 200]
    assert {row["client"] for row in rows} >= {"key:ci"}


@asynccontextmanager
async def serving_child(data_dir: Path, log: Path, *args: str) -> AsyncIterator[httpx.AsyncClient]:
    """`relaybox serve ARGS` as a child process, with a client for it once it answers."""
    port = free_port()
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "RELAYBOX_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    with log.open("w") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - a child to stop at the end
            [sys.executable, "-m", "relaybox.web.cli", "serve", *args, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                await wait_until_serving(client, within=30)
                yield client
        finally:
            process.terminate()
            await trio.to_thread.run_sync(process.wait)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_serving_beyond_loopback_needs_keys_or_an_explicit_warned_opt_out(tmp_path: Path) -> None:
    refused = await trio.to_thread.run_sync(
        lambda: relaybox("serve", "--host", "0.0.0.0", "--port", str(free_port()), data_dir=tmp_path)
    )
    assert refused.returncode == 2 and "refusing to serve on 0.0.0.0 with no client keys" in refused.stderr
    assert "Traceback" not in refused.stderr
    log = tmp_path / "serve.log"
    async with serving_child(tmp_path, log, "--host", "0.0.0.0", "--insecure-no-auth"):
        pass
    assert "WARNING: serving on 0.0.0.0 with no client keys (--insecure-no-auth)" in log.read_text()
    created = await trio.to_thread.run_sync(lambda: relaybox("keys", "create", "lan", data_dir=tmp_path))
    assert created.returncode == 0
    async with serving_child(tmp_path, log, "--host", "0.0.0.0") as client:
        unauthenticated = await client.get("/v1/models")
    assert unauthenticated.status_code == 401 and "WARNING" not in log.read_text()


async def test_lan_sharing_binds_every_interface_and_prints_the_addresses_to_use(tmp_path: Path) -> None:
    from relaybox.web.cli import lan_addresses

    refused = await trio.to_thread.run_sync(
        lambda: relaybox("serve", "--lan", "--port", str(free_port()), data_dir=tmp_path)
    )
    assert refused.returncode == 2 and "refusing to serve on 0.0.0.0" in refused.stderr
    await trio.to_thread.run_sync(lambda: relaybox("keys", "create", "office", data_dir=tmp_path))
    log = tmp_path / "lan.log"
    async with serving_child(tmp_path, log, "--lan"):
        await eventually(
            lambda: "/v1/models" in log.read_text() or "no network address" in log.read_text(), within=10
        )
    printed = log.read_text()
    addresses = lan_addresses()
    assert all(
        re.search(rf"OpenAI base URL  http://{re.escape(address)}:\d+/v1", printed) for address in addresses
    )
    assert addresses or "no network address found besides loopback" in printed
    assert "127.0.0.1" not in addresses


async def test_a_keys_request_limit_holds_across_instances_sharing_a_database(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    key = new_key()
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with (
        serve(settings) as one,
        serve(settings) as two,
        httpx.AsyncClient(base_url=one.base_url, timeout=10) as first,
        httpx.AsyncClient(base_url=two.base_url, timeout=10) as second,
    ):
        await one.system.storage.create_key(
            ApiKey("batch", key_hash(key), shown_prefix(key), False, time.time(), rpm=3)
        )
        for relay in (one, two):
            assert relay.system.keys is not None
            await relay.system.keys.load()
        auth = {"authorization": f"Bearer {key}"}
        if time.time() % 60 > 50:  # all six requests within one minute window
            await trio.sleep(61 - time.time() % 60)
        statuses = []
        for client in (first, second, first, second, first):
            statuses.append((await client.post("/v1/chat/completions", json=HELLO, headers=auth)).status_code)
        refused = await second.post("/v1/chat/completions", json=HELLO, headers=auth)
        dashboard_reads = await first.get("/api/stats", headers=auth)  # not a model call: not counted
    assert statuses == [200, 200, 200, 429, 429], "three a minute, whichever instance is asked"
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert dashboard_reads.status_code == 200
