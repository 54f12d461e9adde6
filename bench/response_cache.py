"""The response cache on a replayed workload with repeats: hit rate, and the latency of a hit
against a miss, with the cache on and off.

    python -m bench.response_cache [--requests 400] [--prompts 80] [--upstream-ms 300]

A fake OpenAI upstream answering after `--upstream-ms`, relaybox in process (routing and
recording on), and `--requests` sequential deterministic requests (temperature 0) drawn from
`--prompts` distinct prompts with Zipf-like popularity (the k-th prompt weighs 1/k), as an agent
fleet repeating its planning and lint questions would send them. The same draw runs with the
cache on, then off.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import attrs
import httpx
import trio

from bench.machine import percentile, write
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import openai_provider, serve, settings_for


async def run(requests: int, prompts: int, upstream_ms: float, cache_mb: int) -> dict[str, list[float]]:
    rng = random.Random(11)
    weights = [1 / k for k in range(1, prompts + 1)]
    draw = rng.choices(range(prompts), weights=weights, k=requests)
    latencies: dict[str, list[float]] = {"hit": [], "miss": [], "uncached": []}
    async with trio.open_nursery() as nursery:
        fake = await FakeOpenAI().start(nursery)
        fake.replies.default = Reply(delay=upstream_ms / 1000)
        settings = attrs.evolve(
            settings_for(Path(tempfile.mkdtemp()), openai_provider("up", fake.base_url, slots=64)),
            cache_bytes=cache_mb * 1024 * 1024,
        )
        async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
            for index in draw:
                body = {
                    "model": "gpt-4o-mini",
                    "temperature": 0,
                    "messages": [
                        {"role": "user", "content": f"Question {index}: which lint rule covers this?"}
                    ],
                }
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                kind = {"true": "hit", "false": "miss"}.get(
                    response.headers.get("x-cache-hit", ""), "uncached"
                )
                latencies[kind].append(elapsed)
        nursery.cancel_scope.cancel()
    return latencies


async def main(requests: int, prompts: int, upstream_ms: float) -> None:
    on = await run(requests, prompts, upstream_ms, 64)
    off = await run(requests, prompts, upstream_ms, 0)
    lines = [
        f"{requests} sequential requests over {prompts} prompts (weight 1/k), temperature 0; "
        f"fake upstream answering in {upstream_ms:g} ms; relaybox in process, recording on",
        f"{'':<24}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'total s':>9}",
    ]
    for name, values in (
        ("cache on: hits", on["hit"]),
        ("cache on: misses", on["miss"]),
        ("cache off", off["uncached"]),
    ):
        lines.append(
            f"{name:<24}{len(values):>9}{percentile(values, 0.5):>9.1f}{percentile(values, 0.99):>9.1f}"
            f"{sum(values) / 1000:>9.1f}"
        )
    hit_rate = len(on["hit"]) / requests
    total_on = (sum(on["hit"]) + sum(on["miss"])) / 1000
    lines.append(
        f"hit rate {hit_rate:.0%}; the workload took {total_on:.1f} s with the cache, {sum(off['uncached']) / 1000:.1f} s without; "
        f"upstream calls {len(on['miss'])} vs {len(off['uncached'])}"
    )
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('response_cache', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--prompts", type=int, default=80)
    parser.add_argument("--upstream-ms", type=float, default=300.0)
    arguments = parser.parse_args()
    trio.run(main, arguments.requests, arguments.prompts, arguments.upstream_ms)
