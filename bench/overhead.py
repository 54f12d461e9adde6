"""Time relaybox adds to a non-streaming request, side by side with the upstream alone, on chat
completions and on the Responses API.

    python -m bench.overhead [--requests 400]

A fake OpenAI upstream runs in this process; `relaybox serve` runs as its own process with
that upstream as its only provider. Requests go one at a time, in turn direct, through relaybox's
`/v1/chat/completions`, and through its `/v1/responses` (not stored, then stored: the default,
which waits for the database), so every path sees the same machine noise. Reported: latency
percentiles of each path, their difference, and relaybox's own `x-overhead-ms` header.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import trio

from bench.machine import percentile, write
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import wait_until_serving

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}], "temperature": 0}
RESPONSES_BODY = {"model": "gpt-4o-mini", "input": "Say hello.", "temperature": 0}


async def main(requests: int) -> None:
    async with trio.open_nursery() as nursery:
        fake = await FakeOpenAI().start(nursery)
        port = 18000 + os.getpid() % 1000
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": fake.base_url,
            "PATH": os.path.dirname(sys.executable),
            "RELAYBOX_DATA_DIR": tempfile.mkdtemp(),
        }
        relay = await trio.lowlevel.open_process(
            [sys.executable, "-m", "relaybox.web.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            relay_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=relay_url) as client:
                await wait_until_serving(client)
                direct, relayed, headers = [], [], []
                responses: dict[bool, list[float]] = {False: [], True: []}
                for i in range(requests + 50):
                    started = time.perf_counter()
                    response = await client.post(fake.base_url + "/chat/completions", json=BODY)
                    direct_ms = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200
                    started = time.perf_counter()
                    response = await client.post(
                        relay_url + "/v1/chat/completions", json=BODY, headers={"x-relaybox-cache": "off"}
                    )
                    relay_ms = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200, response.text
                    if i >= 50:  # warm-up excluded
                        direct.append(direct_ms)
                        relayed.append(relay_ms)
                        headers.append(float(response.headers["x-overhead-ms"]))
                    for store, times in responses.items():
                        started = time.perf_counter()
                        response = await client.post(
                            relay_url + "/v1/responses",
                            json={**RESPONSES_BODY, "store": store},
                            headers={"x-relaybox-cache": "off"},
                        )
                        assert response.status_code == 200, response.text
                        if i >= 50:
                            times.append((time.perf_counter() - started) * 1000)
        finally:
            relay.terminate()
            with trio.move_on_after(10):
                await relay.wait()
        nursery.cancel_scope.cancel()

    rows = [
        ("direct to the fake upstream", direct),
        ("through relaybox", relayed),
        ("/v1/responses, store false", responses[False]),
        ("/v1/responses, stored", responses[True]),
        ("relaybox x-overhead-ms header", headers),
    ]
    lines = [
        f"non-streaming requests, sequential, n={requests} each path (after 50 warm-up)",
        f"{'path':<32}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}",
    ]
    for name, values in rows:
        lines.append(
            f"{name:<32}{percentile(values, 0.5):>9.2f}{percentile(values, 0.9):>9.2f}"
            f"{percentile(values, 0.99):>9.2f}{statistics.fmean(values):>9.2f}"
        )
    added = percentile(relayed, 0.5) - percentile(direct, 0.5)
    lines.append(f"added by relaybox at p50 (end to end, incl. one more HTTP hop): {added:.2f} ms")
    for store, times in responses.items():
        extra = percentile(times, 0.5) - percentile(relayed, 0.5)
        what = "stored" if store else "not stored"
        lines.append(f"the Responses API ({what}) over chat completions at p50: {extra:+.2f} ms")
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('overhead', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    trio.run(main, parser.parse_args().requests)
