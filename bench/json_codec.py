"""What JSON costs on relaybox's hot paths, the standard library against orjson, in the same run.

    python -m bench.json_codec [--repeat 20000]

Three payloads: a streamed `chat.completion.chunk` as relaybox renders it (once per chunk sent),
an upstream SSE frame as relaybox decodes it (once per chunk received), and a 10k-token agent
conversation as relaybox sends it upstream (once per attempt) and reads it from a client (once
per request). relaybox uses orjson for all four since this bench was written.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.machine import write


def chunk() -> dict[str, Any]:
    return {
        "id": "chatcmpl-5f0c7e0d3a2b4b0c9d1e2f3a4b5c6d7e",
        "object": "chat.completion.chunk",
        "created": 1796000000,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "delta": {"content": "Hello there, "}, "finish_reason": None, "logprobs": None}
        ],
    }


def conversation() -> dict[str, Any]:
    code = "def handler(request):\n    return respond(request.json(), status=200)\n" * 40
    messages = [{"role": "system", "content": "You are a coding agent. " * 60}]
    for turn in range(12):
        messages.append(
            {"role": "user", "content": f"Step {turn}: fix the failing test.\n```python\n{code}```"}
        )
        messages.append({"role": "assistant", "content": f"I changed line {turn}; the test passes now."})
    return {"model": "gpt-4o-mini", "stream": True, "messages": messages}


def timed(work: Callable[[], object], repeat: int) -> float:
    """Median microseconds per call over five rounds."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            work()
        rounds.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(rounds)


def main(repeat: int) -> None:
    small, big = chunk(), conversation()
    frame = json.dumps(small)
    request = json.dumps(big).encode()
    cases = [
        (
            "render a chunk",
            lambda: json.dumps(small, separators=(",", ":"), ensure_ascii=False),
            lambda: orjson.dumps(small).decode(),
            repeat,
        ),
        ("decode an upstream frame", lambda: json.loads(frame), lambda: orjson.loads(frame), repeat),
        (
            "encode a 10k-token request",
            lambda: json.dumps(big).encode(),
            lambda: orjson.dumps(big),
            repeat // 50,
        ),
        (
            "parse a 10k-token request",
            lambda: json.loads(request),
            lambda: orjson.loads(request),
            repeat // 50,
        ),
    ]
    lines = [
        f"JSON on relaybox's hot paths, median of 5 rounds (request size {len(request):,} bytes)",
        f"{'work':<28}{'json µs':>10}{'orjson µs':>11}{'ratio':>8}",
    ]
    for name, standard, fast, n in cases:
        a, b = timed(standard, n), timed(fast, n)
        lines.append(f"{name:<28}{a:>10.2f}{b:>11.2f}{a / b:>7.1f}x")
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('json_codec', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20000)
    main(parser.parse_args().repeat)
