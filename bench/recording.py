"""The request log: the recorder's sustained insert rate, and request latency with it on and off.

    python -m bench.recording [--records 50000] [--requests 400] [--database-url postgresql://...]

Part 1 feeds the recorder actor as fast as it will take records and times how long storage
needs to hold them all (SQLite, and PostgreSQL in a fresh database). Part 2 runs `relaybox
serve` three times against the same fake upstream - request log off, on with SQLite, on with
PostgreSQL - side by side, and times sequential non-streaming requests, interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio
import trio.lowlevel
import trio_asyncio
from relaybox.actors.recorder import RecorderActor
from relaybox.actors.supervisor import RestartPolicy, Supervisor
from relaybox.storage.postgres import PostgresStorage
from relaybox.storage.records import AttemptRecord
from relaybox.storage.sqlite import SQLiteStorage

from bench.machine import write
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import wait_until_serving
from tests.storage_fixtures import ADMIN_DSN, fresh_postgres_database

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


def a_record(i: int) -> AttemptRecord:
    return AttemptRecord(
        id=str(uuid.uuid4()),
        created_at=time.time(),
        request_group_id=str(uuid.uuid4()),
        attempt=1,
        provider="openai",
        model_selected="gpt-4o-mini",
        model_requested="auto",
        prompt_summary="Say hello." * 5,
        tokens_in=120,
        tokens_out=40,
        cost_usd=0.0001,
        latency_ms=300,
        ttft_ms=120,
        heuristic_score=100,
    )


async def insert_rate(storage: SQLiteStorage | PostgresStorage, count: int) -> float:
    await storage.migrate()
    recorder = RecorderActor(storage, tempfile.mkdtemp(), buffer_limit=count + 1)
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("bench", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        started = time.perf_counter()
        for i in range(count):
            recorder.record(a_record(i))
            if i % 1000 == 0:
                await trio.lowlevel.checkpoint()
        while recorder.written < count:  # noqa: ASYNC110 - a bench polling a counter
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    assert recorder.dropped == 0
    return count / elapsed


@asynccontextmanager
async def relaybox(upstream: str, port: int, env_extra: dict[str, str]) -> AsyncIterator[str]:
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": upstream,
        "PATH": os.path.dirname(sys.executable),
        "RELAYBOX_DATA_DIR": tempfile.mkdtemp(),
        **env_extra,
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relaybox.web.cli", "serve", "--port", str(port)],
        env=env,
        stdout=-3,
        stderr=-3,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            await wait_until_serving(client)
        yield base
    finally:
        process.terminate()
        with trio.move_on_after(15):
            await process.wait()


async def interleaved(bases: list[str], requests: int) -> list[list[float]]:
    """Round-robin over the servers, one request at a time, so all see the same machine noise."""
    times: list[list[float]] = [[] for _ in bases]
    async with httpx.AsyncClient() as client:
        for i in range(requests + 50):
            for j, base in enumerate(bases):
                started = time.perf_counter()
                response = await client.post(base + "/v1/chat/completions", json=BODY)
                assert response.status_code == 200, response.text
                if i >= 50:
                    times[j].append((time.perf_counter() - started) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(records: int, requests: int, admin_dsn: str) -> None:
    lines = [f"part 1: recorder sustained insert rate, {records:,} records (batches of 500)"]
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SQLiteStorage(f"{directory}/bench.db")
        lines.append(f"  SQLite (WAL)                 {await insert_rate(sqlite, records):>10,.0f} records/s")
        await sqlite.aclose()
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn:
        postgres = PostgresStorage(dsn)
        lines.append(
            f"  PostgreSQL (asyncpg, unnest) {await insert_rate(postgres, records):>10,.0f} records/s"
        )
        await postgres.aclose()
        async with trio.open_nursery() as nursery:
            fake = await FakeOpenAI().start(nursery)
            runs = [
                ("request log off", {"RELAYBOX_RECORD": "0"}),
                ("log on, SQLite", {}),
                ("log on, PostgreSQL", {"DATABASE_URL": dsn}),
            ]
            port = 18500 + os.getpid() % 400
            async with (
                relaybox(fake.base_url, port, runs[0][1]) as off,
                relaybox(fake.base_url, port + 1, runs[1][1]) as on_sqlite,
                relaybox(fake.base_url, port + 2, runs[2][1]) as on_postgres,
            ):
                results = await interleaved([off, on_sqlite, on_postgres], requests)
            lines += [
                "",
                f"part 2: sequential non-streaming requests, n={requests} each, interleaved across the "
                "three servers",
                f"  {'run':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}",
            ]
            for (name, _), values in zip(runs, results, strict=True):
                lines.append(
                    f"  {name:<22}{pct(values, 0.5):>9.2f}{pct(values, 0.9):>9.2f}{pct(values, 0.99):>9.2f}"
                    f"{statistics.fmean(values):>9.2f}"
                )
            nursery.cancel_scope.cancel()
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('recording', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--database-url", default=ADMIN_DSN, help="an admin DSN: a fresh database is created")
    args = parser.parse_args()
    trio.run(main, args.records, args.requests, args.database_url)
