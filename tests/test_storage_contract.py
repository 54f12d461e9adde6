"""One contract, two back ends: SQLite and the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from relaybox.protocol.routing.learned import Label, features
from relaybox.protocol.routing.promise import Comparison, GainSums
from relaybox.storage.contract import Storage
from relaybox.storage.records import (
    COLUMNS,
    RESERVATION_TTL,
    ApiKey,
    AttemptRecord,
    Budget,
    CachedRow,
    KeyBudget,
    ProviderSetting,
    StoredResponse,
    Window,
)
from relaybox.storage.schema import SQLITE_MIGRATIONS
from relaybox.storage.sqlite import SQLiteStorage

from tests.storage_fixtures import storage_backend

NOW = 1_800_000_000.0  # a fixed "now" for the period queries
DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with storage_backend(request.param, tmp_path) as backend:
        assert await backend.migrate() == len(SQLITE_MIGRATIONS)
        yield backend


def record(**changes: object) -> AttemptRecord:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "created_at": NOW - 60,
        "request_group_id": str(uuid.uuid4()),
        "attempt": 1,
        "provider": "openai",
        "model_selected": "gpt-4o-mini",
        "model_requested": "auto",
        "tokens_in": 100,
        "tokens_out": 20,
        "cost_usd": 0.001,
        "latency_ms": 300,
        "ttft_ms": 120,
        "task_category": "code_gen",
    }
    values.update(changes)
    return AttemptRecord(**values)  # type: ignore[arg-type]


async def test_migrations_are_idempotent(storage: Storage) -> None:
    assert await storage.migrate() == len(SQLITE_MIGRATIONS)
    assert await storage.migrate() == len(SQLITE_MIGRATIONS)
    assert await storage.record_count() == 0


async def test_inserts_are_idempotent_and_round_trip(storage: Storage) -> None:
    first = record(
        streaming=True,
        fallback_used=True,
        cache_hit=False,
        prompt_summary="héllo ✓",
        baseline_cost_usd=0.01,
        error_message=None,
        client="openai-python",
    )
    assert await storage.insert_records([first, record()]) == 2
    assert await storage.insert_records([first]) == 0, "replaying a record changes nothing"
    assert await storage.insert_records([first, first]) == 0
    assert await storage.record_count() == 2
    stats = await storage.stats(days=30, now=NOW)
    assert stats["totals"][0]["attempts"] == 2, "the rollup did not count the replays"
    found = await storage.recent(group=first.request_group_id)
    assert len(found) == 1
    got = found[0]
    assert got.id == first.id and got.prompt_summary == "héllo ✓" and got.streaming and got.fallback_used
    assert got.created_at == pytest.approx(first.created_at) and got.cost_usd == pytest.approx(0.001)
    assert got.baseline_cost_usd == pytest.approx(0.01) and got.client == "openai-python"


async def test_recent_filters_and_order(storage: Storage) -> None:
    await storage.insert_records(
        [
            record(
                created_at=NOW - 30,
                provider="anthropic",
                model_selected="claude-sonnet-4-5",
                status="success",
            ),
            record(created_at=NOW - 20, provider="openai", status="server_error"),
            record(created_at=NOW - 10, provider="openai", status="success"),
        ]
    )
    newest_first = await storage.recent(limit=10)
    assert [r.created_at for r in newest_first] == sorted((r.created_at for r in newest_first), reverse=True)
    assert [r.status for r in await storage.recent(provider="openai")] == ["success", "server_error"]
    assert len(await storage.recent(model="claude-sonnet-4-5")) == 1
    assert len(await storage.recent(status="server_error")) == 1
    assert len(await storage.recent(limit=1)) == 1


async def test_one_clients_requests_and_ratings(storage: Storage) -> None:
    alices, bobs = str(uuid.uuid4()), str(uuid.uuid4())
    await storage.insert_records(
        [
            record(request_group_id=alices, client="key:alice", prompt_summary="alice's secret"),
            record(request_group_id=bobs, client="key:bob", prompt_summary="bob's question"),
        ]
    )
    assert [r.prompt_summary for r in await storage.recent(client="key:bob")] == ["bob's question"]
    assert await storage.recent(client="key:bob", group=alices) == []
    assert not await storage.set_rating(alices, 1, client="key:bob"), "not bob's to rate"
    assert await storage.set_rating(bobs, 4, client="key:bob")
    assert await storage.set_rating(alices, 5)  # no client named: anyone's (an admin, or no keys)
    ratings = {r.client: r.user_rating for r in await storage.recent()}
    assert ratings == {"key:alice": 5, "key:bob": 4}


async def test_rating_lands_on_the_last_attempt(storage: Storage) -> None:
    group = str(uuid.uuid4())
    await storage.insert_records(
        [
            record(request_group_id=group, attempt=1, status="rate_limited"),
            record(request_group_id=group, attempt=2, provider="anthropic"),
        ]
    )
    assert await storage.set_rating(group, 5)
    assert not await storage.set_rating(str(uuid.uuid4()), 3)
    by_attempt = {r.attempt: r.user_rating for r in await storage.recent(group=group)}
    assert by_attempt == {1: None, 2: 5}


async def test_stats_answer_the_dashboards_questions(storage: Storage) -> None:
    group = str(uuid.uuid4())
    await storage.insert_records(
        [
            record(
                created_at=NOW - 2 * DAY,
                cost_usd=0.5,
                provider="anthropic",
                model_selected="claude-sonnet-4-5",
            ),
            record(
                created_at=NOW - 60, request_group_id=group, attempt=1, status="server_error", cost_usd=0.0
            ),
            record(
                created_at=NOW - 50,
                request_group_id=group,
                attempt=2,
                provider="claude-cli",
                model_selected="sonnet",
                fallback_used=True,
                cost_usd=0.0,
                baseline_cost_usd=0.02,
                cache_hit=True,
                tokens_before_compression=1000,
                tokens_after_compression=800,
            ),
            record(created_at=NOW - 40 * DAY, cost_usd=9.0),  # outside a 30-day window
        ]
    )
    stats = await storage.stats(days=30, now=NOW)
    totals = stats["totals"][0]
    assert totals["attempts"] == 3 and totals["requests"] == 2
    assert totals["cost_usd"] == pytest.approx(0.5) and totals["successes"] == 2
    assert totals["fallbacks"] == 1 and totals["cache_hits"] == 1 and totals["providers_active"] == 3
    assert totals["saved_usd"] == pytest.approx(0.02) and totals["tokens_saved"] == 200
    days = [row["day"] for row in stats["volume_by_day"]]
    assert days == sorted(days) and len(days) == 2
    assert {(r["provider"], r["model"]) for r in stats["models"]} == {
        ("anthropic", "claude-sonnet-4-5"),
        ("openai", "gpt-4o-mini"),
        ("claude-cli", "sonnet"),
    }
    assert await storage.set_rating(group, 4)
    assert await storage.set_rating(group, 2), "a new rating replaces the old one"
    stats = await storage.stats(days=30, now=NOW)
    rated = [r for r in stats["success_rates"] if r["provider"] == "claude-cli"]
    assert rated[0]["avg_rating"] == pytest.approx(2)
    rates = {(r["provider"], r["model"]): (r["successes"], r["attempts"]) for r in stats["success_rates"]}
    assert rates[("openai", "gpt-4o-mini")] == (0, 1)
    providers = {r["provider"]: r for r in stats["providers"]}
    assert providers["openai"]["avg_latency_ms"] == pytest.approx(300)
    assert sum(r["cost_usd"] for r in stats["cost_by_day"]) == pytest.approx(0.5)
    one_day = await storage.stats(days=1, now=NOW)
    assert one_day["totals"][0]["attempts"] == 2


async def test_each_dashboard_chart_query_against_hand_computed_rows(storage: Storage) -> None:
    """Four attempts, two days: every chart's rows, worked out by hand."""
    earlier, today = NOW - 2 * DAY, NOW - 60  # NOW is 08:00 UTC: both stay on their day
    group = str(uuid.uuid4())
    await storage.insert_records(
        [
            record(
                created_at=earlier,
                provider="anthropic",
                model_selected="claude-sonnet-4-5",
                cost_usd=0.5,
                latency_ms=1000,
                ttft_ms=400,
            ),
            record(created_at=earlier, cost_usd=0.25, latency_ms=200, ttft_ms=100, task_category="simple_qa"),
            record(
                created_at=today,
                request_group_id=group,
                status="server_error",
                cost_usd=0.125,
                latency_ms=400,
                ttft_ms=None,
            ),
            record(
                created_at=today,
                request_group_id=group,
                attempt=2,
                cost_usd=0.0625,
                latency_ms=600,
                ttft_ms=200,
                fallback_used=True,
            ),
        ]
    )
    stats = await storage.stats(days=7, now=NOW)
    day_before, day = (time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (earlier, today))

    def rows(name: str, *keys: str) -> list[tuple]:
        return [
            tuple(pytest.approx(r[k]) if isinstance(r[k], float) else r[k] for k in keys) for r in stats[name]
        ]

    totals = stats["totals"][0]
    assert (totals["attempts"], totals["requests"], totals["successes"], totals["fallbacks"]) == (4, 3, 3, 1)
    assert totals["cost_usd"] == pytest.approx(0.9375) and totals["avg_latency_ms"] == pytest.approx(550)
    assert rows("cost_by_day", "day", "provider", "cost_usd", "attempts") == [
        (day_before, "anthropic", 0.5, 1),
        (day_before, "openai", 0.25, 1),
        (day, "openai", 0.1875, 2),
    ]
    assert rows("volume_by_day", "day", "attempts", "successes") == [(day_before, 2, 2), (day, 2, 1)]
    assert rows("models", "provider", "model", "attempts", "cost_usd") == [
        ("anthropic", "claude-sonnet-4-5", 1, 0.5),
        ("openai", "gpt-4o-mini", 3, 0.4375),
    ]
    assert rows("providers", "provider", "attempts", "successes", "avg_latency_ms", "avg_ttft_ms") == [
        ("anthropic", 1, 1, 1000.0, 400.0),
        ("openai", 3, 2, 400.0, 150.0),  # time to first token over the two attempts that had one
    ]
    assert rows("success_rates", "provider", "model", "category", "attempts", "successes") == [
        ("anthropic", "claude-sonnet-4-5", "code_gen", 1, 1),
        ("openai", "gpt-4o-mini", "code_gen", 2, 1),
        ("openai", "gpt-4o-mini", "simple_qa", 1, 1),
    ]


async def test_budgets_and_spend(storage: Storage) -> None:
    await storage.put_budget(Budget("daily", 5.0, True))
    await storage.put_budget(Budget("monthly", 100.0, False))
    await storage.put_budget(Budget("daily", 7.5, True))
    assert await storage.budgets() == [Budget("daily", 7.5, True), Budget("monthly", 100.0, False)]
    await storage.insert_records(
        [record(created_at=NOW - 10, cost_usd=1.25), record(created_at=NOW - 5 * DAY)]
    )
    assert await storage.spent_since(NOW - DAY) == pytest.approx(1.25)


async def test_provider_settings(storage: Storage) -> None:
    await storage.put_provider_setting(
        ProviderSetting("openai", "OpenAI", enabled=False, priority=3, config={"slots": 8})
    )
    await storage.put_provider_setting(ProviderSetting("openai", "OpenAI", enabled=True, priority=1))
    assert await storage.provider_settings() == [ProviderSetting("openai", "OpenAI", True, 1, {})]


async def test_many_rows_in_one_batch(storage: Storage) -> None:
    batch = [record(created_at=time.time()) for _ in range(2000)]
    assert await storage.insert_records(batch) == 2000
    assert await storage.record_count() == 2000


async def test_budget_reservations_never_overshoot_under_a_race(storage: Storage) -> None:
    import trio

    windows = [Window("daily", NOW - DAY, 1.0), Window("monthly", NOW - 30 * DAY, 100.0)]
    results: list[bool] = []

    async def one() -> None:
        reservation = await storage.reserve(str(uuid.uuid4()), 0.1, windows, NOW)
        results.append(reservation.granted)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert results.count(True) == 10 and len(results) == 50
    assert await storage.budget_spent(NOW - DAY, NOW) == pytest.approx(1.0)
    refused = await storage.reserve(str(uuid.uuid4()), 0.1, windows, NOW)
    assert (refused.granted, refused.period, refused.limit_usd) == (False, "daily", 1.0)
    assert refused.spent_usd == pytest.approx(1.0)


async def test_settling_frees_the_estimate_and_stale_holds_expire(storage: Storage) -> None:
    windows = [Window("daily", NOW - DAY, 1.0)]
    held = str(uuid.uuid4())
    assert (await storage.reserve(held, 0.9, windows, NOW)).granted
    assert not (await storage.reserve(str(uuid.uuid4()), 0.2, windows, NOW)).granted
    await storage.settle(held, 0.05)  # the attempt cost less than estimated
    assert (await storage.reserve(str(uuid.uuid4()), 0.2, windows, NOW)).granted
    assert await storage.budget_spent(NOW - DAY, NOW) == pytest.approx(0.25)
    # an unsettled hold from a relaybox that died stops counting after the TTL
    later = NOW + RESERVATION_TTL + 1
    assert await storage.budget_spent(NOW - DAY, later) == pytest.approx(0.05)


async def test_the_response_caches_shared_tier(storage: Storage) -> None:
    first = CachedRow('[{"type": "Finished"}]', "chatcmpl-1", NOW, NOW + 60, 200)
    await storage.put_cached_answer(first, "k1")
    await storage.put_cached_answer(CachedRow("[]", "chatcmpl-2", NOW, NOW + 5, 100), "k2")
    assert await storage.cached_answer("k1", NOW + 1) == first
    assert await storage.cached_answer("k2", NOW + 10) is None, "expired"
    assert await storage.cached_answer("missing", NOW) is None
    replacement = CachedRow("[1]", "chatcmpl-3", NOW + 100, NOW + 200, 300)
    await storage.put_cached_answer(replacement, "k1")  # a newer answer replaces it, expired rows go
    assert await storage.cached_answer("k1", NOW + 101) == replacement
    assert await storage.cached_answer("k2", NOW) is None


async def test_client_keys(storage: Storage) -> None:
    key = ApiKey("ci", "a" * 64, "rbx-abcd", admin=False, created_at=NOW)
    assert await storage.create_key(key)
    assert not await storage.create_key(ApiKey("ci", "b" * 64, "rbx-efgh", created_at=NOW)), (
        "the name is taken"
    )
    assert await storage.create_key(ApiKey("admin", "c" * 64, "rbx-ijkl", admin=True, created_at=NOW))
    assert [k.name for k in await storage.api_keys()] == ["admin", "ci"]
    assert await storage.revoke_key("ci", NOW + 1)
    assert not await storage.revoke_key("ci", NOW + 2) and not await storage.revoke_key("nobody", NOW)
    keys = {k.name: k for k in await storage.api_keys()}
    assert keys["ci"].revoked_at == NOW + 1 and keys["admin"].admin and keys["admin"].revoked_at is None
    assert await storage.create_key(ApiKey("ci", "d" * 64, "rbx-mnop", created_at=NOW + 3)), (
        "a revoked name is free"
    )
    assert {k.name: k.key_hash for k in await storage.api_keys()}["ci"] == "d" * 64


async def test_key_request_windows(storage: Storage) -> None:
    assert await storage.create_key(ApiKey("limited", "e" * 64, "rbx-qrst", created_at=NOW, rpm=3))
    assert {k.name: k.rpm for k in await storage.api_keys()} == {"limited": 3}
    minute = int(NOW // 60) * 60
    counts = [await storage.count_key_requests("limited", minute, 1) for _ in range(3)]
    assert [c.requests for c in counts] == [1, 2, 3]
    assert (await storage.count_key_requests("other", minute, 1)).requests == 1, "each key counts on its own"
    assert (await storage.count_key_requests("limited", minute + 60, 1)).requests == 1, (
        "a new minute starts at 1"
    )
    assert (await storage.count_key_requests("limited", minute, 5)).requests == 8, "a batch counts at once"


async def test_key_limits_and_budget_are_stored(storage: Storage) -> None:
    key = ApiKey(
        "team", "f" * 64, "rbx-uvwx", created_at=NOW, tpm=5000, budget_usd=2.5, budget_period="weekly"
    )
    assert await storage.create_key(key)
    stored = (await storage.api_keys())[0]
    assert stored == key and stored.budget() == KeyBudget("team", "weekly", 2.5)


async def test_recorded_attempts_count_toward_their_keys_minute_and_usage(storage: Storage) -> None:
    minute = int(NOW // 60) * 60
    await storage.insert_records(
        [
            record(created_at=minute + 1, client="key:team", tokens_in=100, tokens_out=20, cost_usd=0.01),
            record(
                created_at=minute + 2, client="key:team", attempt=2, tokens_in=50, tokens_out=5, cost_usd=0.02
            ),
            record(
                created_at=minute + 3,
                client="key:team",
                cache_hit=True,
                tokens_in=100,
                tokens_out=20,
                cost_usd=0.0,
            ),
            record(created_at=minute + 4, client="key:other", tokens_in=7, tokens_out=3),
            record(created_at=minute + 5, client="curl/8.0", tokens_in=1000, tokens_out=1000),
            record(created_at=minute - 60, client="key:team", tokens_in=1000, tokens_out=0, cost_usd=0.5),
        ]
    )
    this_minute = await storage.count_key_requests("team", minute, 1)
    assert (this_minute.requests, this_minute.tokens) == (1, 175), "the replayed answer used no tokens"
    assert (await storage.count_key_requests("other", minute, 1)).tokens == 10
    keys = {row["key"]: row for row in (await storage.stats(days=1, now=NOW))["keys"]}
    assert set(keys) == {"team", "other"}, "requests made without a key are not a key's"
    team = keys["team"]
    assert (team["requests"], team["attempts"]) == (3, 4)
    assert (team["tokens_in"], team["tokens_out"]) == (1250, 45)
    assert float(team["cost_usd"]) == pytest.approx(0.53)


async def test_a_keys_budget_counts_only_its_own_spending(storage: Storage) -> None:
    everyone = Window("daily", NOW - DAY, 10.0)
    team = Window("daily", NOW - DAY, 1.0, key_name="team")
    assert (await storage.reserve(str(uuid.uuid4()), 3.0, [everyone], NOW, "other")).granted
    assert (await storage.reserve(str(uuid.uuid4()), 0.6, [everyone, team], NOW, "team")).granted
    refused = await storage.reserve(str(uuid.uuid4()), 0.6, [everyone, team], NOW, "team")
    assert (refused.granted, refused.key_name, refused.limit_usd) == (False, "team", 1.0)
    assert refused.spent_usd == pytest.approx(0.6)
    assert await storage.budget_spent(NOW - DAY, NOW, "team") == pytest.approx(0.6)
    assert await storage.budget_spent(NOW - DAY, NOW) == pytest.approx(3.6), (
        "the global budget counts every key"
    )


async def test_the_per_key_rollup_is_backfilled_from_an_older_log(tmp_path: Path) -> None:
    """A database from before per-key usage (schema 7) gains its keys' history when it migrates."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, statements in enumerate(SQLITE_MIGRATIONS[:7], start=1):
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        row = record(client="key:legacy", tokens_in=40, tokens_out=2, cost_usd=0.25)
        db.execute(
            f"INSERT INTO task_logs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
            [getattr(row, c) for c in COLUMNS],
        )
    storage = SQLiteStorage(str(path))
    try:
        assert await storage.migrate() == len(SQLITE_MIGRATIONS)
        keys = (await storage.stats(days=1, now=NOW))["keys"]
    finally:
        await storage.aclose()
    assert keys == [
        {"key": "legacy", "requests": 1, "attempts": 1, "tokens_in": 40, "tokens_out": 2, "cost_usd": 0.25}
    ]


async def test_the_learned_routers_labels_are_shared_and_bounded(storage: Storage) -> None:
    x = features(["In chess, can a bishop capture a rook on its diagonal?"])
    labels = [
        Label("cheap", "small", "economy", x, float(i % 2), "judge", 1.0, f"req-{i}") for i in range(12)
    ]
    await storage.add_routing_labels(labels[:5], instance="a", now=NOW, keep=8)
    await storage.add_routing_labels(labels[5:], instance="b", now=NOW, keep=8)
    rows = await storage.routing_labels(after_id=0, limit=100)
    assert [label.request_id for _, _, label in rows] == [f"req-{i}" for i in range(4, 12)], "the newest 8"
    ids = [i for i, _, _ in rows]
    assert ids == sorted(ids)
    _, instance, label = rows[0]
    assert (
        instance == "a" and label.provider == "cheap" and label.tier == "economy" and label.source == "judge"
    )
    assert [slot for slot, _ in label.features] == [slot for slot, _ in x]
    assert all(abs(a - b) < 1e-6 for (_, a), (_, b) in zip(label.features, x, strict=True))
    later = await storage.routing_labels(after_id=ids[3], limit=2)
    assert [i for i, _, _ in later] == ids[4:6]


async def test_the_promises_comparisons_are_shared_bounded_and_summed_by_day(storage: Storage) -> None:
    def compared(i: int) -> Comparison:
        # served strong on even i; the strong answer good on multiples of 3, the cheap one on odd i
        return Comparison(i / 10, i % 2 == 0, i % 2 == 1, i % 3 == 0, "fake/weak", "fake/strong", f"req-{i}")

    comparisons = [compared(i) for i in range(12)]
    yesterday, today = comparisons[:4], comparisons[4:]
    await storage.add_routing_comparisons(yesterday, instance="a", now=NOW - 86400, keep=10)
    await storage.add_routing_comparisons(today, instance="b", now=NOW, keep=10)
    rows = await storage.routing_comparisons(after_id=0, limit=100)
    assert [c.request_id for _, _, c in rows] == [f"req-{i}" for i in range(2, 12)], "the newest 10"
    assert rows[0][1] == "a" and rows[0][2] == comparisons[2] and rows[-1][2] == comparisons[11]
    ids = [i for i, _, _ in rows]
    later = await storage.routing_comparisons(after_id=ids[3], limit=2)
    assert [i for i, _, _ in later] == ids[4:6]

    by_day = (await storage.stats(days=2, now=NOW))["promise_by_day"]
    sums = [
        GainSums(
            *(int(row[name]) for name in ("comparisons", "gained", "gained_kept", "changed", "changed_kept"))
        )
        for row in by_day
    ]
    expected = [
        GainSums.of([c.gain for c in kept], [c.served_strong for c in kept])
        for kept in (comparisons[2:4], comparisons[4:])
    ]
    assert sums == expected and sums[1].gained != 0 and sums[1].changed_kept > 0


async def test_stored_responses_form_chains_and_expire(storage: Storage) -> None:
    def stored(i: int, previous: int | None, created_at: float = NOW) -> StoredResponse:
        return StoredResponse(
            f"resp_{i}", None if previous is None else f"resp_{previous}", "alice", created_at, f"[{i}]", "{}"
        )

    await storage.put_responses([stored(1, None), stored(2, 1)], expire_before=NOW - 100)
    await storage.put_responses([stored(3, 2), stored(9, None, NOW - 500)], expire_before=NOW - 100)
    chain = await storage.response_chain("resp_3", limit=100)
    assert [row.id for row in chain] == ["resp_1", "resp_2", "resp_3"], "oldest first"
    assert chain[0] == stored(1, None)
    assert [row.id for row in await storage.response_chain("resp_3", limit=2)] == ["resp_2", "resp_3"]
    assert await storage.response_chain("resp_9", limit=10) == [], "expired when the next were stored"
    assert await storage.response_chain("resp_nope", limit=10) == []
    await storage.put_responses([stored(2, None)], expire_before=NOW - 100)
    assert (await storage.response_chain("resp_2", limit=10))[-1].previous_id == "resp_1", "never replaced"
    assert not await storage.delete_response("resp_2", "mallory")
    assert await storage.delete_response("resp_2", "alice")
    assert [row.id for row in await storage.response_chain("resp_3", limit=10)] == ["resp_3"]
    assert await storage.delete_response("resp_3", None) and not await storage.delete_response("resp_3", None)
