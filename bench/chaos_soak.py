"""The chaos suite's storm (tests/chaos.py), longer and with any seeds: the soak.

    python -m bench.chaos_soak [--seeds 1,2,3] [--requests 20000] [--cli-requests 200]

Each seed is one storm against relaybox in process (fake upstreams with faults drawn per
attempt, the real Claude CLI killed now and then, PostgreSQL cut and restored, clients hanging
up, bursts past capacity), then the same invariants as the test: every request answered or
refused cleanly in time, streams never cut without an error frame, every provider serving
again after its cooldown, no process or file descriptor left, statistics and memory bounded,
every attempt logged once. Reported per seed: what the clients got, what was injected, how
long it took, the growth of gc-tracked objects from the first half to the second, the longest
any request waited for its last word (and the longest for a refusal), and every broken invariant.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio
import trio_asyncio

from bench.machine import write
from tests.chaos import REFUSALS, Report, Storm, run_storm
from tests.harness import claude_executable
from tests.storage_fixtures import fresh_postgres_database


async def soak(seed: int, requests: int, cli_requests: int) -> tuple[Report, float]:
    storm = Storm(seed=seed, requests=requests, cli_requests=cli_requests)
    started = time.perf_counter()
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn:
        report = await run_storm(
            storm, Path(tempfile.mkdtemp(prefix="chaos-soak-")), claude_executable(), dsn
        )
    return report, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--cli-requests", type=int, default=200)
    args = parser.parse_args()
    lines = [
        f"storms of {args.requests} requests through two fake OpenAI upstreams (faults drawn per attempt) "
        f"and {args.cli_requests} through the real Claude CLI, plus bursts; PostgreSQL cut from 30% to 50%",
        f"{'seed':>5}{'requests':>10}{'answered':>10}{'hung up':>9}{'413':>6}{'429':>6}{'503':>6}"
        f"{'CLI kills':>11}{'logged':>8}{'seconds':>9}{'gc growth':>11}{'longest wait':>14}{'refusal':>9}"
        f"{'broken':>8}",
    ]
    problems = []
    for seed in (int(s) for s in args.seeds.split(",")):
        report, seconds = trio.run(soak, seed, args.requests, args.cli_requests)
        print(report.summary(), flush=True)
        statuses = report.statuses()
        first, second = report.objects_after
        lines.append(
            f"{seed:>5}{len(report.outcomes):>10}{sum(o.answered for o in report.outcomes):>10}"
            f"{sum(o.hung_up for o in report.outcomes):>9}{statuses[413]:>6}{statuses[429]:>6}"
            f"{statuses[503]:>6}{report.cli_kills:>11}{report.log_rows:>8}{seconds:>9.0f}"
            f"{(second - first) / first:>10.1%}{report.longest_wait():>13.2f}s"
            f"{report.longest_wait(REFUSALS):>8.2f}s{len(report.problems):>8}"
        )
        problems += [f"seed {seed}: {problem}" for problem in report.problems]
    lines += ["", "broken invariants:", *(problems or ["none"])]
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('chaos_soak', table)}")


if __name__ == "__main__":
    main()
