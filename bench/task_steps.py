"""Where a request's CPU goes, task by task: trio's own count of the steps each task takes.

    python -m bench.task_steps [--seconds 8] [--concurrency 1,50]

A sampling profiler charges each sample to a function; this charges CPU to the trio task that ran
it, so the cost of a design (how many tasks a request wakes, how often) shows beside the cost of
the code. Each server runs under a trio instrument that times every task step with the thread's
CPU clock (`time.thread_time_ns`): per request, the steps taken, the tasks spawned, the CPU spent
inside task steps by task, and the rest of the serving thread's CPU (trio's scheduler and its I/O
polling, outside any task), and what the process's other threads spent (the SQLite writer's
feeder, `trio.to_thread` workers). The instrument itself costs a little per step, the same for
every target.

Targets, under the same wrk load as `bench.http_throughput` (nginx upstream with 5 ms latency,
every request body different): the bare quart-trio + httpx pass-through, that pass-through with
its call made through a mailbox and a task of its own ("bare + actor"), and `relaybox serve` on
its defaults.

Run as `python -m bench.task_steps --count-into FILE -- -m MODULE ARGS...`, it is the wrapper that
installs the instrument in MODULE's `trio.run` and writes its totals to FILE.N on each SIGUSR1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from bench.http_throughput import (
    free_port,
    start_answering_nginx,
    start_bare_stack,
    start_relaybox,
    stop,
    wrk,
)
from bench.machine import write


class StepClock(trio.abc.Instrument):
    """Steps, spawns and in-step CPU by task name, since the run began."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.spawned: Counter[str] = Counter()
        self.cpu_ns: Counter[str] = Counter()
        self._step_began = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned[task.name] += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_began = time.thread_time_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.cpu_ns[task.name] += time.thread_time_ns() - self._step_began
        self.steps[task.name] += 1

    def totals(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "steps": dict(self.steps),
            "spawned": dict(self.spawned),
            "cpu_ns": dict(self.cpu_ns),
            "thread_cpu_ns": time.thread_time_ns(),
            "process_cpu_ns": int((usage.ru_utime + usage.ru_stime) * 1e9),
        }


def run_counted(count_into: str, arguments: list[str]) -> None:
    """Run `-m MODULE ARGS...` with a `StepClock` in its `trio.run`, totals written on SIGUSR1."""
    if arguments[:1] != ["-m"] or len(arguments) < 2:
        raise SystemExit("usage: python -m bench.task_steps --count-into FILE -- -m MODULE ARGS...")
    clock = StepClock()
    snapshots = iter(range(1_000_000))

    def snapshot(_signum: int, _frame: object) -> None:
        Path(f"{count_into}.{next(snapshots)}").write_text(json.dumps(clock.totals()))

    signal.signal(signal.SIGUSR1, snapshot)
    original_run = trio.run

    def counted_run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), clock]
        return original_run(*args, **kwargs)

    trio.run = counted_run  # type: ignore[assignment]
    sys.argv = [arguments[1], *arguments[2:]]
    runpy.run_module(arguments[1], run_name="__main__", alter_sys=True)


def _taken(process_id: int, count_into: Path, index: int) -> dict[str, Any]:
    path = Path(f"{count_into}.{index}")
    os.kill(process_id, signal.SIGUSR1)
    for _ in range(100):
        if path.exists() and path.stat().st_size:
            time.sleep(0.05)  # written whole by the handler before it returns
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"no snapshot in {path}")


def _per_request(before: dict[str, Any], after: dict[str, Any], requests: float) -> dict[str, Any]:
    def delta(key: str) -> Counter[str]:
        return Counter(after[key]) - Counter(before[key])

    cpu, steps, spawned = delta("cpu_ns"), delta("steps"), delta("spawned")
    in_steps = sum(cpu.values())
    thread = after["thread_cpu_ns"] - before["thread_cpu_ns"]
    process = after["process_cpu_ns"] - before["process_cpu_ns"]
    return {
        "requests": requests,
        "steps": sum(steps.values()) / requests,
        "spawned": sum(spawned.values()) / requests,
        "in_steps_us": in_steps / requests / 1000,
        "outside_us": (thread - in_steps) / requests / 1000,
        "other_threads_us": max(0, process - thread) / requests / 1000,
        "by_task": {name: (cpu[name] / requests / 1000, steps[name] / requests) for name in cpu | steps},
    }


def _short(task_name: str) -> str:
    """A task's name without the packages' long prefixes."""
    for prefix in ("relaybox.", "bench.", "hypercorn.trio.", "quart_trio.", "quart."):
        if task_name.startswith(prefix):
            return task_name[len(prefix) :]
    return task_name


def main(seconds: int, levels: list[int]) -> None:
    work = Path(tempfile.mkdtemp(prefix="relaybox-steps-"))
    upstream_port, relay_port, bare_port = (free_port() for _ in range(3))
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    results: dict[tuple[str, int], dict[str, Any]] = {}
    nginx = start_answering_nginx(work, upstream_port, 5)
    try:
        bare_counts = work / "bare-steps"
        relay_counts = work / "relaybox-steps"
        bare = start_bare_stack(
            bare_port, upstream, launcher=["-m", "bench.task_steps", "--count-into", str(bare_counts), "--"]
        )
        relay = start_relaybox(
            work,
            relay_port,
            upstream,
            launcher=["-m", "bench.task_steps", "--count-into", str(relay_counts), "--"],
        )
        targets = [
            ("bare pass-thru", f"http://127.0.0.1:{bare_port}/proxy/v1/chat/completions", bare, bare_counts),
            (
                "bare + actor",
                f"http://127.0.0.1:{bare_port}/proxy-hop/v1/chat/completions",
                bare,
                bare_counts,
            ),
            ("relaybox", f"http://127.0.0.1:{relay_port}/v1/chat/completions", relay, relay_counts),
        ]
        snapshot_index = {bare_counts: 0, relay_counts: 0}
        try:
            for connections in levels:
                for name, url, process, counts in targets:
                    wrk(url, connections, 2, work, {})
                    before = _taken(process.pid, counts, snapshot_index[counts])
                    load = wrk(url, connections, seconds, work, {})
                    after = _taken(process.pid, counts, snapshot_index[counts] + 1)
                    snapshot_index[counts] += 2
                    results[(name, connections)] = _per_request(before, after, load["requests"])
                    print(f"  {name} at {connections}: {load['requests']:.0f} requests", flush=True)
        finally:
            stop(relay)
            stop(bare)
    finally:
        stop(nginx)
    write("task_steps", _table(results, seconds, levels))


def _table(results: dict[tuple[str, int], dict[str, Any]], seconds: int, levels: list[int]) -> str:
    lines = [
        f"wrk, {seconds} s per cell, nginx upstream with 5 ms latency, bodies all different; relaybox on "
        "its defaults; per request: trio task steps, tasks spawned, the serving thread's CPU inside "
        "task steps and outside them (scheduler, I/O polling), other threads' CPU (µs)",
        f"{'target':<16}{'conc':>5}{'requests':>10}{'steps':>8}{'spawned':>9}{'in tasks':>10}"
        f"{'outside':>9}{'threads':>9}{'total':>8}",
    ]
    for connections in levels:
        for name in ("bare pass-thru", "bare + actor", "relaybox"):
            r = results[(name, connections)]
            total = r["in_steps_us"] + r["outside_us"] + r["other_threads_us"]
            lines.append(
                f"{name:<16}{connections:>5}{r['requests']:>10.0f}{r['steps']:>8.1f}{r['spawned']:>9.1f}"
                f"{r['in_steps_us']:>10.0f}{r['outside_us']:>9.0f}{r['other_threads_us']:>9.0f}{total:>8.0f}"
            )
    for name in ("bare pass-thru", "relaybox"):
        for connections in levels:
            by_task = results[(name, connections)]["by_task"]
            lines += ["", f"{name} at {connections} connections: CPU µs and steps per request, by task"]
            ranked = sorted(by_task.items(), key=lambda item: -item[1][0])
            for task_name, (cpu_us, steps) in ranked[:12]:
                lines.append(f"  {cpu_us:>7.1f} µs {steps:>5.2f} steps  {_short(task_name)}")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count-into"] and sys.argv[3:4] == ["--"]:
        run_counted(sys.argv[2], sys.argv[4:])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--seconds", type=int, default=8)
        parser.add_argument("--concurrency", default="1,50")
        arguments = parser.parse_args()
        main(arguments.seconds, [int(level) for level in arguments.concurrency.split(",")])
