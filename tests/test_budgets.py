"""Budgets: reserve before a paid call, settle after; a race cannot overshoot; free providers keep serving."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import trio
from relaybox.storage.records import Budget

from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import api_provider, eventually, openai_provider, serve, settings_for

# With max_tokens=1000 at $0.60/M output tokens, each paid attempt reserves about $0.0006.
BODY = {"model": "llama3.2:3b", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
LIMIT = 0.00063 * 10


async def concurrent(client: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    responses: list[httpx.Response] = []

    async def one(i: int) -> None:
        # Distinct requests: identical ones in flight would share one upstream call (dedup).
        body = {**BODY, "messages": [{"role": "user", "content": f"request {i}"}]}
        responses.append(await client.post("/v1/chat/completions", json=body))

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return responses


async def test_fifty_concurrent_paid_requests_cannot_overshoot(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.default = Reply(
        delay=2.0
    )  # every reservation is made before any settles, even on a loaded machine
    paid = openai_provider("paid", fake_openai.base_url, models=("llama3.2:3b",), slots=64, mailbox=64)
    async with (
        serve(settings_for(tmp_path, paid)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        # This is about atomic reservations: a slow machine must not turn it into a test of the
        # fail-open timeout (a reservation storage cannot answer in time goes ahead, by design).
        relay.system.budget.timeout = 30.0
        await relay.system.storage.put_budget(Budget("daily", LIMIT, True))
        await eventually(lambda: relay.system.budget.windows(0), within=5)
        responses = await concurrent(client, 50)
        budget = (await client.get("/api/budget")).json()["data"]
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 40
    refused = next(r for r in responses if r.status_code == 429)
    assert "daily budget" in refused.json()["error"]["message"] and "retry-after" in refused.headers
    assert len(fake_openai.chat_requests()) == 10 and relay.system.budget.unchecked == 0
    daily = next(b for b in budget if b["period"] == "daily")
    assert daily["spent_usd"] <= LIMIT


async def test_over_budget_paid_falls_back_to_a_free_provider(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_ollama: FakeOllama
) -> None:
    paid = openai_provider("paid", fake_openai.base_url, models=("llama3.2:3b",))
    free = api_provider("ollama", "local", fake_ollama.base_url, models=("llama3.2:3b",))
    settings = settings_for(tmp_path, paid, free, default_provider="paid")
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        await relay.system.storage.put_budget(Budget("daily", 0.0001, True))
        await eventually(lambda: relay.system.budget.windows(0), within=5)
        response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200 and response.headers["x-provider"] == "local"
    assert "over_budget" in response.headers["x-router-reason"]
    assert fake_openai.chat_requests() == [] and len(fake_ollama.chat_requests()) == 1


async def test_when_storage_is_slow_budgets_let_traffic_through_or_refuse_it_as_configured(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    served: dict[str, list[int]] = {}
    for choice in ("allow", "deny"):
        paid = openai_provider("paid", fake_openai.base_url, models=("llama3.2:3b",), slots=64, mailbox=64)
        settings = settings_for(tmp_path / choice, paid, when_storage_slow=choice)
        async with (
            serve(settings) as relay,
            httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
        ):
            await relay.system.storage.put_budget(Budget("daily", LIMIT, True))
            await eventually(lambda: relay.system.budget.windows(0), within=5)

            async def slow_reserve(*args: object, **kwargs: object) -> None:
                await trio.sleep(60)  # the database does not answer in time

            relay.system.budget.timeout = 0.2
            relay.system.storage.reserve = slow_reserve  # type: ignore[method-assign]
            served[choice] = sorted(r.status_code for r in await concurrent(client, 5))
            refused = (await client.post("/v1/chat/completions", json=BODY)).json()
    assert served["allow"] == [200] * 5, "allow: traffic goes on (the budget may be overshot)"
    assert served["deny"] == [429] * 5
    assert "could not be checked in time" in refused["error"]["message"]


async def spent_at(relay: object, when: float, usd: float) -> None:
    """Spending recorded at `when`, as a settled reservation of an earlier paid attempt."""
    storage = relay.system.storage  # type: ignore[attr-defined]
    held = str(uuid.uuid4())
    assert (await storage.reserve(held, usd, [], when)).granted
    await storage.settle(held, usd)


async def test_a_weekly_budget_counts_the_last_seven_days(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """Spending three days old counts against a weekly budget and not a daily one; spending eight
    days old counts against neither."""
    day = 86400.0
    paid = openai_provider("paid", fake_openai.base_url, models=("llama3.2:3b",))
    async with (
        serve(settings_for(tmp_path, paid)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        now = time.time()
        await spent_at(relay, now - 8 * day, 1.0)
        await spent_at(relay, now - 3 * day, 0.01)
        answered: dict[str, int] = {}
        # Each attempt holds about $0.0006: 0.0103 leaves room for it only if the $0.01 is not counted.
        for period, limit in (("daily", 0.0103), ("weekly", 0.0103), ("weekly", 0.012)):
            for other in {"daily", "weekly"} - {period}:
                await relay.system.storage.put_budget(Budget(other, 0.0, False))
            await relay.system.storage.put_budget(Budget(period, limit, True))
            wanted = [(period, limit)]
            await eventually(
                lambda wanted=wanted: (
                    [(w.period, w.limit_usd) for w in relay.system.budget.windows(0)] == wanted
                ),
                within=10,
            )
            response = await client.post("/v1/chat/completions", json=BODY)
            answered[f"{period} {limit}"] = response.status_code
            if response.status_code == 429:
                assert "weekly budget of $0.01 is spent ($0.01)" in response.json()["error"]["message"]
    assert answered == {"daily 0.0103": 200, "weekly 0.0103": 429, "weekly 0.012": 200}
