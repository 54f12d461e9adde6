"""Claude CLI spawn concurrency: how many CLI processes at once this machine sustains.

    python -m bench.cli_concurrency [--levels 1,2,4,8,16] [--rounds 3]

The real `claude` binary (tests/cli, from npm) talks to the fake Anthropic API, which streams a
fixed answer of 20 chunks 50 ms apart (one second of tokens), so the upstream is never the limit.
relaybox runs in this process with the claude-cli provider's `slots` set to the level and no warm
pool; `level` clients each send `rounds` streaming requests one after another. Reported per level:
requests/s, time to first token and total latency (p50/p99), CPU seconds per request (relaybox
plus the CLI processes it reaped) and the largest resident size of one CLI process. The knee is
where requests/s stops growing while latency does: the default `slots` follows from it.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import attrs
import httpx
import trio

from bench.machine import percentile, write
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.scripts import Reply
from tests.harness import claude_executable, claude_provider, serve, settings_for

BODY = {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "Count to twenty."}]}


def cli_rss_mb(workdir: Path) -> list[float]:
    """Resident size of each live process working in the CLI's directory."""
    sizes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != str(workdir):
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return sizes


async def one_level(fake: FakeAnthropic, level: int, rounds: int) -> dict[str, float]:
    with TemporaryDirectory() as tmp:
        provider = claude_provider(claude_executable(), fake.base_url, slots=level, idle_timeout=120)
        provider = attrs.evolve(provider, limits=attrs.evolve(provider.limits, mailbox=max(8, 2 * level)))
        settings = settings_for(Path(tmp), provider)
        workdir = Path(settings.data_dir) / "cli-workdir"
        first: list[float] = []
        total: list[float] = []
        largest = 0.0
        async with (
            serve(settings) as relay,
            httpx.AsyncClient(
                base_url=relay.base_url, timeout=300, headers={"x-relaybox-dedup": "off"}
            ) as client,
        ):

            async def client_loop() -> None:
                for _ in range(rounds):
                    started = time.perf_counter()
                    ttft = None
                    async with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
                        async for line in response.aiter_lines():
                            if ttft is None and line.startswith("data: {") and '"content"' in line:
                                ttft = time.perf_counter() - started
                    total.append(time.perf_counter() - started)
                    first.append(ttft if ttft is not None else float("nan"))

            async def sample_rss() -> None:
                nonlocal largest
                while True:
                    largest = max([largest, *cli_rss_mb(workdir)])
                    await trio.sleep(0.2)

            cpu_before = (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_rss)
                async with trio.open_nursery() as clients:
                    for _ in range(level):
                        clients.start_soon(client_loop)
                nursery.cancel_scope.cancel()
            elapsed = time.perf_counter() - started
            cpu_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        for before, after in zip(cpu_before, cpu_after, strict=True)
    )
    return {
        "rps": len(total) / elapsed,
        "ttft50": percentile(first, 0.5) * 1000,
        "ttft99": percentile(first, 0.99) * 1000,
        "total50": percentile(total, 0.5) * 1000,
        "total99": percentile(total, 0.99) * 1000,
        "cpu": cpu / len(total),
        "rss": largest,
    }


async def main(levels: list[int], rounds: int) -> None:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic().start(nursery)
        fake.replies.default = Reply(
            text="one two three four five six seven eight nine ten " * 2, pieces=20, chunk_delay=0.05
        )
        results = {level: await one_level(fake, level, rounds) for level in levels}
        nursery.cancel_scope.cancel()
    lines = [
        f"real claude CLI, fake upstream streaming 20 chunks 50 ms apart; each of `level` clients sends {rounds} "
        "requests in turn; slots = level, no warm pool",
        f"{'level':>5}{'req/s':>8}{'TTFT p50':>10}{'TTFT p99':>10}{'total p50':>11}{'total p99':>11}"
        f"{'CPU s/req':>11}{'RSS MB/CLI':>12}",
    ]
    for level, r in results.items():
        lines.append(
            f"{level:>5}{r['rps']:>8.2f}{r['ttft50']:>10.0f}{r['ttft99']:>10.0f}{r['total50']:>11.0f}"
            f"{r['total99']:>11.0f}{r['cpu']:>11.2f}{r['rss']:>12.0f}"
        )
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('cli_concurrency', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    trio.run(main, [int(n) for n in arguments.levels.split(",")], arguments.rounds)
