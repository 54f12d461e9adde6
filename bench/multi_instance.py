"""Several relaybox instances on one PostgreSQL behind nginx: what one kill -9 loses, and whether
budgets and key limits hold across the instances; and how far a budget goes over when the
database is slow, with `[budget] when_storage_slow` = allow and = deny.

    python -m bench.multi_instance [--instances 3] [--clients 16] [--seconds 9] [--rounds 3]

Upstream: nginx answering every chat completion after 20 ms (17 tokens, priced at $1,000 per
million tokens so that a budget of a few dollars is a hundred-odd requests). In front: nginx as
the load balancer, with the upstream block docs/operations.md gives (`proxy_next_upstream error timeout
http_503 non_idempotent`: a request an instance could not take goes to the next one).

1. kill -9: `--clients` clients (non-streaming, one request at a time each) through the balancer
   for `--seconds`; a third of the way in, one instance is killed -9, and restarted (on its data
   directory) two thirds of the way in. Counted: answered requests, errors clients saw, and
   answered requests whose record is not in `task_logs` once the restarted instance has replayed
   its journal.
2. a daily budget of $2 set through one instance; 32 clients through the balancer until every
   request is refused: what was spent (the sum of `cost_usd` of successful attempts) against the
   limit.
3. a client key limited to 100 requests a minute; 32 clients with it through the balancer for
   10 s: how many were answered.
4. one instance whose database connection is slowed to 5 s per round trip (a proxy) once the
   budget is set: 32 clients for 12 s, then the database is fast again; spent against the $2 limit,
   with `when_storage_slow` = allow and = deny.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import trio
from relaybox.storage.records import group_id

from bench.durable_log import psql
from bench.http_throughput import (
    ensure_tools,
    free_port,
    run_nginx,
    start_answering_nginx,
    start_relaybox,
    stop,
)
from bench.machine import write
from tests.fakes.tcp_proxy import CuttableProxy
from tests.storage_fixtures import ADMIN_DSN

BUDGET_USD = 2.0
KEY_RPM = 100
PRICED = [
    {
        "id": "bench",
        "apiKey": "sk-bench",
        "models": [{"id": "bench-model", "tier": "economy", "costPerMInput": 1000, "costPerMOutput": 1000}],
    }
]
BODY = {"model": "bench-model", "max_tokens": 5}


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"relaybox_bench_{uuid.uuid4().hex[:10]}"
    psql(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        psql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_instance(
    work: Path, port: int, upstream: str, dsn: str, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    providers = [{**PRICED[0], "baseUrl": upstream}]
    env = {"DATABASE_URL": dsn, "CUSTOM_PROVIDERS": json.dumps(providers), **(extra or {})}
    return start_relaybox(work, port, upstream, env=env)


def start_balancer(work: Path, port: int, instances: list[int]) -> subprocess.Popen[bytes]:
    """nginx in front of the instances, configured as docs/operations.md says."""
    members = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in instances)
    servers = f"""  upstream relaybox {{
{members}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://relaybox;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_next_upstream error timeout http_503 non_idempotent;
      proxy_next_upstream_tries 2;
    }}
  }}"""
    return run_nginx(work, f"balancer-{port}", servers, f"http://127.0.0.1:{port}/ping")


async def clients(
    base_url: str, count: int, seconds: float, headers: dict[str, str] | None = None
) -> tuple[list[str], int, int]:
    """(task ids answered, requests refused with a 4xx/5xx, connection errors) of `count` clients
    sending one request at a time for `seconds`."""
    answered: list[str] = []
    refused = errors = 0

    async def client_loop(index: int) -> None:
        nonlocal refused, errors
        async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:
            turn = 0
            while True:
                text = f"Client {index}, turn {turn}: say hello in one short sentence."
                body = {**BODY, "messages": [{"role": "user", "content": text}]}
                turn += 1
                try:
                    response = await client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    errors += 1
                    await trio.sleep(0.05)
                    continue
                if response.status_code == 200:
                    answered.append(response.headers["x-task-id"])
                else:
                    refused += 1
                    await trio.sleep(0.05)

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(client_loop, index)
    return answered, refused, errors


def spent(dsn: str) -> tuple[float, int]:
    row = psql(dsn, "SELECT coalesce(sum(cost_usd), 0), count(*) FROM task_logs WHERE status = 'success'")
    total, count = row[0].split("|")
    return float(total), int(count)


def wait_for_records(dsn: str, wanted: set[str], within: float = 30) -> set[str]:
    """The wanted request ids still missing from `task_logs` after at most `within` seconds."""
    deadline, missing = time.monotonic() + within, wanted
    while time.monotonic() < deadline:
        missing = wanted - set(psql(dsn, "SELECT request_group_id FROM task_logs"))
        if not missing:
            break
        time.sleep(0.5)
    return missing


def kill_round(work: Path, upstream: str, instances: int, count: int, seconds: float) -> dict[str, int]:
    with fresh_database() as dsn:
        ports = [free_port() for _ in range(instances)]
        processes = [start_instance(work, p, upstream, dsn) for p in ports]
        balancer_port = free_port()
        balancer = start_balancer(work, balancer_port, ports)
        victim = {}

        async def run() -> tuple[list[str], int, int]:
            async def chaos() -> None:
                await trio.sleep(seconds / 3)
                processes[1].kill()
                await trio.sleep(seconds / 3)
                victim["restarted"] = await trio.to_thread.run_sync(
                    start_instance, work, ports[1], upstream, dsn
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos)
                return await clients(f"http://127.0.0.1:{balancer_port}", count, seconds)

        try:
            answered, refused, errors = trio.run(run)
            missing = wait_for_records(dsn, {group_id(task) for task in answered})
        finally:
            stop(balancer)
            for process in [*processes, *victim.values()]:
                stop(process)
        return {"answered": len(answered), "refused": refused, "errors": errors, "lost": len(missing)}


def budget_round(work: Path, upstream: str, instances: int) -> tuple[float, int, int]:
    """(spent, answered, refused) with a $2 daily budget across the instances."""
    with fresh_database() as dsn:
        ports = [free_port() for _ in range(instances)]
        processes = [start_instance(work, p, upstream, dsn) for p in ports]
        balancer_port = free_port()
        balancer = start_balancer(work, balancer_port, ports)
        try:
            budget = {"period": "daily", "limit_usd": BUDGET_USD}
            httpx.put(f"http://127.0.0.1:{ports[0]}/api/budget", json=budget).raise_for_status()
            time.sleep(3)  # every instance reads budgets every 2 s
            answered, refused, _ = trio.run(clients, f"http://127.0.0.1:{balancer_port}", 32, 12.0)
            wait_for_records(dsn, {group_id(task) for task in answered})
            total, _ = spent(dsn)
        finally:
            stop(balancer)
            for process in processes:
                stop(process)
        return total, len(answered), refused


def key_round(work: Path, upstream: str, instances: int) -> tuple[int, int, int, int]:
    """(answered, refused, the most answered in one calendar minute, requests let through
    uncounted) for a key limited to KEY_RPM requests a minute, over 10 s (which may straddle two
    minutes)."""
    with fresh_database() as dsn:
        created = subprocess.run(
            [sys.executable, "-m", "relaybox.web.cli", "keys", "create", "bench", "--rpm", str(KEY_RPM)],
            env={**os.environ, "DATABASE_URL": dsn, "RELAYBOX_DATA_DIR": str(work / "keys")},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        key = re.findall(r"\S+", created)[-1]
        ports = [free_port() for _ in range(instances)]
        processes = [start_instance(work, p, upstream, dsn) for p in ports]
        balancer_port = free_port()
        balancer = start_balancer(work, balancer_port, ports)
        try:
            headers = {"Authorization": f"Bearer {key}"}
            answered, refused, _ = trio.run(clients, f"http://127.0.0.1:{balancer_port}", 32, 10.0, headers)
            uncounted = 0
            for port in ports:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers).text
                found = re.search(r'relaybox_key_checks_total\{outcome="uncounted"\} (\d+)', metrics)
                uncounted += int(found.group(1)) if found else 0
            wait_for_records(dsn, {group_id(task) for task in answered})
            minutes = psql(
                dsn,
                "SELECT count(*) FROM task_logs GROUP BY date_trunc('minute', created_at) ORDER BY 1 DESC",
            )
        finally:
            stop(balancer)
            for process in processes:
                stop(process)
        return len(answered), refused, int(minutes[0]) if minutes else 0, uncounted


def slow_database_round(work: Path, upstream: str, when_slow: str) -> tuple[float, int, int]:
    """(spent, answered, refused) on one instance whose database turns slow after the budget is set."""
    with fresh_database() as dsn:

        async def run() -> tuple[float, int, int]:
            async with trio.open_nursery() as nursery:
                proxy = await CuttableProxy("127.0.0.1", 5432).start(nursery)
                port = free_port()
                slowed = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
                extra = {"BUDGET_WHEN_STORAGE_SLOW": when_slow}
                process = await trio.to_thread.run_sync(start_instance, work, port, upstream, slowed, extra)
                try:
                    async with httpx.AsyncClient() as client:
                        budget = {"period": "daily", "limit_usd": BUDGET_USD}
                        (
                            await client.put(f"http://127.0.0.1:{port}/api/budget", json=budget)
                        ).raise_for_status()
                    await trio.sleep(3)
                    proxy.delay = 5.0
                    answered, refused, _ = await clients(f"http://127.0.0.1:{port}", 32, 12.0)
                    proxy.delay = 0.0
                    await trio.to_thread.run_sync(wait_for_records, dsn, {group_id(t) for t in answered}, 60)
                finally:
                    await trio.to_thread.run_sync(stop, process)
                nursery.cancel_scope.cancel()
            total, _ = spent(dsn)
            return total, len(answered), refused

        return trio.run(run)


def main(instances: int, count: int, seconds: float, rounds: int) -> None:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="relaybox-multi-"))
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    nginx = start_answering_nginx(work, upstream_port, 20)
    lines = [
        f"{instances} relaybox instances on one PostgreSQL behind nginx (proxy_next_upstream error timeout "
        "http_503 non_idempotent); upstream: nginx answering after 20 ms",
        "",
        f"1. kill -9 of one instance a third into {seconds:g} s of {count} clients, restarted two thirds in",
        f"{'round':>6}{'answered':>10}{'refused':>9}{'conn errors':>13}{'lost':>6}",
    ]
    try:
        for round_ in range(rounds):
            result = kill_round(work, upstream, instances, count, seconds)
            print(f"  kill round {round_ + 1}: {result}", flush=True)
            lines.append(
                f"{round_ + 1:>6}{result['answered']:>10}{result['refused']:>9}{result['errors']:>13}{result['lost']:>6}"
            )
        total, answered, refused = budget_round(work, upstream, instances)
        print(f"  budget: spent {total:.3f} of {BUDGET_USD}", flush=True)
        lines += [
            "",
            f"2. a daily budget of ${BUDGET_USD:.2f}, 32 clients through the balancer for 12 s",
            f"   spent ${total:.3f} ({total / BUDGET_USD:.1%} of the limit) on {answered} answered requests; "
            f"{refused} refused",
        ]
        key_answered, key_refused, most, uncounted = key_round(work, upstream, instances)
        lines += [
            "",
            f"3. a key limited to {KEY_RPM} requests a minute, 32 clients with it through the balancer for 10 s",
            f"   {key_answered} answered, {key_refused} refused; at most {most} answered in one calendar minute; "
            f"{uncounted} let through uncounted (the database took over 100 ms to count them)",
            "",
            f"4. one instance, its database slowed to 5 s per round trip after a ${BUDGET_USD:.2f} daily budget "
            "was set; 32 clients for 12 s",
            f"{'when_storage_slow':<20}{'spent $':>10}{'of limit':>10}{'answered':>10}{'refused':>9}",
        ]
        for when_slow in ("allow", "deny"):
            total, answered, refused = slow_database_round(work, upstream, when_slow)
            print(f"  slow database, {when_slow}: spent {total:.3f}", flush=True)
            lines.append(
                f"{when_slow:<20}{total:>10.3f}{total / BUDGET_USD:>10.1%}{answered:>10}{refused:>9}"
            )
    finally:
        stop(nginx)
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('multi_instance', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.instances, arguments.clients, arguments.seconds, arguments.rounds)
