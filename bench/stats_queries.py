"""The dashboard's queries on a million rows, SQLite and PostgreSQL, with PostgreSQL's plan.

    python -m bench.stats_queries [--rows 1000000]

Rows are generated inside each database (90 days, 6 providers, 20 models, 7 categories) and the
daily rollup rebuilt from them; then `stats(days=7)`, `stats(days=30)` (which read the rollup) and
filtered recent-request queries (which read task_logs through its indexes) are timed, best of 3.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import asyncpg
import trio
import trio_asyncio
from relaybox.storage.postgres import PostgresStorage
from relaybox.storage.queries import POSTGRES, since_day, stats_queries
from relaybox.storage.schema import rollup_backfill
from relaybox.storage.sqlite import SQLiteStorage

from bench.generated_log import SQLITE_FILL
from bench.machine import write
from tests.storage_fixtures import fresh_postgres_database

POSTGRES_FILL = """
INSERT INTO task_logs (id, created_at, request_group_id, attempt, task_category, provider, model_selected, status,
                       tokens_in, tokens_out, cost_usd, latency_ms, ttft_ms, fallback_used, cache_hit)
SELECT gen_random_uuid(), now() - random() * interval '90 days', gen_random_uuid(), 1,
       'cat' || (i % 7), 'provider' || (i % 6), 'model' || (i % 20),
       CASE WHEN i % 17 = 0 THEN 'server_error' ELSE 'success' END,
       i % 2000, i % 500, (i % 100) / 10000.0, 100 + i % 900, 50 + i % 300, i % 29 = 0, i % 13 = 0
FROM generate_series(1, {rows}) AS i
"""


async def best_of(times: int, work) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        await work()
        best = min(best, time.perf_counter() - started)
    return best * 1000


async def timings(storage: SQLiteStorage | PostgresStorage) -> list[tuple[str, float]]:
    now = time.time()
    return [
        ("stats(days=7)", await best_of(3, lambda: storage.stats(days=7, now=now))),
        ("stats(days=30)", await best_of(3, lambda: storage.stats(days=30, now=now))),
        ("recent(limit=50)", await best_of(3, lambda: storage.recent(limit=50))),
        (
            "recent(provider, model)",
            await best_of(3, lambda: storage.recent(limit=50, provider="provider3", model="model3")),
        ),
    ]


async def main(rows: int) -> None:
    lines = [f"{rows:,} rows in task_logs, 90 days of data; best of 3, milliseconds"]
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SQLiteStorage(f"{directory}/bench.db")
        await sqlite.migrate()
        started = time.perf_counter()
        await sqlite._run(lambda db: db.execute(SQLITE_FILL.format(rows=rows, now=time.time())))
        await sqlite._run(lambda db: db.execute("DELETE FROM task_stats"))  # rows were made behind its back
        await sqlite._run(lambda db: db.execute(rollup_backfill("date(created_at, 'unixepoch')", "1")))
        await sqlite._run(lambda db: db.execute("ANALYZE"))
        lines.append(f"SQLite: generated in {time.perf_counter() - started:.1f} s")
        lines += [f"  {name:<26}{ms:>10.1f}" for name, ms in await timings(sqlite)]
        await sqlite.aclose()
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn:
        postgres = PostgresStorage(dsn)
        await postgres.migrate()
        started = time.perf_counter()

        async def fill(db: asyncpg.Connection) -> None:
            await db.execute(POSTGRES_FILL.format(rows=rows))
            await db.execute("DELETE FROM task_stats")
            await db.execute(rollup_backfill("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "true"))
            await db.execute("ANALYZE task_logs")

        await postgres._run(fill)
        lines.append(f"PostgreSQL: generated in {time.perf_counter() - started:.1f} s")
        lines += [f"  {name:<26}{ms:>10.1f}" for name, ms in await timings(postgres)]
        since = since_day(time.time() - 7 * 86400)
        plan = await postgres._run(
            lambda db: db.fetch("EXPLAIN ANALYZE " + stats_queries(POSTGRES)["providers"], since)
        )
        lines += ["", "PostgreSQL plan of the per-provider query, days=7 (reads the daily rollup):"]
        lines += ["  " + row[0] for row in plan]
        await postgres.aclose()
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('stats_queries', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    trio.run(main, parser.parse_args().rows)
