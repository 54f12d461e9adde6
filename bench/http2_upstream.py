"""Would HTTP/2 to an upstream lower relaybox's cost per request? httpx (relaybox's upstream client)
calling the same nginx over HTTP/1.1 and over HTTP/2, in one trio process, timed by its own CPU.

    python -m bench.http2_upstream [--seconds 8] [--concurrency 1,50]

relaybox's upstream calls are an httpx client's, so their cost is what this measures: the client
process's CPU time per request, and requests/s, for the same POST answered by nginx after 5 ms
(the other benchmarks' upstream), over cleartext HTTP/1.1 (how the benchmarks reach nginx), over
TLS with HTTP/1.1 (how relaybox reaches a hosted API), and over TLS with HTTP/2 (`http2=True`, the
`h2` package; nginx offers it by ALPN). Each request's body differs. Targets run in turn, the
order alternating over `--rounds`, and the best round of each is reported (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench.http_throughput import ANSWER, ensure_tools, free_port, run_nginx, stop
from bench.machine import ensure_installed, write

LATENCY_MS = 5


def self_signed(work: Path) -> tuple[Path, Path]:
    cert, key = work / "upstream.crt", work / "upstream.key"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
            ),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def start_upstream(work: Path, plain: int, tls: int, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    """One nginx answering on a cleartext port and on a TLS port that offers HTTP/2."""
    answer = json.dumps(ANSWER).replace("'", "\\'")
    servers = f"""  keepalive_requests 1000000;
  http2_max_requests 1000000;
  http2_max_concurrent_streams 1024;
  server {{
    listen 127.0.0.1:{plain} backlog=4096;
    listen 127.0.0.1:{tls} ssl http2 backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      echo_read_request_body;
      default_type application/json;
      echo_sleep {LATENCY_MS / 1000:.3f};
      echo '{answer}';
    }}
  }}"""
    return run_nginx(work, "nginx-h2", servers, f"http://127.0.0.1:{plain}/ready")


async def load(
    url: str, http2: bool, verify: str | bool, connections: int, seconds: float
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(http2=http2, verify=verify, limits=limits, timeout=30) as client:
        done, versions = 0, set()
        deadline = trio.current_time() + seconds

        async def worker(number: int) -> None:
            nonlocal done
            sent = 0
            while trio.current_time() < deadline:
                sent += 1
                body = {
                    "model": "m",
                    "messages": [{"role": "user", "content": f"Say hello. ({number}-{sent})"}],
                }
                response = await client.post(url, json=body)
                response.raise_for_status()
                versions.add(response.http_version)
                done += 1

        for _ in range(2):  # warm-up: connections made, TLS handshakes done
            await client.post(url, json={"warm": True})
        started_cpu, started = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for number in range(connections):
                nursery.start_soon(worker, number)
        cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    return {"rps": done / wall, "cpu_us": cpu / done * 1e6, "version": " ".join(sorted(versions))}


def main(seconds: float, levels: list[int], rounds: int) -> None:
    ensure_tools()
    ensure_installed("h2", "HTTP/2 in httpx")
    work = Path(tempfile.mkdtemp(prefix="relaybox-h2-"))
    plain, tls = free_port(), free_port()
    cert, key = self_signed(work)
    upstream = start_upstream(work, plain, tls, cert, key)
    targets = [
        ("HTTP/1.1, cleartext", f"http://127.0.0.1:{plain}/v1/chat/completions", False),
        ("HTTP/1.1, TLS", f"https://127.0.0.1:{tls}/v1/chat/completions", False),
        ("HTTP/2, TLS", f"https://127.0.0.1:{tls}/v1/chat/completions", True),
    ]
    best: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for connections in levels:
            for round_ in range(rounds):
                order = targets if round_ % 2 == 0 else targets[::-1]
                for name, url, http2 in order:
                    result = trio.run(load, url, http2, str(cert), connections, seconds)
                    print(f"  {name} at {connections}, round {round_ + 1}: {result}", flush=True)
                    if result["rps"] > best.get((name, connections), {"rps": 0})["rps"]:
                        best[(name, connections)] = result
    finally:
        stop(upstream)
    lines = [
        f"httpx {httpx.__version__} in one trio process, POST answered by nginx after {LATENCY_MS} ms, "
        f"{seconds:g} s per cell, best of {rounds} rounds",
        f"{'upstream':<22}{'conc':>5}{'req/s':>9}{'client CPU us/req':>19}  protocol seen",
    ]
    for connections in levels:
        for name, _, _ in targets:
            r = best[(name, connections)]
            lines.append(f"{name:<22}{connections:>5}{r['rps']:>9.0f}{r['cpu_us']:>19.0f}  {r['version']}")
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('http2_upstream', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", default="1,50")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    main(arguments.seconds, [int(c) for c in arguments.concurrency.split(",")], arguments.rounds)
