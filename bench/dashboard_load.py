"""The dashboard on a large request log: its API calls, and each page in a real browser.

    python -m bench.dashboard_load [--rows 100000]

A SQLite log of `--rows` attempts over 90 days and 6 providers is generated (as
`bench.stats_queries` does), `relaybox serve` runs on it, then: each API call the pages make, best
of 5 (milliseconds), and each page loaded in Debian's Chromium (Playwright, as the tests drive it)
until its content has rendered, median of 3. The browser runs with a cold cache the first time
only: plotly.js (4.6 MB) is then cached, as it would be for a user.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from relaybox.storage.schema import rollup_backfill
from relaybox.storage.sqlite import SQLiteStorage

from bench.generated_log import SQLITE_FILL
from bench.http_throughput import free_port, stop, wait_until_up
from bench.machine import write
from tests.dashboard_browser import CHROMIUM

API_CALLS = [
    "/api/stats?days=1",
    "/api/stats?days=7",
    "/api/stats?days=30",
    "/api/requests?limit=100",
    "/api/requests?limit=100&provider=provider3&status=success",
    "/api/requests?provider=provider2&limit=30",
    "/api/providers",
    "/api/budget",
    "/actors",
    "/v1/models",
]
# Each page, and what shows that it has rendered.
PAGES = {
    "overview": "#chart-cost .main-svg",
    "providers": "#provider-cards .card .sparkline .main-svg",
    "requests": "#requests-table tbody tr[data-group]",
    "actors": "#actor-tree .actor",
}


async def generate(data_dir: Path, rows: int) -> float:
    storage = SQLiteStorage(str(data_dir / "relaybox.db"))
    await storage.migrate()
    started = time.perf_counter()
    await storage._run(lambda db: db.execute(SQLITE_FILL.format(rows=rows, now=time.time())))
    await storage._run(lambda db: db.execute("DELETE FROM task_stats"))
    await storage._run(lambda db: db.execute(rollup_backfill("date(created_at, 'unixepoch')", "1")))
    await storage._run(lambda db: db.execute("ANALYZE"))
    await storage.aclose()
    return time.perf_counter() - started


def api_timings(base_url: str) -> list[tuple[str, float, int]]:
    results = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for path in API_CALLS:
            best, size = float("inf"), 0
            for _ in range(5):
                started = time.perf_counter()
                response = client.get(path)
                best = min(best, time.perf_counter() - started)
                size = len(response.content)
                response.raise_for_status()
            results.append((path, best * 1000, size))
    return results


def page_timings(base_url: str) -> list[tuple[str, float, float]]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        started = time.perf_counter()
        page.goto(f"{base_url}/dashboard#overview")
        page.wait_for_selector(PAGES["overview"])
        cold = (time.perf_counter() - started) * 1000
        for name, rendered in PAGES.items():
            times = []
            for _ in range(3):
                page.goto("about:blank")
                started = time.perf_counter()
                page.goto(f"{base_url}/dashboard#{name}")
                page.wait_for_selector(rendered, timeout=60_000)
                times.append((time.perf_counter() - started) * 1000)
            results.append((name, statistics.median(times), cold if name == "overview" else float("nan")))
        browser.close()
    return results


def main(rows: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="relaybox-dashboard-"))
    data_dir = work / "data"
    data_dir.mkdir()
    generated = trio.run(generate, data_dir, rows)
    port = free_port()
    providers = [
        {
            "id": f"provider{i}",
            "baseUrl": "http://127.0.0.1:9/v1",
            "apiKey": "sk-bench",
            "models": [f"model{i}"],
        }
        for i in range(6)
    ]
    env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin",
        "HOME": str(work),
        "RELAYBOX_DATA_DIR": str(data_dir),
        "CUSTOM_PROVIDERS": json.dumps(providers),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "relaybox.web.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base_url}/ping")
        apis = api_timings(base_url)
        pages = page_timings(base_url)
    finally:
        stop(server)
    lines = [
        f"{rows:,} attempts over 90 days in SQLite (generated in {generated:.1f} s); relaybox serve on it"
    ]
    lines += ["", f"{'API call':<58}{'best of 5, ms':>14}{'bytes':>10}"]
    lines += [f"{path:<58}{ms:>14.1f}{size:>10,}" for path, ms, size in apis]
    lines += [
        "",
        f"{'page (Chromium, until rendered)':<34}{'median of 3, ms':>16}{'first load, cold cache, ms':>28}",
    ]
    lines += [f"{name:<34}{ms:>16.0f}{cold:>28.0f}" for name, ms, cold in pages]
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('dashboard_load', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    main(parser.parse_args().rows)
