"""The durable request log: what each `[storage] journal` setting costs a request, and what a
kill -9 of relaybox loses.

    python -m bench.durable_log [--seconds 8] [--concurrency 1,50] [--rounds 3]
                                [--kill-rounds 3] [--kill-seconds 6] [--base REV]

Part 1: `relaybox serve` with the journal "off" (answers do not wait for it), "os" (the default:
an answer's record is handed to the operating system before the answer ends) and "fsync" (and
flushed to the disk), on SQLite, against the nginx upstream of `bench.http_throughput` (5 ms
fixed latency); the same wrk run goes to each in turn, the order rotating from round to round.
Reported: requests/s and latency (median over the rounds, and the range), and the ratio to "off".

Part 2: 16 clients (non-streaming, one request at a time each) for `--kill-seconds` against
`relaybox serve` on PostgreSQL (a fresh database per run), then kill -9, then a restart on the
same data directory and database; once the restart has replayed its journal (or 30 s passed),
the answered requests (the client got a 200 with an answer) whose record is not in `task_logs`
are counted. Per setting, and with `--base REV` for an earlier commit too (in its own worktree
and environment, as `bench.commits` does), to show what it lost.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import trio
from relaybox.storage.records import group_id

from bench.commits import REPO, checkout
from bench.http_throughput import (
    BODY,
    ensure_tools,
    free_port,
    start_answering_nginx,
    start_relaybox,
    stop,
    wrk,
)
from bench.machine import write
from tests.storage_fixtures import ADMIN_DSN

MODES = ("off", "os", "fsync")
CLIENTS = 16


def latency_cost(work: Path, upstream: str, seconds: int, levels: list[int], rounds: int) -> str:
    servers = []
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for mode in MODES:
            port = free_port()
            servers.append((mode, port, start_relaybox(work, port, upstream, env={"RELAYBOX_JOURNAL": mode})))
        for connections in levels:
            for round_ in range(rounds):
                order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
                for mode, port, _ in order:
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    wrk(url, connections, 2, work, {})
                    result = wrk(url, connections, seconds, work, {})
                    results.setdefault((mode, connections), []).append(result)
                    print(f"  journal {mode} at {connections}, round {round_ + 1}: {result}", flush=True)
    finally:
        for _, _, process in servers:
            stop(process)
    lines = [
        f"part 1: wrk, {seconds} s per cell, {rounds} rounds in rotating order, POST /v1/chat/completions "
        "(model auto), nginx upstream with 5 ms fixed latency; SQLite; median over the rounds [lowest, highest]",
        f"{'journal':<10}{'conc':>5}{'req/s':>24}{'p50 ms':>22}{'p99 ms':>22}{'req/s vs off':>14}",
    ]
    for connections in levels:
        baseline = statistics.median(r["rps"] for r in results[("off", connections)])
        for mode in MODES:
            runs = results[(mode, connections)]
            cells = []
            for metric in ("rps", "p50", "p99"):
                values = [r[metric] for r in runs]
                cells.append(f"{statistics.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]")
            ratio = statistics.median(r["rps"] for r in runs) / baseline
            lines.append(
                f"{mode:<10}{connections:>5}{cells[0]:>24}{cells[1]:>22}{cells[2]:>22}{ratio:>13.2f}x"
            )
    return "\n".join(lines)


def psql(dsn: str, sql: str) -> list[str]:
    output = subprocess.run(
        ["psql", "-At", dsn, "-c", sql], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in output.splitlines() if line]


async def load(base_url: str, seconds: float) -> list[str]:
    """The task ids of the requests answered until `seconds` passed (or relaybox went away)."""
    answered: list[str] = []

    async def client_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            turn = 0
            while True:
                body = {**BODY, "messages": [{"role": "user", "content": f"{index}-{turn}"}]}
                turn += 1
                try:
                    response = await client.post("/v1/chat/completions", json=body)
                    if response.status_code == 200 and response.json()["choices"][0]["message"]["content"]:
                        answered.append(response.headers["x-task-id"])
                except (httpx.HTTPError, ValueError):
                    return

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for index in range(CLIENTS):
                nursery.start_soon(client_loop, index)
    return answered


def kill_run(work: Path, upstream: str, seconds: float, mode: str, python: str) -> tuple[int, int]:
    """(answered, of those not in the log after a restart)."""
    name = f"relaybox_bench_{uuid.uuid4().hex[:10]}"
    psql(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    port = free_port()
    env = {"RELAYBOX_JOURNAL": mode, "DATABASE_URL": dsn}
    try:
        process = start_relaybox(work, port, upstream, python=python, env=env)
        answered = trio.run(load, f"http://127.0.0.1:{port}", seconds)
        process.kill()
        process.wait()
        restarted = start_relaybox(work, port, upstream, python=python, env=env)
        wanted = {group_id(task) for task in answered}
        deadline = time.monotonic() + 30
        missing = wanted
        while time.monotonic() < deadline:
            logged = set(psql(dsn, "SELECT request_group_id FROM task_logs"))
            missing = wanted - logged
            if not missing:
                break
            time.sleep(0.5)
        stop(restarted)
        return len(answered), len(missing)
    finally:
        psql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(
    seconds: int, levels: list[int], rounds: int, kill_rounds: int, kill_seconds: float, base: str | None
) -> None:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="relaybox-durable-"))
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    nginx = start_answering_nginx(work, upstream_port, 5)
    try:
        part1 = latency_cost(work, upstream, seconds, levels, rounds)
        candidates = [(f"journal {mode}", mode, sys.executable) for mode in MODES]
        if base is not None:
            base_python, base_name = checkout(base, work)
            candidates.insert(0, (f"{base_name} (before)", "os", base_python))
        kills: dict[str, list[tuple[int, int]]] = {}
        for round_ in range(kill_rounds):
            for label, mode, python in candidates:
                outcome = kill_run(work, upstream, kill_seconds, mode, python)
                kills.setdefault(label, []).append(outcome)
                print(
                    f"  kill -9, {label}, round {round_ + 1}: {outcome[0]} answered, {outcome[1]} lost",
                    flush=True,
                )
    finally:
        stop(nginx)
        if base is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "base")])
    lines = [
        part1,
        "",
        f"part 2: kill -9 after {kill_seconds:g} s of {CLIENTS} clients (non-streaming), PostgreSQL, then a restart",
        f"{'relaybox':<24}{'runs':>5}{'answered':>10}{'lost':>6}   lost per run",
    ]
    for label, outcomes in kills.items():
        answered = sum(a for a, _ in outcomes)
        lost = sum(m for _, m in outcomes)
        per_run = ", ".join(f"{m}/{a}" for a, m in outcomes)
        lines.append(f"{label:<24}{len(outcomes):>5}{answered:>10}{lost:>6}   {per_run}")
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('durable_log', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="1,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-rounds", type=int, default=3)
    parser.add_argument("--kill-seconds", type=float, default=6.0)
    parser.add_argument("--base", help="an earlier commit to run the kill -9 part against too")
    arguments = parser.parse_args()
    main(
        arguments.seconds,
        [int(n) for n in arguments.concurrency.split(",")],
        arguments.rounds,
        arguments.kill_rounds,
        arguments.kill_seconds,
        arguments.base,
    )
