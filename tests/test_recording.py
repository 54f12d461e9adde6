"""Every attempt is recorded off the request path, and the /api endpoints read it back."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, settings_for

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Write a haiku about trio"}]}


async def test_attempts_are_recorded_and_linked(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(status=503))
    settings = settings_for(
        tmp_path,
        openai_provider("primary", fake_openai.base_url),
        openai_provider("backup", fake_openai_backup.base_url),
        default_provider="primary",
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, headers={"user-agent": "test-client/1.0"}) as client,
    ):
        answered = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
        task_id = answered.headers["x-task-id"]
        recorder = relay.system.recorder
        await eventually(lambda: recorder.written >= 2, within=5)
        attempts = (await client.get("/api/requests", params={"group": _group(task_id)})).json()["data"]
        rated = await client.post("/api/feedback", json={"taskId": task_id, "rating": 4})
        after = (await client.get("/api/requests", params={"provider": "backup"})).json()["data"]
        stats = (await client.get("/api/stats", params={"days": 1})).json()
    by_attempt = {a["attempt"]: a for a in attempts}
    first, second = by_attempt[1], by_attempt[2]
    assert (first["provider"], first["status"], first["fallback_used"]) == ("primary", "server_error", False)
    assert "HTTP 503" in first["error_message"] and first["cli_success"] is False
    assert (second["provider"], second["status"], second["fallback_used"]) == ("backup", "success", True)
    assert second["tokens_in"] == 11 and second["tokens_out"] == 7 and second["streaming"] is True
    assert second["cost_usd"] > 0 and second["ttft_ms"] is not None and second["heuristic_score"] == 100
    assert second["client"] == "test-client/1.0" and second["prompt_summary"] == "Write a haiku about trio"
    assert second["model_requested"] == "gpt-4o-mini" and "exact model id" in second["router_reason"]
    assert rated.status_code == 200 and after[0]["user_rating"] == 4
    summary = stats["summary"]
    assert summary["requests"] == 1 and summary["success_rate"] == 0.5
    assert {r["provider"] for r in stats["providers"]} == {"primary", "backup"}


def _group(task_id: str) -> str:
    from relaybox.storage.records import group_id

    return group_id(task_id)


async def test_budget_and_provider_settings_api(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path,
        openai_provider("primary", fake_openai.base_url),
        openai_provider("backup", fake_openai_backup.base_url),
        default_provider="primary",
    )
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        put = await client.put("/api/budget", json={"period": "daily", "limit_usd": 2.5, "enabled": True})
        bad = await client.put("/api/budget", json={"period": "hourly", "limit_usd": 1})
        budget = (await client.get("/api/budget")).json()["data"]
        disabled = await client.put("/api/providers/primary", json={"enabled": False, "priority": 5})
        routed = await client.post("/v1/chat/completions", json=HELLO)
        listed = (await client.get("/api/providers")).json()["data"]
        missing = await client.put("/api/providers/nope", json={"enabled": False})
    assert put.status_code == 200 and bad.status_code == 400 and bad.json()["error"]["param"] == "period"
    daily = next(b for b in budget if b["period"] == "daily")
    assert daily["limit_usd"] == 2.5 and daily["enabled"] is True and daily["spent_usd"] == 0
    assert disabled.status_code == 200 and routed.headers["x-provider"] == "backup"
    primary = next(p for p in listed if p["id"] == "primary")
    assert primary["enabled"] is False and primary["health"] == "healthy" and "sk-" not in str(listed)
    assert missing.status_code == 404
    # The switch is persisted: a restart keeps the provider off.
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        again = await client.post("/v1/chat/completions", json=HELLO)
    assert again.headers["x-provider"] == "backup"
    assert len(fake_openai.chat_requests()) == 0


async def test_records_survive_a_restart_of_relaybox(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url, slots=32, mailbox=32))
    statuses: list[int] = []

    async def one(client: httpx.AsyncClient) -> None:
        statuses.append((await client.post("/v1/chat/completions", json=HELLO)).status_code)

    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
        trio.open_nursery() as nursery,
    ):
        for _ in range(20):
            nursery.start_soon(one, client)
    # Shut down right after answering: the recorder drains before the process would exit.
    assert statuses == [200] * 20
    async with serve(settings) as relay:
        assert await relay.system.storage.record_count() == 20


async def test_metrics_in_prometheus_format(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.push(Reply(status=500))
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        await client.post("/v1/chat/completions", json=HELLO)
        await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['relaybox_attempts_total{provider="up",model="gpt-4o-mini",outcome="success"}'] == 1
    assert samples['relaybox_attempts_total{provider="up",model="gpt-4o-mini",outcome="server_error"}'] == 1
    assert samples['relaybox_tokens_total{provider="up",model="gpt-4o-mini",direction="in"}'] == 11
    assert samples['relaybox_cost_usd_total{provider="up",model="gpt-4o-mini"}'] > 0
    assert samples['relaybox_breaker_state{provider="up"}'] == 0
    assert samples['relaybox_mailbox_depth{actor="router"}'] == 0
    assert "relaybox_recorder_written_total" in samples and "sk-test" not in response.text
    assert samples["relaybox_overhead_seconds_count"] == 1  # the failed request never began an answer
    assert samples['relaybox_overhead_seconds_bucket{le="+Inf"}'] == 1


async def test_connection_test_explains_what_to_do(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    # Port 9 (discard): nothing listens there. A port freed by the test itself could be taken by
    # another server of the suite before the request goes out.
    dead = "http://127.0.0.1:9/v1"
    fake_openai.replies.push(Reply(text="OK"), Reply(status=401, error_message="Incorrect API key"))
    settings = settings_for(
        tmp_path,
        openai_provider("up", fake_openai.base_url),
        openai_provider("openai", fake_openai.base_url),
        openai_provider("gone", dead),
    )
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        good = (await client.post("/api/providers/up/test", json={})).json()
        bad_key = (await client.post("/api/providers/openai/test", json={})).json()
        refused = (await client.post("/api/providers/gone/test", json={})).json()
        missing = await client.post("/api/providers/nope/test", json={})
        await eventually(lambda: relay.system.recorder.written >= 3, within=10)
        logged = await relay.system.storage.recent(limit=10)
        evidence = relay.system.router.statistics()
    assert sorted(row.status for row in logged) == ["test", "test_failed", "test_failed"], (
        "tagged, not traffic"
    )
    assert evidence.evidence == (), "a connection test teaches routing nothing"
    assert good["ok"] and good["diagnosis"].startswith("✅ Connected!") and good["answer"] == "OK"
    assert not bad_key["ok"] and bad_key["diagnosis"] == "❌ The API key was refused. Check OPENAI_API_KEY."
    assert not refused["ok"] and refused["diagnosis"].startswith("❌ Connection refused at 127.0.0.1:")
    assert missing.status_code == 404


async def test_in_chat_feedback_command_rates_without_calling_a_model(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        first = await client.post("/v1/chat/completions", json=HELLO)
        await eventually(lambda: relay.system.recorder.written >= 1, within=5)
        reply = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "/feedback 2"}]},
        )
        streamed = await client.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "stream": True,
                "messages": [{"role": "user", "content": f"/feedback 5 {first.headers['x-task-id']}"}],
            },
        )
        rated = (await client.get("/api/requests")).json()["data"][0]
    assert reply.json()["choices"][0]["message"]["content"] == "Thanks: rated 2/5."
    assert reply.headers["x-provider"] == "relaybox"
    assert "Thanks: rated 5/5." in streamed.text and streamed.text.rstrip().endswith("data: [DONE]")
    assert rated["user_rating"] == 5
    assert len(fake_openai.chat_requests()) == 1, "no model was called for feedback"
