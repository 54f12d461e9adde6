"""Non-streaming throughput and added latency: the upstream alone, relaybox, and LiteLLM's proxy.

    python -m bench.http_throughput [--seconds 10] [--latency-ms 5] [--concurrency 1,10,50,200]

The upstream is nginx with its echo module (Debian: nginx-core, libnginx-mod-http-echo) answering
every POST with the same OpenAI chat completion after a fixed delay; the load comes from `wrk`
(Debian: wrk), both compiled, so neither is the bottleneck being measured. relaybox runs as
`relaybox serve` on its defaults: routing on (model `auto`: classification and the learned router
on every request), recording on (the embedded SQLite log and its journal), the response cache,
deduplication and prompt compression on. Every request's body differs from every other's (wrk's
thread and request number in the prompt), so nothing is coalesced or replayed. Beside
them, the stack's ceiling (`bench.bare_stack`): a bare quart-trio app answering by itself, and the
same app passing each request to the upstream with one httpx client, and that pass-through with
the call made through a mailbox and a task of its own, as an actor design makes it ("bare +
actor": what the design costs on that stack). LiteLLM's
proxy runs from its own virtualenv (`bench/.litellm-venv`, created on first use with
`pip install 'litellm[proxy]'`), one worker, a master key, no database, configured for the same
upstream. Each target gets the same wrk run at each concurrency, one after another.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench.machine import write
from bench.plot import grouped_bars

HERE = Path(__file__).parent
LITELLM_VENV = HERE / ".litellm-venv"
LITELLM_KEY = "sk-litellm-bench"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
DEBIAN_PACKAGES = ("nginx-core", "libnginx-mod-http-echo", "wrk")

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from nginx."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_tools() -> None:
    if shutil.which("wrk") and shutil.which("nginx") and Path(ECHO_MODULE).exists():
        return
    print(f"installing {' '.join(DEBIAN_PACKAGES)} from Debian's packages ...", flush=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *DEBIAN_PACKAGES], check=True, stdout=subprocess.DEVNULL
    )


def ensure_litellm() -> Path:
    executable = LITELLM_VENV / "bin" / "litellm"
    if not executable.exists():
        print("installing litellm[proxy] into bench/.litellm-venv ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return executable


def wait_until_up(url: str, headers: dict[str, str] | None = None, within: float = 90.0) -> None:
    """Until the server answers at all (any status below 500)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2):
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {within:.0f} s")


def run_nginx(work: Path, name: str, servers: str, ready_url: str) -> subprocess.Popen[bytes]:
    """nginx with `servers` (its `upstream` and `server` blocks) as the http block, files under
    `work` named after `name`; returned once `ready_url` answers."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(
        f"  {kind}_temp_path {work}/{name}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = f"""{user}load_module {ECHO_MODULE};
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
{temp_paths}
{servers}
}}
"""
    (work / f"{name}.conf").write_text(config)
    process = subprocess.Popen(["nginx", "-c", str(work / f"{name}.conf"), "-p", str(work)])
    wait_until_up(ready_url)
    return process


def start_nginx(work: Path, port: int, location: str, *, content_type: str) -> subprocess.Popen[bytes]:
    """nginx answering every request with `location`'s echo directives (its echo module)."""
    servers = f"""  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      echo_read_request_body;
      default_type {content_type};
{location}
    }}
  }}"""
    return run_nginx(work, f"nginx-{port}", servers, f"http://127.0.0.1:{port}/ready")


def start_answering_nginx(work: Path, port: int, latency_ms: float) -> subprocess.Popen[bytes]:
    answer = json.dumps(ANSWER).replace("'", "\\'")
    location = f"      echo_sleep {latency_ms / 1000:.3f};\n      echo '{answer}';"
    return start_nginx(work, port, location, content_type="application/json")


def start_relaybox(
    work: Path,
    port: int,
    upstream: str,
    workers: int = 1,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    launcher: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`relaybox serve` run by `python` (another checkout's environment, for `bench.commits`),
    with `env` added to its environment; `launcher`: arguments to `python` that run the module
    (`bench.task_steps` counting its tasks' steps)."""
    providers = [
        {
            "id": "bench",
            "baseUrl": upstream,
            "apiKey": "sk-bench",
            "models": [
                {"id": "bench-model", "tier": "economy", "costPerMInput": 0.15, "costPerMOutput": 0.6}
            ],
        }
    ]
    environment = {
        "PATH": os.path.dirname(python) + ":/usr/bin:/bin",
        "HOME": str(work),
        "RELAYBOX_DATA_DIR": str(work / f"relaybox-data-{port}"),
        "CUSTOM_PROVIDERS": json.dumps(providers),
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            python,
            *launcher,
            "-m",
            "relaybox.web.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_up(f"http://127.0.0.1:{port}/ping")
    return process


def start_bare_stack(port: int, upstream: str, launcher: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, *launcher, "-m", "bench.bare_stack", "--port", str(port), "--upstream", upstream],
        cwd=HERE.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_up(f"http://127.0.0.1:{port}/nothing")
    return process


def start_litellm(work: Path, port: int, upstream: str) -> subprocess.Popen[bytes]:
    executable = ensure_litellm()
    (work / "litellm.yaml").write_text(
        "model_list:\n"
        "  - model_name: auto\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    env = {**os.environ, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOG": "ERROR"}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [str(executable), "--config", str(work / "litellm.yaml"), "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until_up(
        f"http://127.0.0.1:{port}/health/liveliness", {"Authorization": f"Bearer {LITELLM_KEY}"}, within=180
    )
    return process


def wrk(url: str, connections: int, seconds: int, work: Path, headers: dict[str, str]) -> dict[str, float]:
    script = work / "post.lua"
    # Every request's body differs (thread and request number in the prompt), so relaybox's
    # deduplication and cache, on as they are by default, have nothing to coalesce or replay.
    numbered = {**BODY, "messages": [{"role": "user", "content": "Say hello. (%d-%d)"}]}
    lines = ['wrk.method = "POST"']
    lines += [
        f'wrk.headers["{k}"] = "{v}"' for k, v in {"Content-Type": "application/json", **headers}.items()
    ]
    lines += [
        "local threads = 0",
        'function setup(thread) thread:set("thread_number", threads); threads = threads + 1 end',
        "local sent = 0",
        "function request()",
        "  sent = sent + 1",
        f"  return wrk.format(nil, nil, nil, string.format({json.dumps(json.dumps(numbered))}, thread_number, sent))",
        "end",
    ]
    script.write_text("\n".join(lines) + "\n")
    threads = 1 if connections < 2 else 2
    output = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    result["requests"] = float(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    for name, percentile in (("p50", "50%"), ("p99", "99%")):
        value, unit = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()  # type: ignore[union-attr]
        result[name] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    if socket_errors:
        result["errors"] += sum(float(n) for n in socket_errors.groups())
    return result


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        if os.getpgid(process.pid) == process.pid:  # LiteLLM: its workers are in its group
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()  # relaybox passes it on to its workers
    except ProcessLookupError:
        return
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def measure(
    targets: list[tuple[str, str, dict[str, str]]], levels: list[int], seconds: int, work: Path
) -> dict[tuple[str, int], dict[str, float]]:
    """The same wrk run (after a 2 s warm-up) at each concurrency against each target in turn."""
    results: dict[tuple[str, int], dict[str, float]] = {}
    for connections in levels:
        for name, url, headers in targets:
            wrk(url, connections, 2, work, headers)
            results[(name, connections)] = wrk(url, connections, seconds, work, headers)
            print(f"  {name} at {connections}: {results[(name, connections)]}", flush=True)
    return results


def main(seconds: int, latency_ms: float, levels: list[int], skip_litellm: bool) -> None:
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="relaybox-bench-"))
    upstream_port, relay_port, relay2_port, litellm_port, bare_port = (free_port() for _ in range(5))
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    processes = [start_answering_nginx(work, upstream_port, latency_ms)]
    try:
        processes.append(start_relaybox(work, relay_port, upstream))
        processes.append(start_relaybox(work, relay2_port, upstream, workers=2))
        processes.append(start_bare_stack(bare_port, upstream))
        targets = [
            ("direct (nginx)", f"{upstream}/chat/completions", {}),
            ("bare quart-trio", f"http://127.0.0.1:{bare_port}/static/v1/chat/completions", {}),
            ("bare pass-thru", f"http://127.0.0.1:{bare_port}/proxy/v1/chat/completions", {}),
            ("bare + actor", f"http://127.0.0.1:{bare_port}/proxy-hop/v1/chat/completions", {}),
            ("relaybox", f"http://127.0.0.1:{relay_port}/v1/chat/completions", {}),
            ("relaybox -w 2", f"http://127.0.0.1:{relay2_port}/v1/chat/completions", {}),
        ]
        if not skip_litellm:
            processes.append(start_litellm(work, litellm_port, upstream))
            targets.append(
                (
                    "LiteLLM proxy",
                    f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
                    {"Authorization": f"Bearer {LITELLM_KEY}"},
                )
            )
        results = measure(targets, levels, seconds, work)
    finally:
        for process in reversed(processes):
            stop(process)
    lines = [
        f"wrk, {seconds} s per cell, POST /v1/chat/completions (model auto), upstream nginx echo with "
        f"{latency_ms:g} ms fixed latency; bodies all different; relaybox on its defaults (routing, "
        "SQLite recording, cache, dedup, compression on)",
        f"{'target':<16}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}{'errors':>8}",
    ]
    for connections in levels:
        direct = results[("direct (nginx)", connections)]
        for name, _, _ in targets:
            r = results[(name, connections)]
            lines.append(
                f"{name:<16}{connections:>5}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
                f"{r['p50'] - direct['p50']:>9.2f}{r['p99'] - direct['p99']:>9.2f}{r['errors']:>8.0f}"
            )
        if not skip_litellm:
            litellm = results[("LiteLLM proxy", connections)]["rps"]
            one, two = (
                results[(name, connections)]["rps"] / litellm for name in ("relaybox", "relaybox -w 2")
            )
            lines.append(
                f"{'':<21}throughput vs LiteLLM: relaybox {one:.1f}x, relaybox --workers 2 {two:.1f}x"
            )
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('http_throughput', table)}")
    names = [name for name, _, _ in targets]
    series = {
        metric: {n: [results[(n, c)][metric] for c in levels] for n in names} for metric in ("rps", "p50")
    }
    picture = grouped_bars(
        "http_throughput",
        [("requests/s", series["rps"]), ("p50 latency, ms", series["p50"])],
        [f"{c} connections" for c in levels],
        title=f"Non-streaming, upstream with {latency_ms:g} ms fixed latency (wrk)",
        log_panels=frozenset({"requests/s", "p50 latency, ms"}),
    )
    print(f"written to {picture}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,10,50,200")
    parser.add_argument("--skip-litellm", action="store_true")
    arguments = parser.parse_args()
    main(
        arguments.seconds,
        arguments.latency_ms,
        [int(n) for n in arguments.concurrency.split(",")],
        arguments.skip_litellm,
    )
