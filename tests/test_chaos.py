"""The seeded chaos suite: a storm of upstream, client, CLI and database faults (see tests/chaos.py),
after which every request has had an answer or a clean error, every provider serves again, nothing
is left running or open, the statistics and memory stayed bounded and every attempt is logged once.
The longer soak with any seed: `python -m bench.chaos_soak`."""

from __future__ import annotations

from pathlib import Path

import trio_asyncio

from tests.chaos import Storm, run_storm
from tests.harness import claude_executable
from tests.storage_fixtures import fresh_postgres_database

SEED = 17


async def test_a_seeded_storm_of_faults_breaks_no_invariant(tmp_path: Path) -> None:
    claude = claude_executable()
    storm = Storm(seed=SEED, requests=2500, cli_requests=30)
    async with trio_asyncio.open_loop(), fresh_postgres_database() as dsn:
        report = await run_storm(storm, tmp_path, claude, dsn)
    print(report.summary())
    assert report.problems == [], report.summary()
    statuses = report.statuses()
    # The storm was one: faults were met, and most requests were still answered.
    assert statuses[200] > len(report.outcomes) // 2, report.summary()
    assert statuses[429] and statuses[413] and report.cli_kills, report.summary()
