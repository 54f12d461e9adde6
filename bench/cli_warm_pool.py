"""Time to first token through the Claude CLI provider: cold start vs the warm pool.

    python -m bench.cli_warm_pool [--requests 10]

The real `claude` binary (tests/cli, from npm) talks to the fake Anthropic API, which answers at
once, so what is measured is the CLI's start-up and relaybox around it. relaybox runs in this
process (tests.harness.serve); requests stream and the clock stops at the first content chunk.
Rows: no pool; a pool of 1 with a pause between requests (its replacement is ready); a pool of 1
with requests back to back (the replacement is still starting: a "hit" on a process that has not
finished starting saves only part of the start-up); bursts of 4 concurrent requests against a
pool of 2 (requests outrun the pool: two wait for a process of their own).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import trio

from bench.machine import percentile, write
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import claude_executable, claude_provider, serve, settings_for

BODY = {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "Say hello."}]}


async def first_token(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content"' in line:
                return (time.perf_counter() - started) * 1000
    raise RuntimeError(f"no content in the answer ({response.status_code})")


async def scenario(
    fake: FakeAnthropic, warm: int, requests: int, *, pause: float, concurrent: int = 1
) -> tuple[list[float], dict[str, int]]:
    with TemporaryDirectory() as tmp:
        provider = claude_provider(claude_executable(), fake.base_url, warm=warm, slots=4)
        async with (
            serve(settings_for(Path(tmp), provider)) as relay,
            # Identical concurrent requests would share one call (dedup): each must be its own.
            httpx.AsyncClient(
                base_url=relay.base_url, timeout=60, headers={"x-relaybox-dedup": "off"}
            ) as client,
        ):
            transport = relay.system.providers["claude-cli"].transport
            pool = transport.pool  # type: ignore[attr-defined]
            await trio.sleep(3 if warm else 0)  # the pool starts its first processes
            times: list[float] = []
            for _ in range(requests // concurrent):

                async def one() -> None:
                    times.append(await first_token(client))

                async with trio.open_nursery() as nursery:
                    for _ in range(concurrent):
                        nursery.start_soon(one)
                await trio.sleep(pause)
            counts = {"hits": 0, "misses": requests} if pool is None else pool.statistics()
    return times, counts


async def main(requests: int) -> None:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic().start(nursery)
        sequential = [
            ("no pool, one at a time", await scenario(fake, 0, requests, pause=1.5)),
            ("pool of 1, 1.5 s between requests", await scenario(fake, 1, requests, pause=1.5)),
            ("pool of 1, back to back", await scenario(fake, 1, requests, pause=0.0)),
        ]
        bursts = [
            ("no pool, bursts of 4", await scenario(fake, 0, requests * 2, pause=3.0, concurrent=4)),
            ("pool of 2, bursts of 4", await scenario(fake, 2, requests * 2, pause=3.0, concurrent=4)),
        ]
        nursery.cancel_scope.cancel()
    lines = [
        f"time to first token through relaybox, real claude CLI, instant fake upstream, {requests} requests per row",
        f"{'scenario':<36}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}{'hits':>6}{'misses':>8}{'vs no pool':>12}",
    ]
    for rows in (sequential, bursts):
        baseline = statistics.median(rows[0][1][0])
        for name, (times, counts) in rows:
            lines.append(
                f"{name:<36}{percentile(times, 0.5):>9.0f}{percentile(times, 0.9):>9.0f}{max(times):>9.0f}"
                f"{counts['hits']:>6}{counts['misses']:>8}{baseline / statistics.median(times):>11.1f}x"
            )
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('cli_warm_pool', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    trio.run(main, parser.parse_args().requests)
