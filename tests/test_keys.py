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
import pytest
import trio
from relaybox.actors.key_ring import KeyRing
from relaybox.protocol.errors import RelayError
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import Running, eventually, openai_provider, serve, settings_for, wait_until_serving
from tests.storage_fixtures import storage_backend

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
    assert relaybox("keys", "create", "bad", "--rpm", "0", data_dir=tmp_path).returncode == 2
    limited = relaybox(
        "keys", "create", "intern", "--tpm", "5000", "--budget", "$2.5/week", data_dir=tmp_path
    )
    assert limited.returncode == 0, limited.stderr
    for bad in (["--budget", "5"], ["--budget", "0/day"], ["--budget", "5/year"], ["--tpm", "x"]):
        refused = relaybox("keys", "create", "bad", *bad, data_dir=tmp_path)
        assert refused.returncode == 2, bad
        assert "USD/PERIOD" in refused.stderr or "whole number" in refused.stderr, refused.stderr
    listed = relaybox("keys", "list", data_dir=tmp_path)
    assert admin.returncode == 0 and "admin key 'ops' created" in admin.stdout
    assert key not in listed.stdout and shown_prefix(key) in listed.stdout
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["ci", "intern", "ops"]
    assert "5000 tok/min, $2.5/weekly" in listed.stdout
    assert "in force" in listed.stdout and "admin" in listed.stdout and "30 req/min" in listed.stdout
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
    assert "access: OPEN to the network with no key (--insecure-no-auth)" in log.read_text()
    created = await trio.to_thread.run_sync(lambda: relaybox("keys", "create", "lan", data_dir=tmp_path))
    assert created.returncode == 0
    async with serving_child(tmp_path, log, "--host", "0.0.0.0") as client:
        unauthenticated = await client.get("/v1/models")
    assert unauthenticated.status_code == 401 and "WARNING" not in log.read_text()
    assert "access: 1 client key(s) in force (0 admin): every request needs one" in log.read_text()


async def test_lan_sharing_binds_every_interface_and_prints_the_addresses_to_use(tmp_path: Path) -> None:
    from relaybox.web.addresses import lan_addresses

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
    async with two_instances_sharing_a_key(tmp_path, fake_openai, rpm=3) as ((_, first), (_, second), auth):
        await within_one_minute()
        statuses = []
        for client in (first, second, first, second, first):
            statuses.append((await client.post("/v1/chat/completions", json=HELLO, headers=auth)).status_code)
        refused = await second.post("/v1/chat/completions", json=HELLO, headers=auth)
        dashboard_reads = await first.get("/api/stats", headers=auth)  # not a model call: not counted
    assert statuses == [200, 200, 200, 429, 429], "three a minute, whichever instance is asked"
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert dashboard_reads.status_code == 200


@asynccontextmanager
async def two_instances_sharing_a_key(
    tmp_path: Path, fake_openai: FakeOpenAI, **limits: int
) -> AsyncIterator[
    tuple[tuple[Running, httpx.AsyncClient], tuple[Running, httpx.AsyncClient], dict[str, str]]
]:
    """Two relaybox instances on one database, each with a client, and the headers of a key with
    `limits` that both have loaded."""
    key = new_key()
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with (
        serve(settings) as one,
        serve(settings) as two,
        httpx.AsyncClient(base_url=one.base_url, timeout=10) as first,
        httpx.AsyncClient(base_url=two.base_url, timeout=10) as second,
    ):
        await one.system.storage.create_key(
            ApiKey("shared", key_hash(key), shown_prefix(key), False, time.time(), **limits)
        )
        for relay in (one, two):
            assert relay.system.keys is not None
            await relay.system.keys.load()
        yield (one, first), (two, second), {"authorization": f"Bearer {key}"}


async def within_one_minute() -> None:
    """Start a test of per-minute limits early in a minute, so it cannot straddle two."""
    if time.time() % 60 > 45:
        await trio.sleep(61 - time.time() % 60)


async def test_a_keys_token_limit_holds_across_instances_sharing_a_database(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.default = Reply(prompt_tokens=60, completion_tokens=40)  # 100 a request
    async with two_instances_sharing_a_key(tmp_path, fake_openai, tpm=150) as (
        (one, first),
        (two, second),
        auth,
    ):
        await within_one_minute()
        answered = [await first.post("/v1/chat/completions", json=HELLO, headers=auth)]
        await eventually(lambda: one.system.recorder.written >= 1, within=10)
        answered.append(await second.post("/v1/chat/completions", json=HELLO, headers=auth))
        await eventually(lambda: two.system.recorder.written >= 1, within=10)
        refused = await first.post("/v1/chat/completions", json=HELLO, headers=auth)
    assert [r.status_code for r in answered] == [200, 200], "100 then 200 tokens: under 150 when each began"
    error = refused.json()["error"]
    assert refused.status_code == 429 and (error["code"], error["type"]) == ("rate_limit_exceeded", "tokens")
    assert "may use 150 tokens a minute (200 used)" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_a_keys_budget_stops_its_paid_spending_and_the_stats_show_each_keys_use(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # $0.60 per million answer tokens: each request costs about $0.0006 (and reserves as much).
    fake_openai.replies.default = Reply(prompt_tokens=10, completion_tokens=1000)
    body = {"model": "llama3.2:3b", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    intern, lead = new_key(), new_key()
    paid = openai_provider("paid", fake_openai.base_url, models=("llama3.2:3b",))
    async with (
        serve(settings_for(tmp_path, paid)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        storage = relay.system.storage
        created = time.time()
        await storage.create_key(
            ApiKey(
                "intern",
                key_hash(intern),
                shown_prefix(intern),
                False,
                created,
                budget_usd=0.002,
                budget_period="daily",
            )
        )
        await storage.create_key(ApiKey("lead", key_hash(lead), shown_prefix(lead), True, created))
        assert relay.system.keys is not None
        await relay.system.keys.load()
        as_intern, as_lead = {"x-api-key": intern}, {"x-api-key": lead}
        statuses = []
        for i in range(4):
            distinct = {**body, "messages": [{"role": "user", "content": f"question {i}"}]}
            answer = await client.post("/v1/chat/completions", json=distinct, headers=as_intern)
            statuses.append(answer.status_code)
        lead_answer = await client.post("/v1/chat/completions", json=body, headers=as_lead)
        await eventually(lambda: relay.system.recorder.written >= 5, within=10)
        seen_by_intern = (await client.get("/api/stats", params={"days": 1}, headers=as_intern)).json()[
            "keys"
        ]
        seen_by_lead = (await client.get("/api/stats", params={"days": 1}, headers=as_lead)).json()["keys"]
    assert statuses == [200, 200, 200, 429], "three at $0.0006 fit in $0.002; a fourth would not"
    error = answer.json()["error"]
    assert error["code"] == "budget_exceeded" and "key 'intern''s daily budget of $0.00" in error["message"]
    assert lead_answer.status_code == 200, "another key's spending is its own"
    assert [row["key"] for row in seen_by_intern] == ["intern"], "a member key sees only its own use"
    assert [row["key"] for row in seen_by_lead] == ["intern", "lead"]
    mine = seen_by_intern[0]
    assert (mine["requests"], mine["tokens_out"]) == (4, 3000), (
        "the refused request is logged, without tokens"
    )
    assert mine["cost_usd"] == pytest.approx(3 * 0.0006, rel=0.05)
    assert mine["budget"]["limit_usd"] == 0.002 and mine["budget"]["period"] == "daily"
    assert mine["budget"]["spent_usd"] == pytest.approx(mine["cost_usd"], rel=0.01)
    assert seen_by_lead[1]["budget"] is None and seen_by_lead[1]["requests"] == 1


async def test_concurrent_requests_are_counted_in_batches_and_the_limit_stays_exact(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    key = new_key()
    async with (
        serve(
            settings_for(tmp_path, openai_provider("up", fake_openai.base_url, slots=64, mailbox=64))
        ) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        keys = relay.system.keys
        assert keys is not None
        await relay.system.storage.create_key(
            ApiKey("burst", key_hash(key), shown_prefix(key), False, time.time(), rpm=20)
        )
        await keys.load()
        # About batching, not the fail-open deadline: on a loaded machine, wait for every count.
        keys.count_timeout = 30.0
        statuses: list[int] = []

        async def one(i: int) -> None:
            body = {**HELLO, "messages": [{"role": "user", "content": f"request {i}"}]}
            answer = await client.post("/v1/chat/completions", json=body, headers={"x-api-key": key})
            statuses.append(answer.status_code)

        await within_one_minute()
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        metrics = (await client.get("/metrics", headers={"x-api-key": key})).text
    assert 'relaybox_key_checks_total{outcome="limited"} 30' in metrics
    assert sorted(statuses) == [200] * 20 + [429] * 30, "exactly the limit, whichever batch a request joined"
    assert keys.uncounted == 0 and keys.minutes.writes < 50, keys.statistics()


async def test_limits_count_calendar_minutes_so_a_burst_across_a_minutes_end_gets_twice_the_limit(
    tmp_path: Path,
) -> None:
    """What the README warns of: a minute's count starts afresh at :00, so three requests a minute
    may be six within one second that straddles it."""
    minute_end = 1_800_000_000.0  # a whole minute
    key = ApiKey("burst", key_hash(new_key()), "rbx-test", False, minute_end - 3600, rpm=3)
    async with storage_backend("sqlite", tmp_path) as storage, trio.open_nursery() as nursery:
        await storage.migrate()
        ring = KeyRing(storage)
        await nursery.start(ring.run)
        for offset in (-0.5, -0.4, -0.3, 0.1, 0.2, 0.3):
            await ring.within_limit(key, "/v1/chat/completions", minute_end + offset)
        with pytest.raises(RelayError) as refused:
            await ring.within_limit(key, "/v1/chat/completions", minute_end + 0.4)
        nursery.cancel_scope.cancel()
    assert refused.value.status == 429 and "may make 3 requests a minute" in refused.value.message


async def test_a_token_limit_is_overshot_by_the_requests_in_flight_when_it_is_reached(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Tokens are known only once an attempt is recorded: requests begun while the minute's count is
    under the limit all go through, and the next is refused."""
    fake_openai.replies.default = Reply(prompt_tokens=60, completion_tokens=40, delay=0.5)  # 100 each
    async with two_instances_sharing_a_key(tmp_path, fake_openai, tpm=150) as ((one, first), _, auth):
        await within_one_minute()
        statuses: list[int] = []

        async def ask(i: int) -> None:
            body = {**HELLO, "messages": [{"role": "user", "content": f"request {i}"}]}
            statuses.append((await first.post("/v1/chat/completions", json=body, headers=auth)).status_code)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(ask, i)
        await eventually(lambda: one.system.recorder.written >= 3, within=10)
        refused = await first.post("/v1/chat/completions", json=HELLO, headers=auth)
    assert statuses == [200, 200, 200], "300 tokens against a limit of 150: all three were in flight"
    assert (
        refused.status_code == 429
        and "may use 150 tokens a minute (300 used)" in refused.json()["error"]["message"]
    )
