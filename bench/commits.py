"""This checkout against an earlier commit, side by side: does a change cost throughput or latency?

    python -m bench.commits --base REV [--seconds 8] [--concurrency 1,50] [--rounds 3] [--streams 1000]

The earlier commit is checked out into a temporary git worktree with an environment of its own
(`pip install -e`, from the package index's cache); both run as `relaybox serve` against the same
nginx upstream as `bench.http_throughput` (5 ms fixed latency, relaybox on its defaults, every
body different), and the same wrk run goes to each in turn, the order alternating from round to round so both
see the same machine noise. Reported per concurrency: each side's requests/s and latency over the
rounds (median, and the range), and the ratio of the medians. With `--streams`, both also serve
`bench.streaming_fanout`'s concurrent streams (its nginx upstream pacing 20 chunks 100 ms apart, its
raw-socket client) in alternating rounds: time to first content, gaps, CPU per 1,000 chunks.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from bench.http_throughput import (
    ensure_tools,
    free_port,
    start_answering_nginx,
    start_relaybox,
    stop,
    wrk,
)
from bench.machine import write
from bench.streaming_fanout import level, start_streaming_nginx
from bench.streaming_fanout import start_relaybox as start_streaming_relaybox

REPO = Path(__file__).resolve().parent.parent


def checkout(base: str, work: Path) -> tuple[str, str]:
    """The base commit in a worktree with its own environment: (its python, its short name)."""
    tree = work / "base"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), base], check=True)
    short = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"installing {short} into its own environment ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    pip = [str(work / "venv" / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*pip, "-e", str(tree)], check=True, stdout=subprocess.DEVNULL)
    return str(work / "venv" / "bin" / "python"), short


def main(base: str, seconds: int, levels: list[int], rounds: int, streams: list[int]) -> None:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="relaybox-commits-"))
    here = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
    here += "+changes" if dirty.stdout.strip() else ""
    processes = []
    try:
        base_python, base_name = checkout(base, work)
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}/v1"
        processes.append(start_answering_nginx(work, upstream_port, 5))
        targets = []
        for name, python in ((base_name, base_python), (here, sys.executable)):
            port = free_port()
            processes.append(start_relaybox(work, port, upstream, python=python))
            targets.append((name, f"http://127.0.0.1:{port}/v1/chat/completions"))
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for connections in levels:
            for round_ in range(rounds):
                for name, url in targets if round_ % 2 == 0 else targets[::-1]:
                    wrk(url, connections, 2, work, {})
                    result = wrk(url, connections, seconds, work, {})
                    results.setdefault((name, connections), []).append(result)
                    print(f"  {name} at {connections}, round {round_ + 1}: {result}", flush=True)
        streamed = _streams(
            work, [(base_name, base_python), (here, sys.executable)], streams, rounds, processes
        )
    finally:
        for process in reversed(processes):
            stop(process)
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "base")])
    table = _table(results, [name for name, _ in targets], levels, seconds, rounds)
    if streams:
        table += "\n\n" + _streams_table(streamed, [name for name, _ in targets], streams, rounds)
    print(table)
    print(f"written to {write('commits', table)}")


def _streams(
    work: Path,
    sides: list[tuple[str, str]],
    levels: list[int],
    rounds: int,
    processes: list[subprocess.Popen[bytes]],
) -> dict[tuple[str, int], list[dict[str, float]]]:
    """Each side under `levels` concurrent streams, rounds in alternating order."""
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    if not levels:
        return results
    upstream_port = free_port()
    processes.append(start_streaming_nginx(work, upstream_port))
    targets = []
    for name, python in sides:
        port = free_port()
        side_work = work / f"streams-{port}"
        side_work.mkdir()
        server = start_streaming_relaybox(
            side_work, port, f"http://127.0.0.1:{upstream_port}/v1", python=python
        )
        processes.append(server)
        targets.append((name, port, server.pid))
        trio.run(level, port, "/v1/chat/completions", 10, None)  # warm-up
    for streams in levels:
        for round_ in range(rounds):
            for name, port, pid in targets if round_ % 2 == 0 else targets[::-1]:
                result = trio.run(level, port, "/v1/chat/completions", streams, pid)
                results.setdefault((name, streams), []).append(result)
                print(f"  {name} x {streams} streams, round {round_ + 1}: {result}", flush=True)
    return results


def _over_rounds(runs: list[dict[str, float]], metric: str, digits: int) -> tuple[float, str]:
    """A metric's median over the rounds, and the cell that shows it with its range."""
    values = [run[metric] for run in runs]
    median = statistics.median(values)
    return median, f"{median:.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def _streams_table(
    results: dict[tuple[str, int], list[dict[str, float]]], names: list[str], levels: list[int], rounds: int
) -> str:
    lines = [
        f"concurrent streams of 20 chunks 100 ms apart, {rounds} rounds in alternating order; prompts all "
        "different; relaybox on its defaults; median over the rounds [lowest, highest]",
        f"{'commit':<18}{'streams':>8}{'failed':>7}{'TTFT p50 ms':>24}{'gap p99 ms':>20}{'CPU s/1k chunks':>22}",
    ]
    for streams in levels:
        medians = {}
        for name in names:
            runs = results[(name, streams)]
            cells = []
            for metric, digits in (("ttft50", 0), ("gap99", 0), ("cpu_per_1000", 2)):
                medians[(name, metric)], cell = _over_rounds(runs, metric, digits)
                cells.append(cell)
            failed = sum(r["failed"] for r in runs)
            lines.append(f"{name:<18}{streams:>8}{failed:>7.0f}{cells[0]:>24}{cells[1]:>20}{cells[2]:>22}")
        base, here = names
        lines.append(
            f"{'':<23}{here} / {base}: TTFT p50 x{medians[(here, 'ttft50')] / medians[(base, 'ttft50')]:.2f}, "
            f"CPU per chunk x{medians[(here, 'cpu_per_1000')] / medians[(base, 'cpu_per_1000')]:.2f}"
        )
    return "\n".join(lines)


def _table(
    results: dict[tuple[str, int], list[dict[str, float]]],
    names: list[str],
    levels: list[int],
    seconds: int,
    rounds: int,
) -> str:
    lines = [
        f"wrk, {seconds} s per cell, {rounds} rounds in alternating order, POST /v1/chat/completions "
        "(model auto), nginx upstream with 5 ms fixed latency; bodies all different; relaybox on its defaults",
        "median over the rounds [lowest, highest]",
        f"{'commit':<18}{'conc':>5}{'req/s':>22}{'p50 ms':>24}{'p99 ms':>24}",
    ]
    for connections in levels:
        medians = {}
        for name in names:
            runs = results[(name, connections)]
            cells = []
            for metric in ("rps", "p50", "p99"):
                medians[(name, metric)], cell = _over_rounds(runs, metric, 1)
                cells.append(cell)
            lines.append(f"{name:<18}{connections:>5}{cells[0]:>22}{cells[1]:>24}{cells[2]:>24}")
        base, here = names
        lines.append(
            f"{'':<23}{here} / {base}: requests/s x{medians[(here, 'rps')] / medians[(base, 'rps')]:.2f}, "
            f"p50 x{medians[(here, 'p50')] / medians[(base, 'p50')]:.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", default="1,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="", help="concurrent streams, e.g. 1000 (none by default)")
    arguments = parser.parse_args()
    main(
        arguments.base,
        arguments.seconds,
        [int(n) for n in arguments.concurrency.split(",")],
        arguments.rounds,
        [int(n) for n in arguments.streams.split(",") if n],
    )
