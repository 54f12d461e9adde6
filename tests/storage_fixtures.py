"""Storage back ends for tests: a SQLite file, and a fresh database on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import trio_asyncio
from relaybox.storage.postgres import PostgresStorage
from relaybox.storage.sqlite import SQLiteStorage

# The machine's PostgreSQL (trust auth); .ci/run starts it when it is not running.
ADMIN_DSN = os.environ.get("RELAYBOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new, empty database for one test; dropped afterwards. Must run inside a trio-asyncio loop."""
    name = f"relaybox_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(ADMIN_DSN)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    await trio_asyncio.aio_as_trio(admin)(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await trio_asyncio.aio_as_trio(admin)(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def storage_backend(kind: str, tmp_path: Path) -> AsyncIterator[SQLiteStorage | PostgresStorage]:
    if kind == "sqlite":
        storage = SQLiteStorage(str(tmp_path / "relaybox.db"))
        try:
            yield storage
        finally:
            await storage.aclose()
        return
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn:
        postgres = PostgresStorage(dsn)
        try:
            yield postgres
        finally:
            await postgres.aclose()
