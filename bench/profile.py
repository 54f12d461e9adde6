"""Where relaybox's CPU goes under load: py-spy samples of `relaybox serve`, grouped by layer.

    python -m bench.profile [--streams 1000] [--connections 10] [--seconds 8]

Two loads, each against an nginx upstream as in the other benchmarks: `--streams` concurrent SSE
streams (`bench.streaming_fanout`'s), and wrk with `--connections` non-streaming clients
(`bench.http_throughput`'s). py-spy (installed into this environment on first use) samples the
server at 200 Hz, only the thread holding the GIL; each sample is charged to the innermost frame's
package, so the table says how much of the CPU is relaybox's own code and how much each part of the
stack takes, and then to the part of the request it was working for (the innermost frame that names
a part: the handler's pipeline, the router, the provider's call, Quart, hypercorn...). Raw samples are
kept in `bench/results/profile-*.txt` (not committed; py-spy's raw format, for a flame graph).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.http_throughput import free_port, start_answering_nginx, stop, wrk
from bench.http_throughput import start_relaybox as start_relaybox_for_wrk
from bench.machine import RESULTS, ensure_installed, write
from bench.streaming_fanout import level, start_relaybox, start_streaming_nginx

OWN = ("actors", "protocol", "storage", "web")
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):\d+\)$")


def ensure_py_spy() -> Path:
    ensure_installed("py-spy", "the profile")
    return Path(sys.executable).parent / "py-spy"


def package_of(frame: str) -> tuple[str, str]:
    """(package, function) of one py-spy frame; relaybox's own packages keep their folder name."""
    match = FRAME.match(frame)
    if match is None:
        return frame.split(" ")[0], frame
    path = match["path"]  # py-spy shortens it to the module's path below its sys.path entry
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in OWN:
        package = f"relaybox {top}"
    elif path.startswith("<"):
        package = "generated (attrs)"
    elif top in sys.stdlib_module_names or top.startswith("<frozen"):
        package = "python stdlib"
    else:
        package = top
    return package, f"{match['function']} ({path.rsplit('/', 1)[-1]})"


# Where a sample belongs, by the first of these found anywhere on its stack (inclusive: a stage's
# share includes the library code it calls).
PARTS = (
    ("request log: writer thread", ("insert_records", "SQLiteStorage._run")),
    ("request log: recorder actor", ("RecorderActor",)),
    ("provider: upstream call (httpx)", ("HttpApiTransport.run",)),
    ("provider: forwarding, pricing, record", ("Forwarder", "attempt_record")),
    ("provider: the rest", ("ProviderActor",)),
    ("router actor (classify, route)", ("RouterActor",)),
    ("handler: pipeline (cache, dedup, compression)", ("RequestPipeline",)),
    ("handler: body read and parsed", ("read_json", "parse_chat_request")),
    ("handler: answer collected or streamed", ("Begun.collect", "_rendered", "openai_completion")),
    ("handler: guard and keys", ("keep_strangers_out", "admit")),
    ("access log", ("AccessLog",)),
    ("Quart", ("quart/", "quart_trio/")),
    ("hypercorn and h11", ("hypercorn/", "h11/")),
    ("supervision", ("Supervisor",)),
)


def part_of(frames: list[str]) -> str:
    """The part of the request a sample worked for: that of its innermost frame a part names (a
    stack inside h11 called from the access log's `send` is hypercorn's and h11's work, one inside
    the pipeline's compression the pipeline's)."""
    for frame in reversed(frames):
        for name, marks in PARTS:
            if any(mark in frame for mark in marks):
                return name
    return "trio's scheduler, and stacks py-spy saw only in part"


def parts(raw: Path) -> list[str]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        counts[part_of(stack.split(";")[1:])] += int(count)
    lines = ["", "  by part of the request (the innermost frame a part names):"]
    return lines + [f"  {share / total:>6.1%}  {name}" for name, share in counts.most_common()]


def summarize(raw: Path, title: str) -> list[str]:
    by_package: collections.Counter[str] = collections.Counter()
    own_functions: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = stack.split(";")[1:]  # the first is the thread
        package, function = package_of(frames[-1]) if frames else ("(idle)", "")
        by_package[package] += samples
        if package.startswith("relaybox"):
            own_functions[function] += samples
    own = sum(n for p, n in by_package.items() if p.startswith("relaybox"))
    lines = [title, f"{total} samples; relaybox's own code (innermost frame) {own / total:.0%}", ""]
    lines += [f"  {share / total:>6.1%}  {package}" for package, share in by_package.most_common(14)]
    lines += ["", "  relaybox's own functions (innermost frame):"]
    lines += [f"  {share / total:>6.1%}  {function}" for function, share in own_functions.most_common(10)]
    return lines + parts(raw)


def record(py_spy: Path, pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Samples of the thread holding the GIL only (`--gil`): a thread waiting for it, or running C
    code without it (SQLite, a socket call), is not doing the serving loop's work."""
    command = [str(py_spy), "record", "-r", "200", "-p", str(pid), "-f", "raw", "-o", str(output)]
    return subprocess.Popen(
        [*command, "--nonblocking", "--threads", "--gil"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(2)
    spy.wait(timeout=60)


def profile_streams(py_spy: Path, work: Path, streams: int) -> tuple[list[str], dict[str, float]]:
    upstream, port = free_port(), free_port()
    processes = [start_streaming_nginx(work, upstream)]
    output = RESULTS / "profile-streams.txt"
    try:
        relay = start_relaybox(work, port, f"http://127.0.0.1:{upstream}/v1")
        processes.append(relay)
        trio.run(level, port, "/v1/chat/completions", 10, None)  # warm-up
        spy = record(py_spy, relay.pid, output)
        time.sleep(1)
        figures = trio.run(level, port, "/v1/chat/completions", streams, relay.pid)
        finish(spy)
    finally:
        for process in reversed(processes):
            stop(process)
    return summarize(output, f"{streams} concurrent streams (20 chunks 100 ms apart)"), figures


def profile_requests(
    py_spy: Path, work: Path, connections: int, seconds: int
) -> tuple[list[str], dict[str, float]]:
    upstream, port = free_port(), free_port()
    processes = [start_answering_nginx(work, upstream, 5)]
    output = RESULTS / "profile-requests.txt"
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        relay = start_relaybox_for_wrk(work, port, f"http://127.0.0.1:{upstream}/v1")
        processes.append(relay)
        wrk(url, connections, 2, work, {})  # warm-up
        spy = record(py_spy, relay.pid, output)
        time.sleep(1)
        figures = wrk(url, connections, seconds, work, {})
        finish(spy)
    finally:
        for process in reversed(processes):
            stop(process)
    return summarize(output, f"wrk, {connections} connections, non-streaming, {seconds} s"), figures


def main(streams: int, connections: int, seconds: int) -> None:
    py_spy = ensure_py_spy()
    work = Path(tempfile.mkdtemp(prefix="relaybox-profile-"))
    RESULTS.mkdir(exist_ok=True)
    stream_lines, stream_figures = profile_streams(py_spy, work, streams)
    request_lines, request_figures = profile_requests(py_spy, work, connections, seconds)
    lines = [
        *stream_lines,
        f"  (under the profiler: TTFT p50 {stream_figures['ttft50']:.0f} ms, "
        f"CPU {stream_figures['cpu_per_1000']:.2f} s per 1,000 chunks)",
        "",
        *request_lines,
        f"  (under the profiler: {request_figures['rps']:.0f} requests/s, p50 {request_figures['p50']:.1f} ms)",
    ]
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('profile', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=8)
    arguments = parser.parse_args()
    main(arguments.streams, arguments.connections, arguments.seconds)
