"""PostgreSQL storage: asyncpg with a connection pool, run under trio-asyncio.

Every asyncio/asyncpg/trio-asyncio import stays in this module. Each operation runs as one
asyncio coroutine (acquire, work, release) so asyncio's own cancellation handling returns the
connection to the pool even when the trio caller is cancelled. The pool is created on first use,
so relaybox starts (and serves) while the database is still down.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import attrs
import trio_asyncio
from relaybox.protocol.routing.evidence import RollupRow
from relaybox.protocol.routing.learned import Label
from relaybox.protocol.routing.promise import Comparison
from relaybox.storage.contract import StorageError
from relaybox.storage.queries import (
    POSTGRES,
    ab_results_query,
    day_start,
    evidence_query,
    evidence_rows,
    key_minute_rows,
    key_tokens_upsert,
    key_usage_rows,
    key_usage_upsert,
    outcomes_query,
    promise_by_day_query,
    rating_update,
    response_chain_query,
    rollup_rows,
    rollup_upsert,
    since_day,
    stats_queries,
    stored_response_insert,
)
from relaybox.storage.records import (
    COLUMNS,
    KEY_COLUMNS,
    RESERVATION_TTL,
    ApiKey,
    AttemptRecord,
    Budget,
    CachedRow,
    KeyMinute,
    ProviderSetting,
    Reservation,
    StoredResponse,
    Window,
    comparison_row,
    label_row,
    stored_comparison,
    stored_label,
)
from relaybox.storage.schema import POSTGRES_MIGRATIONS

log = logging.getLogger("relaybox.storage")
T = TypeVar("T")
_MIGRATION_LOCK = 0x72656C6179  # "relay": one instance migrates at a time
_BUDGET_LOCK = 0x6275646765  # "budge"
_LEDGER_SUM = (
    "SELECT coalesce(sum(amount_usd), 0) FROM budget_ledger WHERE created_at >= $1 "
    "AND (settled OR created_at >= $2)"
)


_TYPES = {
    "id": "uuid",
    "request_group_id": "uuid",
    "created_at": "timestamptz",
    "attempt": "int4",
    "complexity_score": "int4",
    "message_count": "int4",
    "tokens_in": "int4",
    "tokens_out": "int4",
    "cache_read_tokens": "int4",
    "cache_write_tokens": "int4",
    "cost_usd": "numeric",
    "baseline_cost_usd": "numeric",
    "latency_ms": "int4",
    "ttft_ms": "int4",
    "streaming": "bool",
    "fallback_used": "bool",
    "tokens_before_compression": "int4",
    "tokens_after_compression": "int4",
    "cache_hit": "bool",
    "budget_remaining_usd": "numeric",
    "cli_success": "bool",
    "heuristic_score": "int4",
    "user_rating": "int4",
}
_INSERT = (
    f"INSERT INTO task_logs ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(COLUMNS, start=1))
    + ") ON CONFLICT (id) DO NOTHING RETURNING id::text"
)


def _timestamp(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return value


class PostgresStorage:
    name = "postgres"

    def __init__(self, dsn: str, *, max_connections: int = 10) -> None:
        self.dsn = dsn
        self._max = max_connections
        self._pool: asyncpg.Pool | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str, **options: Any) -> AsyncIterator[PostgresStorage]:
        async with trio_asyncio.open_loop() as loop:
            # trio-asyncio's default raises any error asyncio did not hand to anyone into this
            # loop's nursery, ending relaybox: asyncpg leaves such errors behind when a query
            # it was cancelled in (a timeout of ours) meets the connection's loss. Logged instead:
            # the pool reconnects for the next query.
            loop.set_exception_handler(_log_stray_error)
            storage = cls(dsn, **options)
            try:
                yield storage
            finally:
                await storage.aclose()

    async def _run(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async def job() -> T:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=0, max_size=self._max, command_timeout=30
                )
            async with self._pool.acquire() as connection:
                return await op(connection)

        try:
            return await trio_asyncio.aio_as_trio(job)()
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            raise StorageError(f"postgres: {type(error).__name__}: {error}") from error

    async def migrate(self) -> int:
        async def op(db: asyncpg.Connection) -> int:
            async with db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                current = await db.fetchval("SELECT max(version) FROM schema_version") or 0
                for version, statements in enumerate(POSTGRES_MIGRATIONS, start=1):
                    if version > current:
                        for statement in statements:
                            await db.execute(statement)
                        await db.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            return max(current, len(POSTGRES_MIGRATIONS))

        return await self._run(op)

    async def insert_records(self, records: list[AttemptRecord]) -> int:
        columns: list[list[Any]] = [[] for _ in COLUMNS]
        for record in records:
            for i, name in enumerate(COLUMNS):
                value = getattr(record, name)
                columns[i].append(_timestamp(value) if name == "created_at" else value)

        async def op(db: asyncpg.Connection) -> int:
            async with db.transaction():
                inserted = {row[0] for row in await db.fetch(_INSERT, *columns)}
                new = [r for r in records if r.id in inserted]
                new = list({r.id: r for r in new}.values())
                if new:
                    await db.executemany(rollup_upsert(POSTGRES), rollup_rows(new))
                    await db.executemany(key_usage_upsert(POSTGRES), key_usage_rows(new))
                    minutes = key_minute_rows(new)
                    if minutes:
                        await db.executemany(key_tokens_upsert(POSTGRES), minutes)
                        await db.execute(
                            "DELETE FROM key_windows WHERE window_start < $1",
                            max(m for _, m, _ in minutes) - 300,
                        )
            return len(new)

        return await self._run(op)

    async def record_count(self) -> int:
        return await self._run(lambda db: db.fetchval("SELECT count(*) FROM task_logs"))

    async def recent(
        self,
        *,
        limit: int = 50,
        provider: str | None = None,
        model: str | None = None,
        category: str | None = None,
        status: str | None = None,
        group: str | None = None,
        client: str | None = None,
    ) -> list[AttemptRecord]:
        where, values = _filters(
            provider=provider,
            model_selected=model,
            task_category=category,
            status=status,
            request_group_id=group,
            client=client,
        )
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM task_logs {where} ORDER BY created_at DESC "
            f"LIMIT ${len(values) + 1}"
        )

        async def op(db: asyncpg.Connection) -> list[AttemptRecord]:
            rows = await db.fetch(sql, *values, limit)
            return [
                AttemptRecord(
                    **{k: str(v) if k in ("id", "request_group_id") else _plain(v) for k, v in row.items()}
                )
                for row in rows
            ]

        return await self._run(op)

    async def set_rating(self, request_group_id: str, rating: int, client: str | None = None) -> bool:
        where, values = _filters(request_group_id=request_group_id, client=client)

        async def op(db: asyncpg.Connection) -> bool:
            async with db.transaction():
                row = await db.fetchrow(
                    "SELECT id, created_at, provider, model_selected, task_category, status, user_rating "
                    f"FROM task_logs {where} ORDER BY attempt DESC LIMIT 1 FOR UPDATE",
                    *values,
                )
                if row is None:
                    return False
                old = row["user_rating"]
                await db.execute("UPDATE task_logs SET user_rating = $1 WHERE id = $2", rating, row["id"])
                await db.execute(
                    rating_update(POSTGRES),
                    rating - (old or 0),
                    0 if old is not None else 1,
                    since_day(row["created_at"].timestamp()),
                    row["provider"],
                    row["model_selected"],
                    row["task_category"],
                    row["status"],
                )
            return True

        return await self._run(op)

    async def stats(self, *, days: int, now: float) -> dict[str, Any]:
        since = since_day(now - days * 86400)
        stats = {name: await self._dicts(sql, since) for name, sql in stats_queries(POSTGRES).items()}
        stats["outcomes"] = await self._dicts(outcomes_query(POSTGRES), day_start(since))
        stats["promise_by_day"] = await self._dicts(promise_by_day_query(POSTGRES), day_start(since))
        return stats

    async def routing_evidence(self, *, since: float) -> list[RollupRow]:
        return evidence_rows(await self._dicts(evidence_query(POSTGRES), since_day(since)))

    async def add_routing_labels(self, labels: list[Label], *, instance: str, now: float, keep: int) -> None:
        rows = [label_row(label, instance, _timestamp(now)) for label in labels]

        async def op(db: asyncpg.Connection) -> None:
            async with db.transaction():
                await db.executemany(
                    "INSERT INTO routing_labels (created_at, instance, provider, model, tier, features, good, "
                    "weight, source, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    rows,
                )
                await db.execute(
                    "DELETE FROM routing_labels WHERE id <= (SELECT max(id) FROM routing_labels) - $1", keep
                )

        await self._run(op)

    async def routing_labels(self, *, after_id: int, limit: int) -> list[tuple[int, str, Label]]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT id, instance, provider, model, tier, features, good, weight, source, request_id "
                "FROM routing_labels WHERE id > $1 ORDER BY id LIMIT $2",
                after_id,
                limit,
            )
        )
        return [stored_label(tuple(row)) for row in rows]

    async def add_routing_comparisons(
        self, comparisons: list[Comparison], *, instance: str, now: float, keep: int
    ) -> None:
        rows = [comparison_row(comparison, instance, _timestamp(now)) for comparison in comparisons]

        async def op(db: asyncpg.Connection) -> None:
            async with db.transaction():
                await db.executemany(
                    "INSERT INTO routing_comparisons (created_at, instance, score, served_strong, cheap_good, strong_good, cheap, strong, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    rows,
                )
                await db.execute(
                    "DELETE FROM routing_comparisons WHERE id <= (SELECT max(id) FROM routing_comparisons) - $1",
                    keep,
                )

        await self._run(op)

    async def routing_comparisons(self, *, after_id: int, limit: int) -> list[tuple[int, str, Comparison]]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT id, instance, score, served_strong, cheap_good, strong_good, cheap, strong, request_id "
                "FROM routing_comparisons WHERE id > $1 ORDER BY id LIMIT $2",
                after_id,
                limit,
            )
        )
        return [stored_comparison(tuple(row)) for row in rows]

    async def ab_results(self, *, since: float) -> list[dict[str, Any]]:
        return await self._dicts(ab_results_query(POSTGRES), since)

    async def _dicts(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async def op(db: asyncpg.Connection) -> list[dict[str, Any]]:
            return [{k: _plain(v) for k, v in row.items()} for row in await db.fetch(sql, *params)]

        return await self._run(op)

    async def budgets(self) -> list[Budget]:
        rows = await self._run(
            lambda db: db.fetch("SELECT period, limit_usd, enabled FROM budget_config ORDER BY period")
        )
        return [Budget(r["period"], float(r["limit_usd"]), r["enabled"]) for r in rows]

    async def put_budget(self, budget: Budget) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO budget_config (period, limit_usd, enabled, updated_at) VALUES ($1, $2, $3, now()) "
                "ON CONFLICT (period) DO UPDATE SET limit_usd = excluded.limit_usd, enabled = excluded.enabled, "
                "updated_at = now()",
                budget.period,
                budget.limit_usd,
                budget.enabled,
            )
        )

    async def spent_since(self, since: float) -> float:
        return float(
            await self._run(
                lambda db: db.fetchval(
                    "SELECT coalesce(sum(cost_usd), 0) FROM task_logs WHERE created_at >= to_timestamp($1)",
                    since,
                )
            )
        )

    async def reserve(
        self,
        reservation_id: str,
        amount: float,
        windows: list[Window],
        now: float,
        key_name: str | None = None,
    ) -> Reservation:
        async def op(db: asyncpg.Connection) -> Reservation:
            async with db.transaction():
                # One reservation at a time across every instance sharing this database.
                await db.execute("SELECT pg_advisory_xact_lock($1)", _BUDGET_LOCK)
                for window in windows:
                    spent = await _ledger_sum(db, window.since, now, window.key_name)
                    if spent + amount > window.limit_usd:
                        return Reservation(False, window.period, window.limit_usd, spent, window.key_name)
                await db.execute(
                    "INSERT INTO budget_ledger (id, created_at, amount_usd, key_name) VALUES ($1, $2, $3, $4)",
                    reservation_id,
                    _timestamp(now),
                    amount,
                    key_name,
                )
            return Reservation(True)

        return await self._run(op)

    async def settle(self, reservation_id: str, amount: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE budget_ledger SET amount_usd = $1, settled = true WHERE id = $2",
                amount,
                reservation_id,
            )
        )

    async def budget_spent(self, since: float, now: float, key_name: str | None = None) -> float:
        return await self._run(lambda db: _ledger_sum(db, since, now, key_name))

    async def provider_settings(self) -> list[ProviderSetting]:
        rows = await self._run(
            lambda db: db.fetch(
                "SELECT provider_id, display_name, enabled, priority, config_json FROM provider_config "
                "ORDER BY provider_id"
            )
        )
        return [
            ProviderSetting(
                r["provider_id"],
                r["display_name"],
                r["enabled"],
                r["priority"],
                json.loads(r["config_json"] or "{}"),
            )
            for r in rows
        ]

    async def put_provider_setting(self, setting: ProviderSetting) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO provider_config (provider_id, display_name, enabled, priority, config_json) "
                "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (provider_id) DO UPDATE SET "
                "display_name = excluded.display_name, enabled = excluded.enabled, priority = excluded.priority, "
                "config_json = excluded.config_json, updated_at = now()",
                setting.provider_id,
                setting.display_name,
                setting.enabled,
                setting.priority,
                json.dumps(setting.config),
            )
        )

    async def cached_answer(self, key: str, now: float) -> CachedRow | None:
        row = await self._run(
            lambda db: db.fetchrow(
                "SELECT answer, request_id, stored_at, expires_at, size FROM response_cache "
                "WHERE key = $1 AND expires_at > $2",
                key,
                now,
            )
        )
        return None if row is None else CachedRow(*row)

    async def put_cached_answer(self, row: CachedRow, key: str) -> None:
        async def work(db: asyncpg.Connection) -> None:
            async with db.transaction():
                await db.execute(
                    "INSERT INTO response_cache (key, answer, request_id, stored_at, expires_at, size) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, "
                    "request_id = excluded.request_id, stored_at = excluded.stored_at, "
                    "expires_at = excluded.expires_at, size = excluded.size",
                    key,
                    row.answer,
                    row.request_id,
                    row.stored_at,
                    row.expires_at,
                    row.size,
                )
                await db.execute("DELETE FROM response_cache WHERE expires_at <= $1", row.stored_at)

        await self._run(work)

    async def put_responses(self, rows: list[StoredResponse], *, expire_before: float) -> None:
        async def work(db: asyncpg.Connection) -> None:
            async with db.transaction():
                await db.executemany(stored_response_insert(POSTGRES), [attrs.astuple(row) for row in rows])
                await db.execute("DELETE FROM stored_responses WHERE created_at < $1", expire_before)

        await self._run(work)

    async def response_chain(self, response_id: str, *, limit: int) -> list[StoredResponse]:
        rows = await self._run(lambda db: db.fetch(response_chain_query(POSTGRES), response_id, limit))
        return [StoredResponse(*row) for row in rows]

    async def delete_response(self, response_id: str, owner: str | None) -> bool:
        if owner is None:
            status = await self._run(
                lambda db: db.execute("DELETE FROM stored_responses WHERE id = $1", response_id)
            )
        else:
            status = await self._run(
                lambda db: db.execute(
                    "DELETE FROM stored_responses WHERE id = $1 AND owner = $2", response_id, owner
                )
            )
        return status != "DELETE 0"

    async def create_key(self, key: ApiKey) -> bool:
        async def work(db: asyncpg.Connection) -> bool:
            async with db.transaction():
                revoked = await db.fetchrow(
                    "SELECT revoked_at FROM api_keys WHERE name = $1 FOR UPDATE", key.name
                )
                if revoked is not None and revoked[0] is None:
                    return False
                await db.execute("DELETE FROM api_keys WHERE name = $1", key.name)
                marks = ", ".join(f"${i}" for i in range(1, len(KEY_COLUMNS) + 1))
                await db.execute(
                    f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) VALUES ({marks})", *attrs.astuple(key)
                )
                return True

        return await self._run(work)

    async def api_keys(self) -> list[ApiKey]:
        rows = await self._run(
            lambda db: db.fetch(f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys ORDER BY name")
        )
        return [ApiKey(*row[:8], None if row[8] is None else float(row[8]), row[9]) for row in rows]

    async def count_key_requests(self, name: str, window_start: int, count: int) -> KeyMinute:
        async def work(db: asyncpg.Connection) -> KeyMinute:
            requests, tokens = await db.fetchrow(
                "INSERT INTO key_windows (key_name, window_start, requests) VALUES ($1, $2, $3) "
                "ON CONFLICT (key_name, window_start) DO UPDATE "
                "SET requests = key_windows.requests + excluded.requests RETURNING requests, tokens",
                name,
                window_start,
                count,
            )
            await db.execute("DELETE FROM key_windows WHERE window_start < $1", window_start - 300)
            return KeyMinute(int(requests), int(tokens))

        return await self._run(work)

    async def revoke_key(self, name: str, now: float) -> bool:
        status = await self._run(
            lambda db: db.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL", now, name
            )
        )
        return status != "UPDATE 0"

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await trio_asyncio.aio_as_trio(pool.close)()


async def _ledger_sum(db: asyncpg.Connection, since: float, now: float, key_name: str | None) -> float:
    """Spending since `since`: settled costs and the holds still live; one key's when named."""
    since_at, live_from = _timestamp(since), _timestamp(now - RESERVATION_TTL)
    if key_name is None:
        return float(await db.fetchval(_LEDGER_SUM, since_at, live_from))
    return float(await db.fetchval(_LEDGER_SUM + " AND key_name = $3", since_at, live_from, key_name))


def _filters(**equal: str | None) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause of the columns given a value (placeholders $1, $2, ...), and the values."""
    used = [(column, value) for column, value in equal.items() if value is not None]
    if not used:
        return "", ()
    # request_group_id is a uuid column; the others are compared as given.
    terms = [
        f"{column}{'::text' if column == 'request_group_id' else ''} = ${i}"
        for i, (column, _) in enumerate(used, start=1)
    ]
    return "WHERE " + " AND ".join(terms), tuple(value for _, value in used)


def _log_stray_error(loop: object, context: dict[str, Any]) -> None:
    log.warning("postgres: %s", context.get("exception") or context.get("message"))
