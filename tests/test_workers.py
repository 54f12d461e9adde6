"""`relaybox serve --workers N`: N processes accept on one port and share the data directory."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, serve_environment


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_two_workers_share_the_port_and_stop_together(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.default = Reply(delay=0.05)
    data = tmp_path / "data"
    journal = data / "journal"
    journal.mkdir(parents=True)
    # A journal left by a third worker of an earlier run: worker 0 adopts and replays it.
    orphan = '{"id": "00000000-0000-4000-8000-000000000001", "created_at": 1.0, "request_group_id": '
    orphan += (
        '"00000000-0000-4000-8000-000000000002", "attempt": 1, "provider": "openai", "model_selected": "m"}\n'
    )
    (journal / "records-w2.jsonl").write_text(orphan)
    env = serve_environment(fake_openai.base_url, data)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relaybox.web.cli", "serve", "--workers", "2", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        first_line = b""
        with trio.fail_after(20):
            while b"\n" not in first_line:
                first_line += await process.stdout.receive_some(4096)
        base_url = first_line.decode().split("workers on ", 1)[1].split()[0]
        pids: set[int] = set()
        workers: set[int] = set()
        with trio.fail_after(30):
            while len(pids) < 2:
                try:  # a new connection each time: the kernel hands it to either worker
                    async with httpx.AsyncClient(base_url=base_url) as client:
                        actors = (await client.get("/actors")).json()
                        pids.add(actors["pid"])
                        workers.add(actors["worker"])
                except httpx.HTTPError:
                    await trio.sleep(0.1)
        statuses: list[int] = []

        async def one(i: int) -> None:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"request {i}"}]}
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert code == 0 and workers == {0, 1}
    assert statuses == [200] * 40
    await eventually(lambda: not any(alive(pid) for pid in pids), within=5)
    with sqlite3.connect(data / "relaybox.db") as db:
        recorded = db.execute("SELECT count(*) FROM task_logs WHERE status = 'success'").fetchone()[0]
        adopted = db.execute("SELECT count(*) FROM task_logs WHERE model_selected = 'm'").fetchone()[0]
    assert recorded == 41 and adopted == 1  # the orphan journal's record counts as a success
    assert not (journal / "records-w2.jsonl").exists()
