"""The dashboard in a real browser (Debian's Chromium driven by Playwright, `tests/dashboard_browser.py`)
against a relaybox seeded with several days of traffic across several providers."""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trio
from relaybox.actors.breaker import BreakerPolicy
from relaybox.storage.records import AttemptRecord, Budget, Window

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import eventually, openai_provider, serve, settings_for

REPO = Path(__file__).parent.parent
PAGES = ("overview", "providers", "requests", "actors")


def seeded_traffic(now: float) -> list[AttemptRecord]:
    """Five days of attempts over three providers, with failures, fallbacks and savings."""
    rng = random.Random(7)
    records = []
    for index in range(300):
        created = now - rng.uniform(0, 5 * 86400)
        provider, model, price = rng.choice(
            [("fast", "gpt-4o-mini", 0.0004), ("dead", "gpt-4o", 0.006), ("spare", "gpt-4o-mini", 0.0004)]
        )
        failed = provider == "dead" and rng.random() < 0.4
        records.append(
            AttemptRecord(
                id=str(uuid.uuid4()),
                created_at=created,
                request_group_id=str(uuid.uuid4()),
                attempt=1,
                provider=provider,
                model_selected=model,
                model_requested="gpt-4o" if index % 3 == 0 else "auto",
                router_reason="seeded",
                task_category=rng.choice(["code_generation", "simple_qa", "summarization"]),
                status="server_error" if failed else "success",
                tokens_in=rng.randint(100, 3000),
                tokens_out=rng.randint(20, 800),
                cost_usd=0.0 if failed else price,
                baseline_cost_usd=0.006 if index % 3 == 0 and not failed else None,
                latency_ms=rng.randint(200, 3000),
                ttft_ms=rng.randint(80, 900),
                fallback_used=index % 17 == 0,
                cache_hit=index % 11 == 0,
                heuristic_score=None if failed else rng.randint(60, 100),
            )
        )
    return records


async def test_every_dashboard_page_renders_the_seeded_traffic(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path,
        openai_provider("fast", fake_openai.base_url),
        openai_provider("dead", "http://127.0.0.1:9/v1", models=("gpt-4o",)),
        openai_provider("spare", fake_openai.base_url),
        openai_provider("gone", "http://127.0.0.1:9/v1"),
        breaker=BreakerPolicy(consecutive_failures=3, cooldown=600.0),
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        await relay.system.storage.insert_records(seeded_traffic(time.time()))
        for _ in range(3):  # and some live traffic through the API
            answer = await client.post(
                "/v1/chat/completions",
                json={"model": "fast:gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200
        for _ in range(3):  # "dead" fails until its breaker opens: the offline alert
            failed = await client.post(
                "/v1/chat/completions",
                json={"model": "dead:gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert failed.status_code >= 500
        # 90% of the daily budget spent: the budget alert.
        now = time.time()
        await relay.system.storage.put_budget(Budget("daily", 1.0, True))
        await relay.system.storage.reserve("seeded", 0.9, [Window("daily", now - 86400, 1.0)], now)
        await relay.system.storage.settle("seeded", 0.9)
        await eventually(lambda: relay.system.recorder.written >= 6, within=10)
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url], capture_stdout=True, cwd=REPO
        )
        seen = json.loads(browsed.stdout)
        providers = {p["id"]: p for p in (await client.get("/api/providers")).json()["data"]}

    assert seen["errors"] == []
    assert len(seen["kpis"]) == 6 and any("306" in kpi for kpi in seen["kpis"]), seen["kpis"]
    assert (
        6 <= int(seen["requests_today"].replace(",", "")) < 306
    )  # today: the live requests and a share of the seeded
    assert seen["cost_legend"] == ["dead", "fast", "spare"] and seen["cost_bars"] == 3
    assert seen["model_bars"] >= 3
    assert any("Paid API" in badge for badge in seen["badges"]), seen["badges"]
    assert any("dead is unreachable" in alert and "fall back" in alert for alert in seen["alerts"]), seen[
        "alerts"
    ]
    assert any("daily budget is 90.0% spent" in alert for alert in seen["alerts"]), seen["alerts"]
    assert "❌" in seen["diagnosis"] and "refused" in seen["diagnosis"].lower(), seen["diagnosis"]
    assert seen["matrix_rows"] > 0, seen
    assert seen["spare_enabled_after_reload"] is False and providers["spare"]["enabled"] is False
    assert seen["request_rows"] > 10 and set(seen["filtered_providers"]) <= {"dead", "dead ⚡"}
    assert {"root", "router", "recorder", "fast", "dead", "spare"} <= set(seen["actors"]), seen["actors"]
    assert any("Offline" in line and "failed: 3" in line for line in seen["actor_details"]), seen[
        "actor_details"
    ]
    assert any(line.startswith("storage: sqlite up · written: ") for line in seen["actor_details"])
    assert seen["phone_overflow"] is False
    for page in PAGES:
        assert (REPO / "tests/artifacts" / f"dashboard-{page}.png").stat().st_size > 10_000


async def test_the_dashboard_says_when_the_request_log_cannot_reach_its_database(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path,
        openai_provider("fast", fake_openai.base_url),
        database_url="postgresql://postgres@127.0.0.1:9/unreachable",
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        answer = await client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert answer.status_code == 200  # the request does not wait on the database
        await eventually(lambda: relay.system.recorder.storage_up is False, within=10)
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url, "alerts"],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    assert any("request log cannot reach its postgres database" in alert for alert in seen["alerts"]), seen
    assert "unavailable" in seen["status"] or "database" in seen["status"], seen


async def test_with_client_keys_the_dashboard_asks_for_one(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    from relaybox.protocol.keys import key_hash, new_key, shown_prefix
    from relaybox.storage.records import ApiKey

    key, intern = new_key(), new_key()
    async with serve(settings_for(tmp_path, openai_provider("fast", fake_openai.base_url))) as relay:
        await relay.system.storage.create_key(
            ApiKey("ops", key_hash(key), shown_prefix(key), True, time.time())
        )
        await relay.system.storage.create_key(
            ApiKey(
                "intern",
                key_hash(intern),
                shown_prefix(intern),
                False,
                time.time(),
                tpm=20000,
                budget_usd=5.0,
                budget_period="monthly",
            )
        )
        assert relay.system.keys is not None
        await relay.system.keys.load()
        async with httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client:
            for _ in range(2):
                answer = await client.post(
                    "/v1/chat/completions",
                    json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {intern}", "cache-control": "no-store"},
                )
                assert answer.status_code == 200
        await eventually(lambda: relay.system.recorder.written >= 2, within=10)
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url, "key", key],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    assert seen["asked"] and "API key" in seen["status_before"] and seen["form_hidden_after"]
    assert set(seen["keys"]) == {"intern", "ops"}, "an admin key sees every key's use"
    row = seen["keys"]["intern"].split("\t")
    assert [cell.strip() for cell in row[1:3]] == ["client", "2"], row
    assert "20,000 tok/min" in row[5] and "of $5.00 monthly" in row[6], row


def first_day_traffic(now: float, count: int) -> list[AttemptRecord]:
    """`count` cheap attempts within the last hour: a first day's log."""
    return [
        AttemptRecord(
            id=str(uuid.uuid4()),
            created_at=now - 60 * index,
            request_group_id=str(uuid.uuid4()),
            attempt=1,
            provider="fast",
            model_selected="gpt-4o-mini",
            model_requested="auto",
            router_reason="seeded",
            task_category="simple_qa",
            tokens_in=28,
            tokens_out=7,
            cost_usd=0.0000084,
            latency_ms=640,
            ttft_ms=210,
        )
        for index in range(count)
    ]


@pytest.mark.parametrize("count", [1, 40])
async def test_the_first_day_draws_days_as_days(tmp_path: Path, fake_openai: FakeOpenAI, count: int) -> None:
    """One day of data (or one request): a bar labelled with its date and no wider than a bar
    should be, small costs that are not "$0.0000", budgets without a limit said in words, the
    latency chart in milliseconds."""
    async with serve(settings_for(tmp_path, openai_provider("fast", fake_openai.base_url))) as relay:
        now = time.time()
        await relay.system.storage.insert_records(first_day_traffic(now, count))
        async with httpx.AsyncClient(base_url=relay.base_url) as client:
            assert (await client.post("/v1/respones", json={})).status_code == 404  # a client's typo
        browsed = await trio.run_process(
            [
                sys.executable,
                "-m",
                "tests.dashboard_browser",
                relay.base_url,
                "first-day",
                f"first-day-{count}",
            ],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    assert seen["errors"] == []
    assert seen["cost_ticks"] == [today] and seen["volume_ticks"] == [today], seen
    assert seen["cost_bar_share"] < 0.15 and seen["volume_bar_share"] < 0.15, seen
    assert seen["latency_axis"] == ["milliseconds"] and all(
        t.endswith(" ms") for t in seen["latency_ticks"]
    ), seen
    assert all(cost == "$0.0000084" for cost in seen["request_costs"]) and len(seen["request_costs"]) == count
    assert "no limit set" in seen["budgets_text"] and seen["budget_dials"] == 0, seen
    assert seen["http_errors"] == ["(no route)\t404\t1"], seen["http_errors"]
    assert any(
        f"${count * 0.0000084:.2g}".replace("e-05", "") in kpi or "$0.000" in kpi for kpi in seen["kpis"]
    ), seen["kpis"]
