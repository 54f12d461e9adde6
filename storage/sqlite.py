"""SQLite storage, the embedded default: one file, WAL mode, blocking calls on a worker thread.

All calls share one connection, serialised by a capacity limiter of one: SQLite has one writer
anyway, and readers in WAL mode never block it. The request log's records, the bulk of the
writes, go through a writer process instead (`storage/sqlite_writer.py`); the file's lock keeps
the two writers apart.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio
from relaybox.protocol.routing.evidence import RollupRow
from relaybox.protocol.routing.learned import Label
from relaybox.protocol.routing.promise import Comparison
from relaybox.storage.contract import StorageError
from relaybox.storage.queries import (
    SQLITE,
    ab_results_query,
    day_start,
    evidence_query,
    evidence_rows,
    outcomes_query,
    promise_by_day_query,
    rating_update,
    response_chain_query,
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
from relaybox.storage.schema import SQLITE_MIGRATIONS
from relaybox.storage.sqlite_writer import open_log
from relaybox.storage.writer_process import WriterProcess

T = TypeVar("T")
_BOOLEAN_COLUMNS = {"streaming", "fallback_used", "cache_hit", "cli_success"}


class SQLiteStorage:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._writer = WriterProcess(path)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._connection is None:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._connection = open_log(self.path)
            try:
                with self._connection:  # one transaction per call
                    return work(self._connection)
            except sqlite3.Error as error:
                raise StorageError(f"sqlite: {error}") from error

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def migrate(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, statements in enumerate(SQLITE_MIGRATIONS, start=1):
                if version > current:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            return max(current, len(SQLITE_MIGRATIONS))

        return await self._run(work)

    async def insert_records(self, records: list[AttemptRecord]) -> int:
        # In a process of its own: see storage/sqlite_writer.py for why.
        return await self._writer.write(records)

    async def record_count(self) -> int:
        return await self._run(lambda db: db.execute("SELECT count(*) FROM task_logs").fetchone()[0])

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
        filters, values = _filters(
            provider=provider,
            model_selected=model,
            task_category=category,
            status=status,
            request_group_id=group,
            client=client,
        )
        sql = f"SELECT {', '.join(COLUMNS)} FROM task_logs {filters} ORDER BY created_at DESC LIMIT ?"

        def work(db: sqlite3.Connection) -> list[AttemptRecord]:
            return [_record(row) for row in db.execute(sql, (*values, limit)).fetchall()]

        return await self._run(work)

    async def set_rating(self, request_group_id: str, rating: int, client: str | None = None) -> bool:
        filters, values = _filters(request_group_id=request_group_id, client=client)

        def work(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT id, created_at, provider, model_selected, task_category, status, user_rating FROM task_logs "
                f"{filters} ORDER BY attempt DESC LIMIT 1",
                values,
            ).fetchone()
            if row is None:
                return False
            record_id, created_at, provider, model, category, status, old = row
            db.execute("UPDATE task_logs SET user_rating = ? WHERE id = ?", (rating, record_id))
            db.execute(
                rating_update(SQLITE),
                (
                    rating - (old or 0),
                    0 if old is not None else 1,
                    since_day(created_at),
                    provider,
                    model,
                    category,
                    status,
                ),
            )
            return True

        return await self._run(work)

    async def stats(self, *, days: int, now: float) -> dict[str, Any]:
        since = since_day(now - days * 86400)
        stats = {name: await self._dicts(sql, (since,)) for name, sql in stats_queries(SQLITE).items()}
        stats["outcomes"] = await self._dicts(outcomes_query(SQLITE), (day_start(since),))
        stats["promise_by_day"] = await self._dicts(promise_by_day_query(SQLITE), (day_start(since),))
        return stats

    async def routing_evidence(self, *, since: float) -> list[RollupRow]:
        return evidence_rows(await self._dicts(evidence_query(SQLITE), (since_day(since),)))

    async def add_routing_labels(self, labels: list[Label], *, instance: str, now: float, keep: int) -> None:
        rows = [label_row(label, instance, now) for label in labels]

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO routing_labels (created_at, instance, provider, model, tier, features, good, "
                "weight, source, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "DELETE FROM routing_labels WHERE id <= (SELECT max(id) FROM routing_labels) - ?", (keep,)
            )

        await self._run(work)

    async def routing_labels(self, *, after_id: int, limit: int) -> list[tuple[int, str, Label]]:
        def work(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(
                "SELECT id, instance, provider, model, tier, features, good, weight, source, request_id "
                "FROM routing_labels WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()

        return [stored_label(row) for row in await self._run(work)]

    async def add_routing_comparisons(
        self, comparisons: list[Comparison], *, instance: str, now: float, keep: int
    ) -> None:
        rows = [comparison_row(comparison, instance, now) for comparison in comparisons]

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO routing_comparisons (created_at, instance, score, served_strong, cheap_good, strong_good, cheap, strong, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "DELETE FROM routing_comparisons WHERE id <= (SELECT max(id) FROM routing_comparisons) - ?",
                (keep,),
            )

        await self._run(work)

    async def routing_comparisons(self, *, after_id: int, limit: int) -> list[tuple[int, str, Comparison]]:
        def work(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(
                "SELECT id, instance, score, served_strong, cheap_good, strong_good, cheap, strong, request_id "
                "FROM routing_comparisons WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()

        return [stored_comparison(row) for row in await self._run(work)]

    async def ab_results(self, *, since: float) -> list[dict[str, Any]]:
        return await self._dicts(ab_results_query(SQLITE), (since,))

    async def _dicts(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        def work(db: sqlite3.Connection) -> list[dict[str, Any]]:
            db.row_factory = sqlite3.Row
            try:
                return [dict(row) for row in db.execute(sql, params).fetchall()]
            finally:
                db.row_factory = None

        return await self._run(work)

    async def budgets(self) -> list[Budget]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT period, limit_usd, enabled FROM budget_config ORDER BY period"
            ).fetchall()
        )
        return [Budget(period, float(limit), bool(enabled)) for period, limit, enabled in rows]

    async def put_budget(self, budget: Budget) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO budget_config (period, limit_usd, enabled, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (period) DO UPDATE SET limit_usd = excluded.limit_usd, enabled = excluded.enabled, "
                "updated_at = excluded.updated_at",
                (budget.period, budget.limit_usd, int(budget.enabled), time.time()),
            )
        )

    async def spent_since(self, since: float) -> float:
        return float(
            await self._run(
                lambda db: db.execute(
                    "SELECT coalesce(sum(cost_usd), 0) FROM task_logs WHERE created_at >= ?", (since,)
                ).fetchone()[0]
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
        def work(db: sqlite3.Connection) -> Reservation:
            db.execute("BEGIN IMMEDIATE")  # the write lock first: no other writer between check and hold
            for window in windows:
                spent = _ledger_sum(db, window.since, now, window.key_name)
                if spent + amount > window.limit_usd:
                    return Reservation(False, window.period, window.limit_usd, spent, window.key_name)
            db.execute(
                "INSERT INTO budget_ledger (id, created_at, amount_usd, settled, key_name) VALUES (?, ?, ?, 0, ?)",
                (reservation_id, now, amount, key_name),
            )
            return Reservation(True)

        return await self._run(work)

    async def settle(self, reservation_id: str, amount: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE budget_ledger SET amount_usd = ?, settled = 1 WHERE id = ?", (amount, reservation_id)
            )
        )

    async def budget_spent(self, since: float, now: float, key_name: str | None = None) -> float:
        return await self._run(lambda db: _ledger_sum(db, since, now, key_name))

    async def provider_settings(self) -> list[ProviderSetting]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT provider_id, display_name, enabled, priority, config_json FROM provider_config "
                "ORDER BY provider_id"
            ).fetchall()
        )
        return [ProviderSetting(p, d, bool(e), int(pr), json.loads(c or "{}")) for p, d, e, pr, c in rows]

    async def put_provider_setting(self, setting: ProviderSetting) -> None:
        now = time.time()
        await self._run(
            lambda db: db.execute(
                "INSERT INTO provider_config (provider_id, display_name, enabled, priority, config_json, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (provider_id) DO UPDATE SET "
                "display_name = excluded.display_name, enabled = excluded.enabled, priority = excluded.priority, "
                "config_json = excluded.config_json, updated_at = excluded.updated_at",
                (
                    setting.provider_id,
                    setting.display_name,
                    int(setting.enabled),
                    setting.priority,
                    json.dumps(setting.config),
                    now,
                    now,
                ),
            )
        )

    async def cached_answer(self, key: str, now: float) -> CachedRow | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT answer, request_id, stored_at, expires_at, size FROM response_cache "
                "WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
        )
        return None if row is None else CachedRow(*row)

    async def put_cached_answer(self, row: CachedRow, key: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO response_cache (key, answer, request_id, stored_at, expires_at, size) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, "
                "request_id = excluded.request_id, stored_at = excluded.stored_at, "
                "expires_at = excluded.expires_at, size = excluded.size",
                (key, row.answer, row.request_id, row.stored_at, row.expires_at, row.size),
            )
            db.execute("DELETE FROM response_cache WHERE expires_at <= ?", (row.stored_at,))

        await self._run(work)

    async def put_responses(self, rows: list[StoredResponse], *, expire_before: float) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany(stored_response_insert(SQLITE), [attrs.astuple(row) for row in rows])
            db.execute("DELETE FROM stored_responses WHERE created_at < ?", (expire_before,))

        await self._run(work)

    async def response_chain(self, response_id: str, *, limit: int) -> list[StoredResponse]:
        rows = await self._run(
            lambda db: db.execute(response_chain_query(SQLITE), (response_id, limit)).fetchall()
        )
        return [StoredResponse(*row) for row in rows]

    async def delete_response(self, response_id: str, owner: str | None) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            if owner is None:
                cursor = db.execute("DELETE FROM stored_responses WHERE id = ?", (response_id,))
            else:
                cursor = db.execute(
                    "DELETE FROM stored_responses WHERE id = ? AND owner = ?", (response_id, owner)
                )
            return cursor.rowcount > 0

        return await self._run(work)

    async def create_key(self, key: ApiKey) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT revoked_at FROM api_keys WHERE name = ?", (key.name,)).fetchone()
            if row is not None and row[0] is None:
                return False
            db.execute("DELETE FROM api_keys WHERE name = ?", (key.name,))
            db.execute(
                f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) VALUES ({', '.join('?' for _ in KEY_COLUMNS)})",
                attrs.astuple(key),
            )
            return True

        return await self._run(work)

    async def api_keys(self) -> list[ApiKey]:
        rows = await self._run(
            lambda db: db.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys ORDER BY name").fetchall()
        )
        return [ApiKey(n, h, p, bool(a), *rest) for n, h, p, a, *rest in rows]

    async def count_key_requests(self, name: str, window_start: int, count: int) -> KeyMinute:
        def work(db: sqlite3.Connection) -> KeyMinute:
            requests, tokens = db.execute(
                "INSERT INTO key_windows (key_name, window_start, requests) VALUES (?, ?, ?) "
                "ON CONFLICT (key_name, window_start) DO UPDATE SET requests = requests + excluded.requests "
                "RETURNING requests, tokens",
                (name, window_start, count),
            ).fetchone()
            db.execute("DELETE FROM key_windows WHERE window_start < ?", (window_start - 300,))
            return KeyMinute(int(requests), int(tokens))

        return await self._run(work)

    async def revoke_key(self, name: str, now: float) -> bool:
        changed = await self._run(
            lambda db: (
                db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name)
                ).rowcount
            )
        )
        return changed > 0

    async def aclose(self) -> None:
        await self._writer.aclose()

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await trio.to_thread.run_sync(close, limiter=self._limiter)


def _ledger_sum(db: sqlite3.Connection, since: float, now: float, key_name: str | None) -> float:
    sql = "SELECT coalesce(sum(amount_usd), 0) FROM budget_ledger WHERE created_at >= ? AND (settled = 1 OR created_at >= ?)"
    params: tuple[Any, ...] = (since, now - RESERVATION_TTL)
    if key_name is not None:
        sql, params = sql + " AND key_name = ?", (*params, key_name)
    return float(db.execute(sql, params).fetchone()[0])


def _filters(**equal: str | None) -> tuple[str, tuple[Any, ...]]:
    used = [(column, value) for column, value in equal.items() if value is not None]
    if not used:
        return "", ()
    return "WHERE " + " AND ".join(f"{c} = ?" for c, _ in used), tuple(v for _, v in used)


def _record(row: tuple[Any, ...]) -> AttemptRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    for column in _BOOLEAN_COLUMNS:
        values[column] = bool(values[column])
    return AttemptRecord(**values)
