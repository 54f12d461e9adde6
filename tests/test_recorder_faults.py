"""The database goes away under load: every request is still served, and no record is lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import trio
import trio.lowlevel
import trio_asyncio
from relaybox.actors.recorder import RecorderActor
from relaybox.actors.supervisor import RestartPolicy, Supervisor
from relaybox.storage.contract import StorageError
from relaybox.storage.records import AttemptRecord, Budget
from relaybox.storage.sqlite import SQLiteStorage

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.tcp_proxy import CuttableProxy
from tests.harness import (
    eventually,
    openai_provider,
    serve,
    serve_environment,
    settings_for,
    wait_until_serving,
)
from tests.scripted import Answer, ScriptedTransport
from tests.storage_fixtures import fresh_postgres_database


class SwitchableStorage(SQLiteStorage):
    """SQLite that can be made to fail like a database that is down."""

    down = False

    async def insert_records(self, records: list[AttemptRecord]) -> int:
        if self.down:
            raise StorageError("storage is down (test)")
        return await super().insert_records(records)

    async def migrate(self) -> int:
        if self.down:
            raise StorageError("storage is down (test)")
        return await super().migrate()


def a_record(i: int) -> AttemptRecord:
    return AttemptRecord(
        id=str(uuid.uuid4()),
        created_at=1.8e9 + i,
        request_group_id=str(uuid.uuid4()),
        attempt=1,
        provider="p",
        model_selected="m",
    )


def journal_lines(directory: Path) -> list[str]:
    return [
        line for segment in sorted(directory.glob("*.jsonl")) for line in segment.read_text().splitlines()
    ]


async def test_a_full_buffer_is_left_to_the_journal_and_replayed(tmp_path: Path) -> None:
    storage = SwitchableStorage(str(tmp_path / "db.sqlite"))
    storage.down = True
    journal = tmp_path / "journal"
    recorder = RecorderActor(
        storage,
        str(journal),
        buffer_limit=100,
        batch_size=50,
        flush_interval=0.01,
        backoff_initial=0.01,
        backoff_max=0.05,
    )
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("t", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        for i in range(1000):
            recorder.record(a_record(i))
            if i % 100 == 0:
                await trio.lowlevel.checkpoint()
        await eventually(lambda: recorder.journaled >= 900, within=5)
        assert recorder.storage_up is False and recorder.dropped == 0
        assert recorder.statistics().buffered < 100, "what the journal holds need not stay in memory"
        lines = journal_lines(journal)
        assert len(lines) == 1000 and AttemptRecord.from_json(json.loads(lines[0])).provider == "p"
        storage.down = False
        await eventually(lambda: recorder.written == 1000, within=10)
        assert recorder.journaled == 0 and await storage.record_count() == 1000
        await supervisor.stop("recorder")
        nursery.cancel_scope.cancel()
    assert journal_lines(journal) == [], "a stop deletes the segments storage holds"
    await storage.aclose()


async def test_a_killed_writer_process_is_started_again_and_no_record_is_lost(tmp_path: Path) -> None:
    """The request log's writer process dies (kill -9) while records keep coming: the batch it
    held is sent again to a new one, and every record is stored once."""
    storage = SQLiteStorage(str(tmp_path / "db.sqlite"))
    recorder = RecorderActor(
        storage, str(tmp_path / "journal"), batch_size=50, flush_interval=0.01, backoff_initial=0.01
    )
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("t", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        for i in range(600):
            recorder.record(a_record(i))
            if i == 200:
                await eventually(lambda: recorder.written > 0, within=10)
                writer = storage._writer._process
                assert writer is not None
                writer.kill()
            if i % 20 == 0:
                await trio.sleep(0.005)
        await eventually(lambda: recorder.written >= 600, within=20)
        await supervisor.stop("recorder")
        nursery.cancel_scope.cancel()
    assert storage._writer.started == 2 and await storage.record_count() == 600
    await storage.aclose()
    assert storage._writer._process is None


async def test_shutdown_with_storage_down_keeps_the_journal_and_a_restart_replays(tmp_path: Path) -> None:
    storage = SwitchableStorage(str(tmp_path / "db.sqlite"))
    storage.down = True
    journal = tmp_path / "journal"
    recorder = RecorderActor(
        storage, str(journal), flush_interval=0.01, backoff_initial=0.01, shutdown_grace=0.2
    )
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("t", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        for i in range(250):
            recorder.record(a_record(i))
        await supervisor.stop("recorder")
        nursery.cancel_scope.cancel()
    assert len(journal_lines(journal)) == 250
    storage.down = False
    again = RecorderActor(storage, str(journal), flush_interval=0.01)
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("t", RestartPolicy()).run)
        await supervisor.start_child(again)
        await eventually(lambda: again.written == 250, within=5)
        nursery.cancel_scope.cancel()
    assert await storage.record_count() == 250
    await storage.aclose()


async def test_postgres_cut_under_load_loses_nothing(tmp_path: Path) -> None:
    transports = {"solo": ScriptedTransport(default=Answer("ok"))}
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn, trio.open_nursery() as nursery:
        proxy = await CuttableProxy("127.0.0.1", 5432).start(nursery)
        proxied = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        settings = settings_for(
            tmp_path,
            openai_provider("solo", "http://unused", models=("m",), slots=64, mailbox=64),
            database_url=proxied,
        )
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        statuses: list[int] = []

        async def burst(client: httpx.AsyncClient, count: int) -> None:
            async def one() -> None:
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)

            async with trio.open_nursery() as requests:
                for _ in range(count):
                    requests.start_soon(one)

        async with (
            serve(settings, lambda config, settings: transports[config.name]) as relay,
            httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
        ):
            recorder = relay.system.recorder
            for _ in range(6):
                await burst(client, 50)
            await eventually(lambda: recorder.written == 300, within=10)
            proxy.cut()
            for _ in range(14):
                await burst(client, 50)
            await eventually(lambda: recorder.storage_up is False, within=10)
            health = (await client.get("/health")).json()
            stats_while_down = await client.get("/api/stats")
            proxy.restore()
            await eventually(lambda: recorder.written == 1000, within=30)
            assert await relay.system.storage.record_count() == 1000
        nursery.cancel_scope.cancel()
    assert statuses == [200] * 1000
    assert (
        health["storage"]["up"] is False
        and health["storage"]["buffered"] + health["storage"]["journaled"] > 0
    )
    assert stats_while_down.status_code == 503


async def test_a_database_too_slow_to_answer_never_takes_relaybox_down(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # Budget checks time out against it; asyncpg then leaves errors on futures nobody awaits, which
    # trio-asyncio used to raise into relaybox's nursery: the whole server went down.
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn, trio.open_nursery() as nursery:
        proxy = await CuttableProxy("127.0.0.1", 5432).start(nursery)
        paid = openai_provider("paid", fake_openai.base_url, slots=64, mailbox=64)
        slowed = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        statuses: list[int] = []
        async with (
            serve(settings_for(tmp_path, paid, database_url=slowed)) as relay,
            httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
        ):
            await relay.system.storage.put_budget(Budget("daily", 100.0, True))
            await eventually(lambda: relay.system.budget.windows(0), within=5)
            proxy.delay = 1.5  # a round trip of 3 s: longer than the budget check waits

            async def ask(text: str) -> None:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)

            for wave in range(2):
                async with trio.open_nursery() as requests:
                    for i in range(32):
                        requests.start_soon(ask, f"{wave}-{i}")
            proxy.delay = 0.0
        nursery.cancel_scope.cancel()
    assert statuses == [200] * 64


async def test_sigterm_during_load_loses_no_record(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    from tests.fakes.scripts import Reply

    fake_openai.replies.default = Reply(delay=0.05)
    data = tmp_path / "data"
    env = serve_environment(fake_openai.base_url, data)
    port = 20000 + os.getpid() % 20000
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relaybox.web.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    answered = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await wait_until_serving(client)

            async def one(i: int) -> None:
                nonlocal answered
                try:
                    response = await client.post(
                        "/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]},
                    )
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    answered += 1

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
                    if i == 120:
                        process.send_signal(signal.SIGTERM)
                    await trio.sleep(0.005)
        with trio.fail_after(30):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert code == 0 and answered > 20, "enough requests were answered to lose some"
    with sqlite3.connect(data / "relaybox.db") as db:
        recorded = db.execute("SELECT count(*) FROM task_logs WHERE status = 'success'").fetchone()[0]
    assert recorded >= answered, f"{answered} answered but {recorded} recorded"


class SlowStorage(SwitchableStorage):
    """Inserts take a while: spills and journal replays overlap with them."""

    async def insert_records(self, records: list[AttemptRecord]) -> int:
        await trio.sleep(0.05)
        return await super().insert_records(records)


async def test_spills_and_replays_racing_slow_inserts_lose_nothing(tmp_path: Path) -> None:
    storage = SlowStorage(str(tmp_path / "db.sqlite"))
    storage.down = True
    recorder = RecorderActor(
        storage,
        str(tmp_path / "journal"),
        buffer_limit=40,
        batch_size=25,
        flush_interval=0.01,
        backoff_initial=0.01,
        backoff_max=0.02,
    )
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("t", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        for i in range(300):
            recorder.record(a_record(i))
            await trio.lowlevel.checkpoint()
        await eventually(lambda: recorder.journaled > 0, within=5)
        storage.down = False
        for i in range(300, 900):  # keep spilling while the journal replays and batches are in flight
            recorder.record(a_record(i))
            if i % 10 == 0:
                await trio.sleep(0.005)
        await eventually(lambda: recorder.written >= 900 and not recorder.journaled, within=30)
        nursery.cancel_scope.cancel()
    assert await storage.record_count() == 900
    await storage.aclose()
