"""What client keys and their limits cost a request: relaybox with no key, with a key, and with a
key whose requests and tokens per minute are counted in the database (the SQLite file here).

    python -m bench.key_limits [--seconds 10] [--latency-ms 5] [--concurrency 1,50]

The same set-up as `bench.http_throughput` (nginx answering after a fixed delay, load from wrk,
routing and recording on, dedup off), one relaybox per row, each in its own data directory. The
limits are set far above the load, so every request is counted and none is refused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.http_throughput import (
    ensure_tools,
    free_port,
    measure,
    start_answering_nginx,
    start_relaybox,
    stop,
)
from bench.machine import write

ROWS = (
    ("no client key", None),
    ("key, no limits", ()),
    ("key, --rpm --tpm", ("--rpm", "100000000", "--tpm", "100000000000")),
)


def create_key(work: Path, port: int, limits: tuple[str, ...]) -> str:
    """A key in the data directory `start_relaybox` will use for `port`."""
    env = {**os.environ, "RELAYBOX_DATA_DIR": str(work / f"relaybox-data-{port}")}
    env.pop("DATABASE_URL", None)
    created = subprocess.run(
        [sys.executable, "-m", "relaybox.web.cli", "keys", "create", "bench", *limits],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def main(seconds: int, latency_ms: float, levels: list[int]) -> None:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="relaybox-bench-keys-"))
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    processes = [start_answering_nginx(work, upstream_port, latency_ms)]
    try:
        targets = []
        for name, limits in ROWS:
            port = free_port()
            headers = {}
            if limits is not None:
                headers["Authorization"] = f"Bearer {create_key(work, port, limits)}"
            processes.append(start_relaybox(work, port, upstream))
            targets.append((name, f"http://127.0.0.1:{port}/v1/chat/completions", headers))
        results = measure(targets, levels, seconds, work)
    finally:
        for process in reversed(processes):
            stop(process)
    lines = [
        f"wrk, {seconds} s per cell, POST /v1/chat/completions (model auto), upstream nginx echo with "
        f"{latency_ms:g} ms fixed latency; relaybox: routing + SQLite recording on, dedup off",
        f"{'relaybox':<20}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}",
    ]
    for connections in levels:
        for name, _ in ROWS:
            r = results[(name, connections)]
            lines.append(
                f"{name:<20}{connections:>5}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['errors']:>8.0f}"
            )
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('key_limits', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,50")
    arguments = parser.parse_args()
    main(arguments.seconds, arguments.latency_ms, [int(c) for c in arguments.concurrency.split(",")])
