"""Streaming fan-out: many concurrent streams of 20 chunks 100 ms apart.

    python -m bench.streaming_fanout [--streams 1,100,400,1000]

The upstream is nginx with its echo module pacing an OpenAI-format SSE stream (20 content chunks
100 ms apart, then [DONE]); relaybox (`relaybox serve` on its defaults: model `auto`, so
routing on every stream, recording, cache, dedup and compression on, each stream's prompt its own;
the provider's own default slots and mailbox, so a stream refused for want of room counts as failed)
streams it through, as one process and with `--workers 2`; a bare
quart-trio endpoint generating the same stream itself, and a bare quart-trio + httpx relay passing
the upstream's bytes through (`bench.bare_stack`), are the stack's own ceilings, and the same relay
with the upstream read in a task of its own that passes each piece through a memory channel
("bare relay + hop") is what an actor design costs on that stack; LiteLLM's proxy
(one worker, as `bench.http_throughput` runs it; `--skip-litellm` leaves it out) is the peer. Every target gets
10 warm-up streams before anything is measured. The client is raw trio sockets (no
HTTP library in the way): each stream sends its request, then notes when data arrives. Reported
per target and level: failed streams (and of those, the ones refused with a status other than 200),
time to first content (p50/p99), gaps between arrivals
(p50/p99), the server's CPU seconds per 1,000 chunks delivered, and its RSS growth per open
stream (sampled at the peak; both summed over a server's worker processes).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from bench.bare_stack import STREAM_CHUNKS as CHUNKS
from bench.bare_stack import STREAM_GAP as GAP
from bench.http_throughput import (
    LITELLM_KEY,
    ensure_tools,
    free_port,
    start_litellm,
    start_nginx,
    stop,
    wait_until_up,
)
from bench.machine import percentile, write
from bench.plot import grouped_bars


def chunk(text: str) -> str:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return "data: " + json.dumps(body) + "\\n"


def start_streaming_nginx(work: Path, port: int) -> subprocess.Popen[bytes]:
    steps = [f"      echo '{chunk(f'w{i} ')}'; echo_flush; echo_sleep {GAP};" for i in range(CHUNKS)]
    location = "\n".join([*steps, "      echo 'data: [DONE]\\n';"])
    return start_nginx(work, port, location, content_type="text/event-stream")


def start_relaybox(
    work: Path,
    port: int,
    upstream: str,
    workers: int = 1,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> subprocess.Popen[bytes]:
    """`relaybox serve` on its defaults, run by `python` (another checkout's environment, for
    `bench.commits`), with `env` added to its environment."""
    (work / "relaybox.toml").write_text(
        f"""[providers.bench]
base_url = "{upstream}"
api_key = "sk-bench"
models = [{{ id = "bench-model", tier = "economy", input_per_mtok = 0.15, output_per_mtok = 0.6 }}]
"""
    )
    environment = {
        "PATH": os.path.dirname(python) + ":/usr/bin:/bin",
        "HOME": str(work),
        "RELAYBOX_DATA_DIR": str(work / f"relaybox-data-{port}"),
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            python,
            "-m",
            "relaybox.web.cli",
            "serve",
            "--port",
            str(port),
            "--config",
            str(work / "relaybox.toml"),
            "--workers",
            str(workers),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_up(f"http://127.0.0.1:{port}/ping")
    return process


def process_tree(pid: int) -> list[int]:
    """The process and its children (`--workers N` runs its workers as children)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, *children]


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_kb(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


STREAM_NUMBERS = itertools.count()


async def one_stream(
    port: int, path: str, results: list[tuple[float | None, list[float], bool]], key: str | None
) -> None:
    # Each stream's prompt differs, so relaybox's deduplication (on by default) has nothing to join.
    prompt = f"go {next(STREAM_NUMBERS)}"
    body = json.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": prompt}]})
    authorization = f"authorization: Bearer {key}\r\n" if key else ""
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{authorization}"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n{body}"
    ).encode()
    started = trio.current_time()
    first: float | None = None
    arrivals: list[float] = []
    ok = False
    status: int | None = None  # the answer's HTTP status, once its first bytes came
    try:
        with trio.fail_after(120):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                seen = b""
                # The stream ends at [DONE] (a server may keep the connection open after it).
                while b"[DONE]" not in seen and (chunk_bytes := await stream.receive_some(65536)):
                    now = trio.current_time()
                    if status is None:
                        status = int(chunk_bytes.split(b" ", 2)[1])
                    if b'"content"' in chunk_bytes:
                        if first is None:
                            first = now - started
                        arrivals.append(now)
                    seen = (seen + chunk_bytes)[-64:]
                ok = b"[DONE]" in seen
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        ok = False
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    results.append((first, gaps, ok and len(arrivals) >= CHUNKS // 2, status))


async def level(
    port: int, path: str, streams: int, server_pid: int | None, key: str | None = None
) -> dict[str, float]:
    results: list[tuple[float | None, list[float], bool, int | None]] = []
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    rss_before = rss_kb(server_pid) if server_pid else 0
    peak = rss_before

    async def watch() -> None:
        nonlocal peak
        while server_pid:
            peak = max(peak, rss_kb(server_pid))
            await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with trio.open_nursery() as clients:
            for _ in range(streams):
                clients.start_soon(one_stream, port, path, results, key)
        nursery.cancel_scope.cancel()
    firsts = [f for f, _, ok, _ in results if ok and f is not None]
    gaps = [g for _, gs, ok, _ in results if ok for g in gs]
    delivered = sum(len(gs) + 1 for _, gs, ok, _ in results if ok)
    cpu = (cpu_seconds(server_pid) - cpu_before) if server_pid else float("nan")
    return {
        "failed": sum(1 for *_, ok, _ in results if not ok),
        # Answered with another status than 200 (a 429 for want of room, say): refused, not broken.
        "refused": sum(1 for *_, status in results if status is not None and status != 200),
        "ttft50": percentile(firsts, 0.5) * 1000 if firsts else float("nan"),
        "ttft99": percentile(firsts, 0.99) * 1000 if firsts else float("nan"),
        "gap50": percentile(gaps, 0.5) * 1000 if gaps else float("nan"),
        "gap99": percentile(gaps, 0.99) * 1000 if gaps else float("nan"),
        "cpu_per_1000": cpu / delivered * 1000 if delivered and server_pid else float("nan"),
        "rss_per_stream": (peak - rss_before) / streams if server_pid else float("nan"),
    }


async def main(levels: list[int], skip_litellm: bool) -> None:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="relaybox-fanout-"))
    upstream_port, relay_port, relay2_port, bare_port, litellm_port = (free_port() for _ in range(5))
    processes = [start_streaming_nginx(work, upstream_port)]
    try:
        relay = start_relaybox(work, relay_port, f"http://127.0.0.1:{upstream_port}/v1")
        processes.append(relay)
        relay2 = start_relaybox(work, relay2_port, f"http://127.0.0.1:{upstream_port}/v1", workers=2)
        processes.append(relay2)
        bare = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is measured
            [
                sys.executable,
                "-m",
                "bench.bare_stack",
                "--port",
                str(bare_port),
                "--upstream",
                f"http://127.0.0.1:{upstream_port}/v1",
            ],
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(bare)
        wait_until_up(f"http://127.0.0.1:{bare_port}/ready")
        targets: list[tuple[str, int, str, int | None, str | None]] = [
            ("direct (nginx)", upstream_port, "/v1/chat/completions", None, None),
            ("bare quart-trio", bare_port, "/stream/v1/chat/completions", bare.pid, None),
            ("bare relay", bare_port, "/relay/v1/chat/completions", bare.pid, None),
            ("bare relay + hop", bare_port, "/hop/v1/chat/completions", bare.pid, None),
            ("relaybox", relay_port, "/v1/chat/completions", relay.pid, None),
            ("relaybox -w 2", relay2_port, "/v1/chat/completions", relay2.pid, None),
        ]
        if not skip_litellm:
            litellm = start_litellm(work, litellm_port, f"http://127.0.0.1:{upstream_port}/v1")
            processes.append(litellm)
            targets.append(("LiteLLM proxy", litellm_port, "/v1/chat/completions", litellm.pid, LITELLM_KEY))
        for _, port, path, _, key in targets:  # warm-up: connections and clients made before anything counts
            await level(port, path, 10, None, key)
        results = {}
        for streams in levels:
            for name, port, path, pid, key in targets:
                results[(name, streams)] = await level(port, path, streams, pid, key)
                print(f"  {name} x {streams}: {results[(name, streams)]}", flush=True)
                await trio.sleep(1)
    finally:
        for process in reversed(processes):
            stop(process)
    lines = [
        f"{CHUNKS} content chunks {GAP * 1000:.0f} ms apart per stream; raw-socket client; prompts all different; "
        "relaybox on its defaults (model auto, recording, cache, dedup, compression on)",
        f"{'target':<17}{'streams':>8}{'failed':>7}{'refused':>8}{'TTFT p50':>10}{'TTFT p99':>10}{'gap p50':>9}{'gap p99':>9}"
        f"{'CPU s/1k chunks':>16}{'RSS KB/stream':>14}",
    ]
    for streams in levels:
        for name, *_ in targets:
            r = results[(name, streams)]
            lines.append(
                f"{name:<17}{streams:>8}{r['failed']:>7.0f}{r['refused']:>8.0f}{r['ttft50']:>10.0f}{r['ttft99']:>10.0f}{r['gap50']:>9.0f}"
                f"{r['gap99']:>9.0f}{r['cpu_per_1000']:>16.2f}{r['rss_per_stream']:>14.0f}"
            )
        relaybox, bare_relay = results[("relaybox", streams)], results[("bare relay", streams)]
        summary = (
            f"{'':<22}relaybox's TTFT p50 {relaybox['ttft50'] / bare_relay['ttft50']:.2f}x the bare relay's"
        )
        if not skip_litellm:
            summary += f", {results[('LiteLLM proxy', streams)]['ttft50'] / relaybox['ttft50']:.1f}x faster than LiteLLM"
        lines.append(summary)
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('streaming_fanout', table)}")
    served = [name for name, *_ in targets]
    measured = [name for name, _, _, pid, _ in targets if pid]

    def series(metric: str, names: list[str]) -> dict[str, list[float]]:
        return {name: [results[(name, streams)][metric] for streams in levels] for name in names}

    picture = grouped_bars(
        "streaming_fanout",
        [
            ("first content p50, ms", series("ttft50", served)),
            ("gap p99, ms", series("gap99", served)),
            ("CPU s per 1k chunks", series("cpu_per_1000", measured)),
        ],
        [f"{streams} streams" for streams in levels],
        title=f"Concurrent SSE streams, {CHUNKS} chunks {GAP * 1000:.0f} ms apart",
        log_panels=frozenset({"first content p50, ms"}),
    )
    print(f"written to {picture}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,100,400,1000")
    parser.add_argument("--skip-litellm", action="store_true")
    arguments = parser.parse_args()
    trio.run(main, [int(n) for n in arguments.streams.split(",")], arguments.skip_litellm)
