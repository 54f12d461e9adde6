"""Answered means recorded: an answered request's record is in the journal before the answer's
last byte leaves, so killing relaybox (kill -9) loses no record of an answer a client got."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
import trio
from relaybox.actors import recorder as recorder_module
from relaybox.actors.recorder import RecorderActor
from relaybox.actors.supervisor import RestartPolicy, Supervisor
from relaybox.storage.journal import Journal
from relaybox.storage.records import group_id
from relaybox.storage.sqlite import SQLiteStorage

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, serving_child, settings_for
from tests.test_recorder_faults import a_record

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def journaled_groups(directory: Path) -> set[str]:
    return {
        json.loads(line)["request_group_id"]
        for segment in directory.glob("*.jsonl")
        for line in segment.read_text().splitlines()
        if line.strip()
    }


async def test_an_answer_ends_only_once_its_record_is_in_the_journal(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    journal = Path(settings.data_dir) / "journal" / "w0"
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        plain = await client.post("/v1/chat/completions", json=HELLO)
        plain_journaled = journaled_groups(journal)  # read before anything else may run
        streamed = {**HELLO, "stream": True, "messages": [{"role": "user", "content": "streamed"}]}
        async with client.stream("POST", "/v1/chat/completions", json=streamed) as response:
            text = (await response.aread()).decode()
            stream_journaled = journaled_groups(journal)
    assert plain.status_code == 200 and text.rstrip().endswith("[DONE]")
    assert group_id(plain.headers["x-task-id"]) in plain_journaled
    assert group_id(response.headers["x-task-id"]) in stream_journaled


def writers_of(data: Path) -> list[int]:
    """Pids of live SQLite writer processes on the log in `data`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = b"relaybox.storage.sqlite_writer" in command and str(data).encode() in b" ".join(command)
        if ours and state != "Z":
            pids.append(int(entry.name))
    return pids


async def test_kill_9_under_load_loses_no_answered_request(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """16 clients, streaming and not, then kill -9 at a random moment and a restart: every
    request that got its whole answer is in the request log."""
    fake_openai.replies.default = Reply(delay=0.01, pieces=3, chunk_delay=0.005)
    data = tmp_path / "data"
    process, base_url = await serving_child(fake_openai, data)
    answered: list[str] = []
    rng = random.Random(17)

    async def client_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            for turn in range(10_000):
                body = {**HELLO, "messages": [{"role": "user", "content": f"{index}-{turn}"}]}
                try:
                    if turn % 2:
                        async with client.stream(
                            "POST", "/v1/chat/completions", json={**body, "stream": True}
                        ) as r:
                            if (await r.aread()).rstrip().endswith(b"data: [DONE]"):
                                answered.append(r.headers["x-task-id"])
                    else:
                        r = await client.post("/v1/chat/completions", json=body)
                        if r.status_code == 200 and r.json()["choices"][0]["message"]["content"]:
                            answered.append(r.headers["x-task-id"])
                except (httpx.HTTPError, json.JSONDecodeError):
                    return  # relaybox is gone

    try:
        async with trio.open_nursery() as nursery:
            for index in range(16):
                nursery.start_soon(client_loop, index)
            await trio.sleep(1.5 + rng.random())
            assert writers_of(data), "the request log's writer process runs beside relaybox"
            process.kill()  # SIGKILL: no drain, no flush, nothing
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL and len(answered) > 50, "enough load to lose some"
    # Its request log's writer process sees its pipe close and ends too: nothing is left running.
    await eventually(lambda: not writers_of(data), within=10)
    restarted, _ = await serving_child(fake_openai, data)
    try:

        def missing() -> set[str]:
            with sqlite3.connect(data / "relaybox.db") as db:
                logged = {row[0] for row in db.execute("SELECT request_group_id FROM task_logs")}
            return {group_id(task) for task in answered} - logged

        with contextlib.suppress(trio.TooSlowError):
            await eventually(lambda: not missing(), within=20, poll=0.2)
        lost = missing()
    finally:
        restarted.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await restarted.wait()
    assert not lost, f"{len(lost)} of {len(answered)} answered requests are not in the log"


async def test_with_the_journal_failing_answers_go_on_and_health_says_so(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    blocked = Path(settings.data_dir) / "journal"
    blocked.mkdir(parents=True)
    (blocked / "w0").write_text("a file where the journal's directory should be")
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        statuses = [(await client.post("/v1/chat/completions", json=HELLO)).status_code for _ in range(3)]
        health = (await client.get("/health")).json()
        recorder = relay.system.recorder
        await eventually(lambda: recorder.written == 3, within=10)
    assert statuses == [200] * 3
    assert health["status"] == "degraded" and health["storage"]["journal_failed"]


async def test_fsync_mode_flushes_every_group_of_records_to_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushed.append(fd), real(fd)))
    storage = SQLiteStorage(str(tmp_path / "relaybox.db"))
    recorder = RecorderActor(storage, str(tmp_path / "journal"), journal="fsync")
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("root", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        async with trio.open_nursery() as answers:
            for i in range(20):
                answers.start_soon(recorder.recorded, a_record(i))
        assert 1 <= len(flushed) <= 20, "one flush per write, and a write takes what arrived meanwhile"
        assert len(journaled_groups(tmp_path / "journal")) == 20
        nursery.cancel_scope.cancel()
    await storage.aclose()


async def test_a_disk_that_hangs_on_a_flush_stops_holding_answers_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "JOURNAL_WAIT", 0.3)
    released = threading.Event()
    real_append = Journal.append

    def hanging_append(self: Journal, lines: bytes) -> Path:
        released.wait(30)
        return real_append(self, lines)

    monkeypatch.setattr(Journal, "append", hanging_append)
    storage = SQLiteStorage(str(tmp_path / "relaybox.db"))
    recorder = RecorderActor(storage, str(tmp_path / "journal"), journal="fsync")
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("root", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        started = trio.current_time()
        await recorder.recorded(a_record(1))
        assert 0.3 <= trio.current_time() - started < 2
        assert recorder.statistics().journal_slow
        started = trio.current_time()
        await recorder.recorded(a_record(2))
        assert trio.current_time() - started < 0.1, "a slow journal no longer holds answers back"
        monkeypatch.setattr(Journal, "append", real_append)
        released.set()
        await eventually(lambda: recorder.written == 2, within=30)
        await recorder.recorded(a_record(3))
        await eventually(lambda: not recorder.statistics().journal_slow, within=30)
        nursery.cancel_scope.cancel()
    await storage.aclose()


def test_journals_no_running_worker_replays_join_worker_0s(tmp_path: Path) -> None:
    from relaybox.web.system import _adopt_journals

    root = tmp_path / "journal"
    (root / "w3").mkdir(parents=True)
    (root / "w3" / "000000000000.jsonl").write_text("a\n")
    (root / "w1").mkdir()
    (root / "w1" / "000000000000.jsonl").write_text("still worker 1's\n")
    (root / "records.jsonl").write_text("an older relaybox's journal\n")
    (root / "records-w5.jsonl.replaying").write_text("an older relaybox's fifth worker's\n")
    (root / "w0").mkdir()
    (root / "w0" / "adopted-w3-000000000000.jsonl").write_text("adopted earlier, not yet replayed\n")
    _adopt_journals(root, worker=0, workers=2)
    adopted = sorted(path.read_text() for path in (root / "w0").iterdir())
    assert adopted == sorted(
        [
            "a\n",
            "adopted earlier, not yet replayed\n",
            "an older relaybox's journal\n",
            "an older relaybox's fifth worker's\n",
        ]
    )
    assert not (root / "w3").exists() and (root / "w1" / "000000000000.jsonl").exists()
