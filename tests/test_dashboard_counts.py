"""What the dashboard counts, and what it is told: requests, attempts and background calls apart, on
SQLite and PostgreSQL alike; the overview's summary over them; start-up's advice without secrets."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from relaybox.storage.contract import Storage
from relaybox.storage.records import AttemptRecord
from relaybox.web.config import load_settings

from tests.harness import serve, settings_for
from tests.storage_fixtures import storage_backend

NOW = 1_800_000_000.0  # 08:00 UTC: every row below is on one day


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with storage_backend(request.param, tmp_path) as backend:
        await backend.migrate()
        yield backend


def traffic(now: float) -> list[AttemptRecord]:
    """Seven client requests (answered at once, after a fallback, by joining another, from the
    cache, by a tool loop's two steps; failed after two attempts; cancelled) and six background
    calls (a judge's verdict, a failed shadow answer, three MCP tool calls, a connection test)."""
    groups = [str(uuid.uuid4()) for _ in range(9)]

    def attempt(group: int, number: int, provider: str, status: str, **fields: object) -> AttemptRecord:
        values: dict[str, object] = {
            "id": str(uuid.uuid4()),
            "created_at": now - 60,
            "request_group_id": groups[group],
            "attempt": number,
            "provider": provider,
            "model_selected": "m",
            "task_category": "qa",
            "status": status,
            "cost_usd": 0.0,
            "latency_ms": 100,
            **fields,
        }
        return AttemptRecord(**values)  # type: ignore[arg-type]

    return [
        attempt(0, 1, "a", "success", cost_usd=0.01),
        attempt(0, 0, "a", "judge", cost_usd=0.01),
        attempt(0, 0, "b", "shadow_failed"),
        attempt(1, 1, "b", "server_error"),
        attempt(1, 2, "a", "success", cost_usd=0.01, fallback_used=True),
        attempt(2, 1, "b", "timeout"),
        attempt(2, 2, "a", "transport", fallback_used=True),
        attempt(3, 1, "a", "cancelled"),
        attempt(4, 1, "a", "deduplicated"),
        attempt(5, 1, "a", "success", cache_hit=True),
        attempt(6, 0, "mcp:files", "tool", model_selected="read_file"),
        attempt(6, 0, "mcp:files", "tool_failed", model_selected="write_file"),
        attempt(7, 1, "a", "test", cost_usd=0.01),
        attempt(8, 1, "a", "success"),
        attempt(8, 0, "mcp:files", "tool", model_selected="read_file"),
        attempt(8, 2, "a", "success"),
    ]


async def test_requests_attempts_and_background_calls_are_counted_apart(storage: Storage) -> None:
    await storage.insert_records(traffic(NOW))
    stats = await storage.stats(days=1, now=NOW)
    # How each request ended, by its last attempt: the tool loop answered once, not twice.
    assert [(r["requests"], r["answered"], r["cancelled"]) for r in stats["outcomes"]] == [(7, 5, 1)]
    totals = stats["totals"][0]
    assert (totals["requests"], totals["attempts"]) == (7, 10), "background calls are neither"
    assert (totals["successes"], totals["cancelled_attempts"]) == (6, 1)
    assert totals["providers_active"] == 2, "an MCP server is not a provider"
    assert totals["cost_usd"] == pytest.approx(0.04), "every call's cost, background ones included"
    assert [(r["attempts"], r["background"]) for r in stats["volume_by_day"]] == [(10, 6)]
    assert sorted((r["status"], r["attempts"]) for r in stats["background"]) == [
        ("judge", 1),
        ("shadow_failed", 1),
        ("test", 1),
        ("tool", 2),
        ("tool_failed", 1),
    ]
    assert sum(r["cost_usd"] for r in stats["background"]) == pytest.approx(0.02)
    assert sorted((r["provider"], r["attempts"]) for r in stats["models"]) == [("a", 8), ("b", 2)]
    # Per attempt, the cancelled one left out: a's 6 answers of 7, b's none of 2.
    rates = {r["provider"]: (r["successes"], r["attempts"]) for r in stats["success_rates"]}
    assert rates == {"a": (6, 7), "b": (0, 2)}
    # A provider's calls include its background calls to models (latency is latency), not tools.
    providers = {r["provider"]: (r["attempts"], r["successes"]) for r in stats["providers"]}
    assert providers == {"a": (10, 8), "b": (3, 0)}
    assert {r["provider"] for r in stats["cost_by_day"]} == {"a", "b"}
    assert [(r["status"], r["attempts"]) for r in stats["learning_spend"]] == [
        ("judge", 1),
        ("shadow_failed", 1),
    ]


async def test_a_request_is_counted_on_the_day_it_began_within_the_periods_days(storage: Storage) -> None:
    """The request log is read over the rollup's whole days: a request from before them is not."""
    day = 86400.0
    today_began = NOW - NOW % day
    records = traffic(today_began + 60)[:2]  # answered today, with a judge's verdict
    records.append(attempt_at(today_began - 60))  # yesterday, 23:59
    await storage.insert_records(records)
    today = await storage.stats(days=0, now=NOW)
    both = await storage.stats(days=1, now=NOW)
    assert [(r["requests"], r["answered"]) for r in today["outcomes"]] == [(1, 1)]
    assert [r["requests"] for r in both["outcomes"]] == [1, 1]
    assert today["totals"][0]["requests"] == 1 and both["totals"][0]["requests"] == 2


def attempt_at(created_at: float) -> AttemptRecord:
    return AttemptRecord(
        id=str(uuid.uuid4()),
        created_at=created_at,
        request_group_id=str(uuid.uuid4()),
        attempt=1,
        provider="a",
        model_selected="m",
    )


async def test_the_overviews_summary_counts_as_its_cards_say(tmp_path: Path) -> None:
    async with (
        serve(settings_for(tmp_path)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        await relay.system.storage.insert_records(traffic(time.time()))
        summary = (await client.get("/api/stats", params={"days": 1})).json()["summary"]
    assert {k: summary[k] for k in ("requests", "attempts", "answered", "failed", "cancelled")} == {
        "requests": 7,
        "attempts": 10,
        "answered": 5,
        "failed": 1,
        "cancelled": 1,
    }
    assert summary["answered_rate"] == pytest.approx(5 / 6), "per request, after fallbacks"
    assert summary["success_rate"] == pytest.approx(6 / 9), "per attempt, as the success-rate chart"
    assert summary["cache_hit_rate"] == pytest.approx(1 / 7), "of requests"
    assert (summary["background_calls"], summary["background_failed"]) == (6, 2)


async def test_start_ups_advice_reaches_the_dashboard_without_secrets(tmp_path: Path) -> None:
    """What `relaybox serve` printed, as /api/providers gives it to the dashboard's empty state: a
    URL's user and query values blanked, in case they carry a credential."""
    custom = (
        '[{"id": "lan", "baseUrl": "https://bob:hunter2@llm.example/v1?api-key=sk-abc&v=2", "models": ["m"]}]'
    )
    discovered = load_settings(
        env={
            "PATH": str(tmp_path),
            "HOME": str(tmp_path),
            "OLLAMA_BASE_URL": "http://127.0.0.1:9",
            "CUSTOM_PROVIDERS": custom,
        }
    )
    async with (
        serve(settings_for(tmp_path, notes=discovered.notes)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.get("/api/providers")
    found = response.json()["discovery"]
    assert "hunter2" not in response.text and "sk-abc" not in response.text
    assert (
        "lan: active (custom OpenAI-compatible provider at https://…@llm.example/v1?api-key=…&v=…)"
        in found["notes"]
    )
    assert "openai: inactive (set OPENAI_API_KEY to enable)" in found["notes"]
    assert found["example_config"].endswith("relaybox.example.toml")
