"""The learned router measured live: relaybox run as users run it, learning from its own judge and
shadow calls, over recorded benchmark answers.

    python -m bench.live_routing --data /work/shared/data/routing --sets mmlu,gsm8k,mt_bench,mixed \\
        --seeds 1,2,3,4 --quality-kept 0.5,0.8 [--limit N] [--concurrency 8] [--without DOMAIN,...] \\
        [--restart-midway]

For each set, seed and promise level (`[routing] quality_kept`, when relaybox has it):

1. A fake OpenAI-compatible upstream on loopback (`bench/live_routing_upstream.py`) serves two
   models, `weak` ($0.5 / $1.5 per Mtok) and `strong` ($10 / $30), each answering a prompt as that
   model was recorded to, and answers relaybox's judge right 85 % of the time.
2. `relaybox serve` as a child process on a fresh data directory (fresh SQLite), with a TOML file
   declaring one provider at the fake with the two models (economy and premium tiers) and the
   shipped routing defaults otherwise (judge and shadow calls on as shipped).
3. Every clean prompt of the set (repeated prompts once), in an order shuffled by the seed, sent as
   `model: "auto"` over HTTP, `--concurrency` at a time, not streamed (so the cascade applies and
   the answer says its cost in `x-cost-usd`); which model answered is its `x-model` header.
4. After the run, once the fake has heard nothing for a few seconds (relaybox's background calls
   done), relaybox's own numbers from `GET /api/stats`.

The table per set: strong share; true PGR, (quality of the answers served - weak's) / (strong's -
weak's) over the prompts answered, with the recorded quality of the model that answered; relaybox's
own estimate of the quality kept, with its interval, when it reports one; the strong share
longest-first (longest prompts to the strong model) and the topic oracle (whole domains to the strong
model by their true gain per prompt) need for that PGR; what learning cost (judge calls, shadow
answers, answers the cascade rejected or that failed before another model answered) as a share of
what sending every prompt to the strong model costs; the whole run's cost on the same scale; the
judge's verdicts that matched the truth; errors. Then the mean over seeds with a 95 % t-interval.
Costs are counted by the fake, call by call (relaybox's own count is printed beside).

`--without DOMAIN,...` (a row's domain as the data names it, e.g. `professional_law` or
`mmlu/professional_law`): relaybox still gets every prompt; under each table, the strong share, PGR
and longest-first's share for that PGR again, over the prompts outside those domains alone (always-
weak, always-strong and the longest-first ranking over those prompts only).

`--restart-midway`: in each run, once half of the prompts are answered and the fake has gone quiet,
relaybox is stopped as at a run's end (SIGTERM, then waited for) and a new `relaybox serve` started on
the same data directory and configuration (the same port when it is free) sends the second half; the
fake, its ledger and the measures go on across the restart, and the final /api/stats are the second
process's. Under the table, per run: the strong share and relaybox's estimate (with its comparisons)
before the restart, what the new process reports as it starts (the comparisons it reloaded), and the
strong share of the first 200 prompts after it (the promise's start rule would send promise + 0.2 up).
Its results are a section of their own (", restarted midway").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from relaybox.protocol.routing.learned import (
    GoodAnswerModel,
    cheap_model_prior,
    features,
    good_enough,
    strong_model_prior,
)
from relaybox.protocol.routing.learned_route import LearnedPolicy

from bench import machine, routing_metrics
from bench.live_routing_upstream import (
    MODELS,
    PRICES,
    SETS,
    STRONG,
    WEAK,
    RecordedUpstream,
    Row,
    check_judge_protocol,
    load_rows,
    user_key,
)

DATA = Path("/work/shared/data/routing")
NAME = "live_routing"
TITLES = {
    "mmlu": "MMLU, 29 domains (quality: share correct)",
    "gsm8k": "GSM8K (quality: share correct)",
    "mt_bench": "MT-Bench (quality: mean judge score 1-10; the judge's truth: 8 or more)",
    "mixed": "mixed: all three sets in one seeded order (quality: share good; MT-Bench good at 8 or more)",
}
PROVIDER = "fake"
START_TIMEOUT = 60.0  # for relaybox to answer /ping
REQUEST_TIMEOUT = 120.0  # one client request, end to end
QUIET_SECONDS = 3.0  # the fake heard nothing this long: relaybox's background calls are done
SETTLE_TIMEOUT = 120.0
STATS_TIMEOUT = 30.0  # for the recorder's rollup to count every answered request
STOP_TIMEOUT = 15.0  # SIGTERM, then SIGKILL


# --- the prior relaybox starts from ----------------------------------------------------------------


@attrs.frozen
class Prior:
    """The day-one prior the child starts from. `shipped`: the package's own, which
    `bench/routing_prior.py` trained on every clean prompt of this very data, so it has seen every
    prompt a run sends, and its outcome. `heldout`: the same build without the prompts of the run, so
    relaybox meets them as it meets a user's (only the child's prior files differ: see BOOT)."""

    name: str
    cheap: GoodAnswerModel
    strong: GoodAnswerModel
    directory: Path | None  # the held-out prior's files; None: the package's

    def alone(self, rows: Sequence[Row]) -> list[tuple[bool, float, float]]:
        """Per row, what the prior alone decides with the shipped quality target and gap (no learning):
        (strong chosen, p(good) of weak, of strong)."""
        policy = LearnedPolicy()
        out = []
        for row in rows:
            x = features([content for role, content in row.messages if role == "user"])
            p_weak, p_strong = self.cheap.predict(x), self.strong.predict(x)
            cheap_will_do = good_enough(
                p_weak, p_strong, target=policy.quality_target, gap=policy.quality_gap
            )
            out.append((not cheap_will_do, p_weak, p_strong))
        return out


def shipped_prior() -> Prior:
    return Prior(
        "shipped (trained on this data: it has seen every prompt sent)",
        cheap_model_prior(),
        strong_model_prior(),
        None,
    )


def heldout_prior(data: Path, sent: Sequence[Row], directory: Path) -> Prior:
    """The shipped prior's build (`bench/routing_prior.py`: the mixed stream of every clean prompt,
    one pass in a fixed shuffled order, a label 1 when the answer was right or judged 8 or more) less
    the prompts this run sends."""
    from bench.routing_replay import load, user_features

    held = {row.id for row in sent}
    held_texts = {row.key for row in sent}  # a prompt repeated under another id is held out too
    mixed = next(d for d in load(data) if d.name == "mixed")
    built = []
    for strong in (False, True):
        examples = [
            (user_features(p), float(mixed.outcomes.feedback(p.id, strong) >= 0.5))
            for p in mixed.prompts
            if p.id not in held
            and user_key(m.text() for m in p.messages if m.role == "user") not in held_texts
        ]
        random.Random(0).shuffle(examples)
        model = GoodAnswerModel()
        for x, good in examples:
            model.learn(x, good)
        built.append(model)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cheap_model_prior.bin").write_bytes(built[0].to_bytes())
    (directory / "strong_model_prior.bin").write_bytes(built[1].to_bytes())
    # Read back as the child will read them (the bytes keep 32-bit floats).
    cheap = GoodAnswerModel.from_bytes((directory / "cheap_model_prior.bin").read_bytes())
    strong_model = GoodAnswerModel.from_bytes((directory / "strong_model_prior.bin").read_bytes())
    return Prior(f"held out (rebuilt without this run's {len(held)} prompts)", cheap, strong_model, directory)


# `relaybox serve` with the held-out prior: relaybox reads its prior files from the module globals
# CHEAP_PRIOR / STRONG_PRIOR of protocol/routing/learned.py when it first routes `auto`; pointed at
# other files, the rest of relaybox runs unchanged (checked per run: see `prior_check`).
BOOT = """
import runpy, sys
from pathlib import Path
from relaybox.protocol.routing import learned
prior = Path(sys.argv[1])
learned.CHEAP_PRIOR = prior / "cheap_model_prior.bin"
learned.STRONG_PRIOR = prior / "strong_model_prior.bin"
sys.argv = ["relaybox", *sys.argv[2:]]
runpy.run_module("relaybox.web.cli", run_name="__main__", alter_sys=True)
"""


# --- one run ---------------------------------------------------------------------------------------


@attrs.frozen
class Sent:
    row: Row
    model: str | None  # x-model of the answer; None: an error
    provider: str | None
    cost_usd: float | None  # x-cost-usd
    fallback: bool
    reason: str
    error: str | None
    done_at: float


@attrs.frozen
class Run:
    set: str
    seed: int
    promise: float | None
    sent: tuple[Sent, ...]
    upstream: RecordedUpstream
    stats: dict[str, Any] | None
    seconds: float  # sending every prompt (not start-up or settling)
    settled: bool
    log_tail: str
    prior: Prior
    restart: Restart | None = None  # --restart-midway: the stop and start halfway through


@attrs.frozen
class Restart:
    """relaybox stopped (SIGTERM, as at a run's end) after `after` prompts were answered and the fake
    had gone quiet, then started again on the same data directory and configuration."""

    after: int  # prompts sent (and answered or failed) by the first process
    stats: dict[str, Any] | None  # the first process's /api/stats, just before it was stopped
    settled: bool  # its background calls had settled when they were read
    exit_code: int | None  # the first process's
    killed: bool  # it had not exited STOP_TIMEOUT after SIGTERM (SIGKILL)
    seconds: float  # from SIGTERM to the second process answering /ping
    port: int  # the second process's
    same_port: bool
    reloaded: dict[str, Any] | None  # the second process's /api/stats as it starts, before any prompt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server can listen on this loopback port again (with SO_REUSEADDR, as relaybox's
    listener has: connections the stopped process left in TIME_WAIT do not hold it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def quality_kept_supported() -> bool:
    """Whether this relaybox reads `[routing] quality_kept` (its configuration schema lists every
    key it reads, and refuses the rest)."""
    try:
        from relaybox.web.config import schema
    except Exception:
        return False
    return "quality_kept" in schema.SECTIONS.get("routing", ())


def promise_off() -> str:
    """The setting that turns the promise off: "off" once the promise is relaybox's default, none
    before (a relaybox of that time refuses the word)."""
    from relaybox.protocol.routing.learned_route import LearnedPolicy

    return '\n[routing]\nquality_kept = "off"\n' if LearnedPolicy().quality_kept is not None else ""


def config_text(upstream_url: str, port: int, data_dir: Path, promise: float | None) -> str:
    """relaybox's TOML: one provider of our own at the fake, its two models priced and tiered so
    `auto` chooses between them; every other provider off; routing as shipped."""
    weak_in, weak_out = PRICES[WEAK]
    strong_in, strong_out = PRICES[STRONG]
    routing = promise_off() if promise is None else f"\n[routing]\nquality_kept = {promise}\n"
    return f"""[server]
host = "127.0.0.1"
port = {port}
grace_seconds = 2
data_dir = {json.dumps(str(data_dir))}
{routing}
[providers.{PROVIDER}]
kind = "openai-compatible"
base_url = {json.dumps(upstream_url)}
api_key = "sk-live-routing-fake"
models = [
  {{ id = "{WEAK}", tier = "economy", input_per_mtok = {weak_in}, output_per_mtok = {weak_out}, context_window = 128000 }},
  {{ id = "{STRONG}", tier = "premium", input_per_mtok = {strong_in}, output_per_mtok = {strong_out}, context_window = 128000 }},
]

[providers.claude-cli]
enabled = false

[providers.gemini-cli]
enabled = false

[providers.ollama]
enabled = false
"""


def child_environment(home: Path, data_dir: Path) -> dict[str, str]:
    """A bare environment: no provider keys or base URLs of the caller's leak into the child."""
    return {
        "PATH": os.path.dirname(sys.executable),
        "HOME": str(home),
        "RELAYBOX_DATA_DIR": str(data_dir),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
    }


async def stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def wait_until_serving(client: httpx.AsyncClient, process: trio.Process) -> None:
    with trio.fail_after(START_TIMEOUT):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"relaybox exited at start with code {process.returncode}")
            try:
                if (await client.get("/ping")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.2)


async def check_models(client: httpx.AsyncClient) -> None:
    """relaybox must list the fake's two models (that nothing else answers is checked per answer:
    its x-provider)."""
    listing = (await client.get("/v1/models")).json()
    ids = {m.get("id") for m in listing.get("data", [])}
    missing = [m for m in MODELS if m not in ids and f"{PROVIDER}:{m}" not in ids]
    if missing:
        raise RuntimeError(f"relaybox does not list {missing} at /v1/models: {sorted(ids)[:20]}")


async def ask(client: httpx.AsyncClient, row: Row) -> Sent:
    body = {"model": "auto", "messages": [{"role": r, "content": c} for r, c in row.messages]}
    try:
        with trio.fail_after(REQUEST_TIMEOUT):
            response = await client.post("/v1/chat/completions", json=body)
    except (httpx.HTTPError, trio.TooSlowError) as error:
        return Sent(row, None, None, None, False, "", f"{type(error).__name__}: {error}"[:200], time.time())
    headers = response.headers
    cost = headers.get("x-cost-usd")
    model = headers.get("x-model")
    error = None
    if response.status_code != 200:
        error = f"HTTP {response.status_code}: {response.text[:200]}"
        model = None
    elif model not in MODELS or headers.get("x-provider") != PROVIDER:
        error = f"answered by {headers.get('x-provider')}/{model}, not one of {MODELS}"
        model = None
    return Sent(
        row,
        model,
        headers.get("x-provider"),
        None if cost is None else float(cost),
        headers.get("x-fallback-used") == "true",
        headers.get("x-router-reason", ""),
        error,
        time.time(),
    )


async def send_all(
    client: httpx.AsyncClient, rows: Sequence[Row], concurrency: int, label: str
) -> list[Sent]:
    results: list[Sent | None] = [None] * len(rows)
    pending = iter(range(len(rows)))
    done = 0
    started = time.monotonic()
    step = max(1, len(rows) // 10)

    async def worker() -> None:
        nonlocal done
        for i in pending:  # one iterator shared by the workers: each prompt is taken once
            results[i] = await ask(client, rows[i])
            done += 1
            if done % step == 0 or done == len(rows):
                rate = done / max(1e-9, time.monotonic() - started)
                print(f"  {label}: {done}/{len(rows)} answered ({rate:.1f}/s)", flush=True)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return [r for r in results if r is not None]


async def settle(upstream: RecordedUpstream) -> bool:
    """Until the fake has heard nothing for QUIET_SECONDS (relaybox's judge and shadow calls done)."""
    deadline = trio.current_time() + SETTLE_TIMEOUT
    while trio.current_time() < deadline:
        if trio.current_time() - upstream.ledger.last_call >= QUIET_SECONDS:
            return True
        await trio.sleep(0.5)
    return False


async def read_stats(client: httpx.AsyncClient, answered: int) -> dict[str, Any] | None:
    """/api/stats once the recorder has counted every answered request (or STATS_TIMEOUT passed)."""
    stats = None
    with trio.move_on_after(STATS_TIMEOUT):
        while True:
            try:
                response = await client.get("/api/stats", params={"days": 1})
                if response.status_code == 200:
                    stats = response.json()
                    if int((stats.get("summary") or {}).get("requests") or 0) >= answered:
                        return stats
            except (httpx.HTTPError, ValueError):
                pass
            await trio.sleep(1.0)
    return stats


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def run_one(
    set_name: str,
    rows: Sequence[Row],
    seed: int,
    promise: float | None,
    concurrency: int,
    prior: Prior,
    restart_midway: bool = False,
) -> Run:
    """One run; `restart_midway`: relaybox is stopped after the first half of the prompts and a new
    process started on the same data directory and configuration sends the second half (the fake,
    its ledger and the measures go on across the restart)."""
    label = f"{set_name} seed {seed} promise {'n/a' if promise is None else promise}"
    half = len(rows) // 2
    parts = [rows[:half], rows[half:]] if restart_midway and half else [rows]
    with tempfile.TemporaryDirectory(prefix="live_routing_", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        data_dir, home = root / "data", root / "home"
        data_dir.mkdir()
        home.mkdir()
        port = free_port()
        upstream = RecordedUpstream(rows, seed)
        async with trio.open_nursery() as nursery:
            await upstream.start(nursery)
            config = root / "relaybox.toml"
            config.write_text(config_text(upstream.base_url, port, data_dir, promise))
            log, report = root / "relaybox.log", root / "relaybox.out"
            serve = ["serve", "--config", str(config)]
            if prior.directory is None:
                command = [sys.executable, "-m", "relaybox.web.cli", *serve]
            else:
                command = [sys.executable, "-c", BOOT, str(prior.directory), *serve]

            async def launch() -> trio.Process:
                # Appended to: a restarted process's output follows the first one's.
                with log.open("ab") as log_file, report.open("ab") as report_file:
                    return await trio.lowlevel.open_process(
                        command,
                        env=child_environment(home, data_dir),
                        cwd=str(root),
                        stdout=report_file,
                        stderr=log_file,
                    )

            process = await launch()
            sent: list[Sent] = []
            seconds = 0.0
            restart: Restart | None = None
            before: tuple[dict[str, Any] | None, bool] | None = None
            stopping = 0.0
            exit_code: int | None = None
            killed = same_port = False
            try:
                for i, part in enumerate(parts):
                    if i:
                        # The restart: the first process stopped as at a run's end, the next on the same
                        # data directory (and port, unless something else took it meanwhile).
                        stopping = time.monotonic()
                        await stop(process)
                        exit_code = process.returncode
                        killed = exit_code == -signal.SIGKILL  # SIGTERM was not enough in STOP_TIMEOUT
                        same_port = port_free(port)
                        if not same_port:
                            port = free_port()
                            config.write_text(config_text(upstream.base_url, port, data_dir, promise))
                        print(
                            f"  {label}: relaybox stopped after {len(sent)} prompts (exit code {exit_code}); "
                            f"starting it again on the same data directory, port {port}",
                            flush=True,
                        )
                        process = await launch()
                    limits = httpx.Limits(
                        max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4
                    )
                    async with httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT, limits=limits
                    ) as client:
                        try:
                            await wait_until_serving(client, process)
                        except (RuntimeError, trio.TooSlowError) as error:
                            raise RuntimeError(
                                f"{label}: relaybox did not {'start again' if i else 'start'} ({error}); "
                                f"its output:\n{tail(report)}\n{tail(log)}"
                            ) from None
                        if i:
                            assert before is not None
                            serving_again = time.monotonic() - stopping
                            restart = Restart(
                                after=len(sent),
                                stats=before[0],
                                settled=before[1],
                                exit_code=exit_code,
                                killed=killed,
                                seconds=serving_again,
                                port=port,
                                same_port=same_port,
                                reloaded=await read_stats(client, 0),
                            )
                        await check_models(client)
                        started = time.monotonic()
                        sent += await send_all(
                            client, part, concurrency, label + (" (after the restart)" if i else "")
                        )
                        seconds += time.monotonic() - started
                        settled = await settle(upstream)
                        stats = await read_stats(client, sum(1 for s in sent if s.model is not None))
                        if i == 0:
                            before = (stats, settled)
            finally:
                await stop(process)
                nursery.cancel_scope.cancel()
        return Run(
            set_name,
            seed,
            promise,
            tuple(sent),
            upstream,
            stats,
            seconds,
            settled,
            tail(log, 8),
            prior,
            restart,
        )


# --- what a run measured -----------------------------------------------------------------------------


@attrs.frozen
class Measured:
    prompts: int
    errors: int
    strong_share: float
    pgr: float
    pgr_good: float  # the same on the judge's good/bad scale (differs from `pgr` on MT-Bench alone)
    longest_first: float | None  # strong share longest-first needs for the same PGR (None: never)
    topic_oracle: float | None
    learning_cost: float  # judge + shadow + rejected, / always-strong
    judge_cost: float
    shadow_cost: float
    rejected_cost: float
    total_cost: float  # everything the fake was asked, / always-strong
    judge_right: float | None
    by_quarter: tuple[float, ...]  # strong share in each quarter of the run, in the order answered
    fallbacks: int
    estimate: str  # relaybox's own, as it reports it
    prior_strong_share: float  # the prior alone (no learning), on the same prompts
    prior_pgr: float
    prior_checked: int  # answers decided "from the prior alone" whose p(good) was compared
    prior_mismatched: int  # ... and did not match the prior the harness thinks relaybox has
    gap: float  # strong % - LF % same PGR, in points
    without: Part | None  # the same over the prompts outside the --without domains (None: no --without)


@attrs.frozen
class Part:
    """What was served on some of a run's prompts (all of them, or those outside some domains),
    against always-weak and always-strong on the same answered prompts."""

    prompts: int  # sent
    errors: int
    strong_share: float
    pgr: float
    longest_first: float | None  # strong share longest-first, ranking these prompts alone, needs for `pgr`
    outcomes: routing_metrics.Outcomes  # of the answered prompts, in the order sent

    @property
    def gap(self) -> float:
        """strong % - LF % same PGR, in points (longest-first never reaching that PGR: counted as 100 %)."""
        return 100 * (self.strong_share - (1.0 if self.longest_first is None else self.longest_first))


def measure_part(sent: Sequence[Sent]) -> Part:
    answered = [s for s in sent if s.model is not None]
    rows = [s.row for s in answered]
    n = max(1, len(answered))
    outcomes = routing_metrics.Outcomes(
        tuple(r.weak_quality for r in rows), tuple(r.strong_quality for r in rows)
    )
    quality = sum(s.row.quality(s.model) for s in answered if s.model) / n
    pgr = outcomes.pgr(quality) if rows else 0.0
    lengths = [float(r.length) for r in rows]
    longest = (
        routing_metrics.share_reaching(routing_metrics.ranking_curve(outcomes, lengths), pgr)
        if rows
        else None
    )
    return Part(
        prompts=len(sent),
        errors=len(sent) - len(answered),
        strong_share=sum(s.model == STRONG for s in answered) / n,
        pgr=pgr,
        longest_first=longest,
        outcomes=outcomes,
    )


def in_domain(domain: str, name: str) -> bool:
    """Whether a row's domain ("set/domain") is the one named: by its full name or the part after "/"."""
    return name in (domain, domain.split("/", 1)[-1])


def measure(run: Run, without: Sequence[str] = ()) -> Measured:
    whole = measure_part(run.sent)
    answered = [s for s in run.sent if s.model is not None]
    rows = [s.row for s in answered]
    n = max(1, len(answered))
    outcomes, pgr = whole.outcomes, whole.pgr
    goods = routing_metrics.Outcomes(
        tuple(float(r.weak_good) for r in rows), tuple(float(r.strong_good) for r in rows)
    )
    pgr_good = goods.pgr(sum(s.row.good(s.model) for s in answered if s.model) / n) if rows else 0.0
    gains: dict[str, list[float]] = {}
    for r in rows:
        gains.setdefault(r.domain, []).append(r.strong_quality - r.weak_quality)
    gain = {d: sum(g) / len(g) for d, g in gains.items()}
    topic = (
        routing_metrics.share_reaching(
            routing_metrics.ranking_curve(outcomes, [gain[r.domain] for r in rows]), pgr
        )
        if rows
        else None
    )

    # Costs, from the fake's ledger: per row, the answer calls in the order they came; the first call
    # of the model that answered the client served it; calls before it were rejected (the cascade) or
    # failed over; calls after it are shadow answers. Rows whose request failed: all rejected.
    served = {s.row.id: s.model for s in run.sent}
    calls: dict[str, list[tuple[str, float]]] = {}
    judge = 0.0
    right = judged = 0
    for call in run.upstream.ledger.calls:
        if call.kind == "judge":
            judge += call.cost
            for _, truth, verdict in call.judged:
                judged += 1
                right += truth == verdict
        else:
            calls.setdefault(call.rows[0], []).append((call.model, call.cost))
    serving = shadow = rejected = 0.0
    for row_id, made in calls.items():
        model = served.get(row_id)
        first = next((i for i, (m, _) in enumerate(made) if m == model), None)
        for i, (_, c) in enumerate(made):
            if first is None or i < first:
                rejected += c
            elif i == first:
                serving += c
            else:
                shadow += c
    always_strong = sum(s.row.always_strong_cost() for s in run.sent) or 1.0
    alone = run.prior.alone(rows)
    prior_quality = (
        sum(r.quality(STRONG if pick else WEAK) for r, (pick, _, _) in zip(rows, alone, strict=True)) / n
    )
    checked, mismatched = prior_check(answered, alone)
    in_order = sorted(answered, key=lambda s: s.done_at)
    quarters = []
    for q in range(4):
        part = in_order[q * len(in_order) // 4 : (q + 1) * len(in_order) // 4]
        quarters.append(sum(s.model == STRONG for s in part) / len(part) if part else math.nan)
    rest = (
        measure_part([s for s in run.sent if not any(in_domain(s.row.domain, d) for d in without)])
        if without
        else None
    )
    return Measured(
        prompts=whole.prompts,
        errors=whole.errors,
        strong_share=whole.strong_share,
        pgr=pgr,
        pgr_good=pgr_good,
        longest_first=whole.longest_first,
        topic_oracle=topic,
        learning_cost=(judge + shadow + rejected) / always_strong,
        judge_cost=judge / always_strong,
        shadow_cost=shadow / always_strong,
        rejected_cost=rejected / always_strong,
        total_cost=(serving + judge + shadow + rejected) / always_strong,
        judge_right=right / judged if judged else None,
        by_quarter=tuple(quarters),
        fallbacks=sum(s.fallback for s in answered),
        estimate=relaybox_estimate(run.stats),
        prior_strong_share=sum(pick for pick, _, _ in alone) / n,
        prior_pgr=outcomes.pgr(prior_quality) if rows else 0.0,
        prior_checked=checked,
        prior_mismatched=mismatched,
        gap=whole.gap,
        without=rest,
    )


P_GOOD = re.compile(r"/(\w+) p\(good\)=([0-9.]+)")


def prior_check(answered: Sequence[Sent], alone: Sequence[tuple[bool, float, float]]) -> tuple[int, int]:
    """That relaybox runs on the prior the harness thinks: every answer whose x-router-reason says it
    was decided "from the prior alone" (no label learned yet) states the p(good) of the model it
    chose; it must be the prior's, to the two decimals it is printed with."""
    checked = mismatched = 0
    for sent, (_, p_weak, p_strong) in zip(answered, alone, strict=True):
        if "from the prior alone" not in sent.reason:
            continue
        found = P_GOOD.search(sent.reason)
        if found is None or found.group(1) not in MODELS:
            continue
        expected = p_weak if found.group(1) == WEAK else p_strong
        checked += 1
        mismatched += abs(float(found.group(2)) - expected) > 0.0051
    return checked, mismatched


def relaybox_estimate(stats: dict[str, Any] | None) -> str:
    """relaybox's own estimate of the quality it kept, with its interval, if it reports one."""
    learned = (stats or {}).get("learned_routing") or {}
    kept = learned.get("quality_kept")
    if kept is None:
        return "n/a"
    if isinstance(kept, int | float):
        return f"{kept:.2f}"
    if isinstance(kept, dict):
        if "estimate" in kept and kept["estimate"] is None:
            return f"none yet ({kept.get('comparisons', '?')} cmp)"
        value = next((kept[k] for k in ("estimate", "value", "kept", "pgr") if k in kept), None)
        low = next((kept[k] for k in ("low", "lower", "ci_low") if k in kept), None)
        high = next((kept[k] for k in ("high", "upper", "ci_high") if k in kept), None)
        interval = kept.get("interval") or kept.get("ci")
        if low is None and isinstance(interval, list | tuple) and len(interval) == 2:
            low, high = interval
        if isinstance(value, int | float):
            text = f"{value:.2f}"
            if isinstance(low, int | float) and isinstance(high, int | float):
                text += f" [{low:.2f}, {high:.2f}]"
            return text
    return json.dumps(kept, separators=(",", ":"))[:14]


AFTER_RESTART = 200  # prompts "just after the restart", and just before it


def strong_percent(sent: Sequence[Sent]) -> str:
    """The strong share of the answered prompts among these, in %."""
    answered = [s for s in sent if s.model is not None]
    return pct(sum(s.model == STRONG for s in answered) / len(answered)) if answered else "n/a"


def comparisons_of(stats: dict[str, Any] | None) -> str:
    """The blind comparisons relaybox's promise estimate rests on (/api/stats
    learned_routing.quality_kept.comparisons)."""
    kept = ((stats or {}).get("learned_routing") or {}).get("quality_kept")
    value = kept.get("comparisons") if isinstance(kept, dict) else None
    return "n/a" if value is None else str(value)


def estimate_of(stats: dict[str, Any] | None) -> str:
    """relaybox's estimate with its interval, as the table prints it, without the comparisons."""
    return relaybox_estimate(stats).split(" (", 1)[0]


def restart_lines(run: Run) -> list[str]:
    """--restart-midway: what relaybox knew before the restart, what the new process reloaded, and how
    it routed straight after (the start rule sends the promise + START_MARGIN up; evidence carried
    over keeps routing as before)."""
    restart = run.restart
    if restart is None:
        return []
    n = restart.after
    first, second = run.sent[:n], run.sent[n:]
    how = f"exit code {restart.exit_code}" + (", killed after SIGTERM timed out" if restart.killed else "")
    return [
        f"restarted after {n} prompts; before the restart: strong % {strong_percent(first)}, relaybox est. "
        f"{estimate_of(restart.stats)} with {comparisons_of(restart.stats)} comparisons; just after the "
        f"restart (first {min(AFTER_RESTART, len(second))} prompts): strong % "
        f"{strong_percent(second[:AFTER_RESTART])}",
        f"restart: the first process stopped on SIGTERM ({how}) once its background calls had "
        f"{'' if restart.settled else 'not '}settled; the second served {restart.seconds:.1f} s after the "
        f"SIGTERM on the same data directory, {'same' if restart.same_port else 'another'} port; as it "
        f"started, before any prompt, relaybox est. {estimate_of(restart.reloaded)} with "
        f"{comparisons_of(restart.reloaded)} comparisons; strong % of the last {min(AFTER_RESTART, n)} "
        f"prompts before the restart {strong_percent(first[-AFTER_RESTART:])}, of the whole second half "
        f"{strong_percent(second)}; at the end relaybox est. {estimate_of(run.stats)} with "
        f"{comparisons_of(run.stats)} comparisons",
    ]


def relaybox_numbers(run: Run) -> list[str]:
    """What relaybox says about the run, from /api/stats, beside the fake's own count."""
    stats = run.stats
    if stats is None:
        return ["relaybox /api/stats: n/a (not answered)"]
    summary = stats.get("summary") or {}
    spend: dict[str, list[float]] = {}
    for row in stats.get("learning_spend") or []:
        entry = spend.setdefault(str(row.get("status")), [0, 0.0])
        entry[0] += int(row.get("attempts") or 0)
        entry[1] += float(row.get("cost_usd") or 0.0)
    fake_total = sum(c.cost for c in run.upstream.ledger.calls)
    answered = [s for s in run.sent if s.model is not None]
    costs = [s.cost_usd for s in answered if s.cost_usd is not None]
    calls = run.upstream.ledger.calls
    heard = {
        (kind, model): sum(1 for c in calls if c.kind == kind and c.model == model)
        for kind in ("answer", "judge")
        for model in MODELS
    }
    learned = stats.get("learned_routing")
    lines = [
        f"relaybox: requests {summary.get('requests', 'n/a')}, answered {summary.get('answered', 'n/a')}, "
        f"failed {summary.get('failed', 'n/a')}, background calls {summary.get('background_calls', 'n/a')}, "
        f"cost ${float(summary.get('cost_usd') or 0):.4f} (the fake counted ${fake_total:.4f}); "
        f"the answers' x-cost-usd add up to ${sum(costs):.4f} ({len(answered) - len(costs)} answers without it)",
        f"the fake heard: answers from weak {heard['answer', WEAK]}, from strong {heard['answer', STRONG]}; "
        f"judge calls {heard['judge', WEAK] + heard['judge', STRONG]}",
        "relaybox learning_spend: "
        + (
            ", ".join(f"{status} {n} calls ${c:.4f}" for status, (n, c) in sorted(spend.items()))
            if spend
            else "n/a"
        ),
    ]
    if learned is None:
        lines.append("relaybox learned_routing: n/a")
    else:
        kept = learned.get("quality_kept", "n/a")
        lines.append(
            f"relaybox learned_routing: labels {learned.get('labels', 'n/a')}, "
            f"comparisons {learned.get('comparisons', 'n/a')}, verdicts {learned.get('verdicts', 'n/a')}, "
            f"quality_kept {json.dumps(kept) if kept != 'n/a' else 'n/a'}"
        )
    return lines


# --- the table ---------------------------------------------------------------------------------------

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_interval(values: Sequence[float | None], digits: int = 3, starred: bool = False) -> str:
    """Mean over seeds with a 95 % t-interval (a value never reached counts as 1.0, noted with '*';
    `starred`: note '*' anyway, for values computed from one never reached)."""
    reached = [1.0 if v is None else v for v in values]
    star = "*" if starred or any(v is None for v in values) else ""
    if not reached:
        return "n/a"
    mean = sum(reached) / len(reached)
    if len(reached) < 2:
        return f"{mean:.{digits}f}{star}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in reached) / (len(reached) - 1))
    half = T95.get(len(reached) - 1, 1.96) * sd / math.sqrt(len(reached))
    return f"{mean:.{digits}f}{star} [{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


def mean_gap(parts: Sequence[Part | Measured]) -> str:
    """The mean gap (strong % - LF % same PGR) over seeds, in points."""
    return mean_interval([p.gap for p in parts], 1, any(p.longest_first is None for p in parts)) + " points"


def pct(value: float | None) -> str:
    return "never" if value is None else f"{100 * value:.1f}"


COLUMNS = (
    ("promise", 8),
    ("seed", 5),
    ("prompts", 8),
    ("errors", 7),
    ("strong %", 9),
    ("PGR", 7),
    ("prior alone %/PGR", 18),
    ("relaybox est.", 14),
    ("LF % same PGR", 14),
    ("topic % same PGR", 17),
    ("learn cost %", 13),
    ("(judge/shadow/rej.)", 20),
    ("total cost %", 13),
    ("judge right %", 14),
    ("s/1k", 6),
)


def cells(run: Run, m: Measured) -> list[str]:
    return [
        "n/a" if run.promise is None else f"{run.promise:g}",
        str(run.seed),
        str(m.prompts),
        str(m.errors),
        pct(m.strong_share),
        f"{m.pgr:.3f}",
        f"{pct(m.prior_strong_share)}/{m.prior_pgr:.3f}",
        m.estimate,
        pct(m.longest_first),
        pct(m.topic_oracle),
        pct(m.learning_cost),
        f"{100 * m.judge_cost:.1f}/{100 * m.shadow_cost:.1f}/{100 * m.rejected_cost:.1f}",
        pct(m.total_cost),
        "n/a" if m.judge_right is None else pct(m.judge_right),
        f"{1000 * run.seconds / max(1, m.prompts):.0f}",
    ]


def line(values: Sequence[str]) -> str:
    return " ".join(v.rjust(width) for v, (_, width) in zip(values, COLUMNS, strict=True)).rstrip()


def section_key(set_name: str, prior: str, limit: int | None, restart_midway: bool = False) -> str:
    """A results section's name: a later run of the same set, prior, limit and restart replaces it."""
    return f"{set_name}, {prior} prior, {'all prompts' if limit is None else f'first {limit} prompts'}" + (
        ", restarted midway" if restart_midway else ""
    )


def set_section(
    key: str,
    set_name: str,
    runs: list[Run],
    dropped: int,
    clean: int,
    command: str,
    when: str,
    without: Sequence[str] = (),
) -> str:
    measured = [(run, measure(run, without)) for run in runs]
    out = [
        f"## {key}: {TITLES[set_name]}",
        f"command: {command}",
        f"run: {when}",
        f"clean prompts in the set: {clean} ({dropped} repeated prompts sent once)",
        f"relaybox's day-one prior: {runs[0].prior.name if runs else 'n/a'}",
        *(
            [
                "restart (--restart-midway): each run's relaybox stopped (SIGTERM) after half its prompts "
                "and started again on the same data directory and configuration for the second half; "
                "the table covers both halves, the lines under it the restart"
            ]
            if any(run.restart for run in runs)
            else []
        ),
        "",
        line([name for name, _ in COLUMNS]),
    ]
    promises: list[float | None] = []
    for run, _ in measured:
        if run.promise not in promises:
            promises.append(run.promise)
    for promise in promises:
        group = [(run, m) for run, m in measured if run.promise == promise]
        out += [line(cells(run, m)) for run, m in group]
        ms = [m for _, m in group]
        if len(ms) > 1:
            out.append(
                f"  mean over {len(ms)} seeds (95% t-interval), promise "
                f"{'n/a' if promise is None else f'{promise:g}'}: "
                f"strong share {mean_interval([m.strong_share for m in ms])}, "
                f"PGR {mean_interval([m.pgr for m in ms])} (prior alone "
                f"{mean_interval([m.prior_pgr for m in ms])}), "
                f"longest-first share {mean_interval([m.longest_first for m in ms])}, "
                f"gap (strong - LF) {mean_gap(ms)}, "
                f"topic-oracle share {mean_interval([m.topic_oracle for m in ms])}, "
                f"learning cost {mean_interval([m.learning_cost for m in ms])}, "
                f"total cost {mean_interval([m.total_cost for m in ms])}, "
                f"errors {sum(m.errors for m in ms)}"
            )
    if without:
        out += without_block(measured, promises, without)
    out.append("")
    for run, m in measured:
        quarters = ", ".join("n/a" if math.isnan(q) else f"{100 * q:.1f}" for q in m.by_quarter)
        ledger = run.upstream.ledger
        out.append(
            f"seed {run.seed}, promise {'n/a' if run.promise is None else f'{run.promise:g}'}: "
            f"strong % by quarter of the run {quarters}; answers with x-fallback-used {m.fallbacks}; "
            f"fake refused {len(ledger.refused)} requests; ambiguous judged answers {ledger.ambiguous}; "
            + (
                f"prior check: {m.prior_checked - m.prior_mismatched} of {m.prior_checked} answers decided "
                "from the prior alone state its p(good)"
                if m.prior_checked
                else "prior check: n/a (no answer's x-router-reason said it was decided from the prior alone)"
            )
            + (f"; PGR on the judge's good/bad scale {m.pgr_good:.3f}" if run.set == "mt_bench" else "")
            + ("" if run.settled else "; background calls had not settled when stats were read")
        )
        out += ["  " + text for text in restart_lines(run)]
        out += ["  " + text for text in relaybox_numbers(run)]
        errors = [s.error for s in run.sent if s.error]
        if errors:
            out.append(f"  first errors: {errors[:3]}")
            out += ["  relaybox's log, last lines: " + text for text in run.log_tail.splitlines()]
        if ledger.refused:
            out.append(f"  first refusals: {ledger.refused[:3]}")
    return "\n".join(out)


def without_block(
    measured: Sequence[tuple[Run, Measured]],
    promises: Sequence[float | None],
    without: Sequence[str],
) -> list[str]:
    """The measures again over the prompts outside the --without domains: a line per seed and promise,
    and the mean over seeds per promise."""
    label = "without " + ",".join(without)
    domains = {s.row.domain for run, _ in measured for s in run.sent}
    missing = [d for d in without if not any(in_domain(domain, d) for domain in domains)]
    out = [""]
    if missing:
        out.append(f"{label}: no prompt sent from {', '.join(missing)} in this set")
    for promise in promises:
        group = [(run, m.without) for run, m in measured if run.promise == promise and m.without]
        for run, p in group:
            out.append(
                f"seed {run.seed}, promise {'n/a' if promise is None else f'{promise:g}'}: {label}: "
                f"prompts {p.prompts}{f' (errors {p.errors})' if p.errors else ''}, "
                f"strong % {pct(p.strong_share)}, PGR {p.pgr:.3f}, LF % same PGR {pct(p.longest_first)}, "
                f"gap (strong - LF) {p.gap:.1f}{'*' if p.longest_first is None else ''} points"
            )
        parts = [p for _, p in group]
        if len(parts) > 1:
            out.append(
                f"  mean over {len(parts)} seeds (95% t-interval), promise "
                f"{'n/a' if promise is None else f'{promise:g}'}, {label}: "
                f"strong share {mean_interval([p.strong_share for p in parts])}, "
                f"PGR {mean_interval([p.pgr for p in parts])}, "
                f"longest-first share {mean_interval([p.longest_first for p in parts])}, "
                f"gap (strong - LF) {mean_gap(parts)}"
            )
    return out


LEGEND = """\
Columns: strong % = share of the answered prompts answered by `strong` (x-model); PGR = (quality of
the answers served - always-weak's) / (always-strong's - always-weak's) over the same prompts, from
the recorded outcomes; prior alone = the strong share and PGR of relaybox's day-one prior with no
learning at all (the shipped quality target 0.75 and gap 0.15), on the same prompts; relaybox est. =
relaybox's own estimate of the quality it kept, with its interval (/api/stats
learned_routing.quality_kept; n/a when relaybox reports none); LF % same PGR = the strong
share longest-first (longest prompts to strong) needs to reach that PGR; topic % same PGR = the same
for the topic oracle (whole domains to strong, by their true gain per prompt; one domain = random);
learn cost % = judge calls + shadow answers + rejected or failed-over answers, as a share of what
always-strong would have cost for these prompts (judge/shadow/rej. splits it); total cost % = the
whole run's upstream cost on the same scale; judge right % = the fake judge's verdicts that matched
the recorded truth (target 85); s/1k = seconds to send 1,000 prompts (wall clock, this machine).
Costs are the fake's, per call, at weak $0.5/$1.5 and strong $10/$30 per Mtok (tokens = chars / 4);
relaybox's own totals are printed under each table. 'never': that PGR is not reached at any share.
gap (strong - LF) = strong % - LF % same PGR, in points ('never' counted as 100 %, noted '*').
'without D' lines (--without): strong %, PGR and LF % same PGR over the prompts outside domains D
alone (always-weak, always-strong and the longest-first ranking over those prompts only); relaybox
was sent every prompt all the same."""


def merge_results(sections: dict[str, str], header: str) -> str:
    """This run's sections, and the previous results file's sections for sets not run this time."""
    kept: dict[str, str] = {}
    previous = machine.RESULTS / f"{NAME}.md"
    if previous.exists():
        text = previous.read_text()
        body = text.split("```\n", 1)[1].rsplit("\n```", 1)[0] if "```\n" in text else ""
        for part in body.split("\n## ")[1:]:
            name = part.split(":", 1)[0].strip()
            kept[name] = "## " + part.rstrip()
    kept.update(sections)
    order = [key for name in (*SETS, "mixed") for key in sorted(kept) if key.split(",", 1)[0] == name]
    order += sorted(set(kept) - set(order))
    return "\n\n".join([header, LEGEND, *(kept[key] for key in order)])


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "relaybox (version unknown)"
    return f"relaybox at {head}" + (" with uncommitted changes in the work tree" if dirty else "")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sets", default="mmlu,gsm8k,mt_bench,mixed")
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument(
        "--quality-kept",
        default="0.5,0.8",
        help="promise levels ([routing] quality_kept); 'off': a run without a promise",
    )
    parser.add_argument("--limit", type=int, help="only the first N prompts after shuffling")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--prior",
        choices=("shipped", "heldout"),
        default="shipped",
        help="relaybox's day-one prior: the package's (trained on this very data) or rebuilt without "
        "the run's prompts",
    )
    parser.add_argument(
        "--restart-midway",
        action="store_true",
        help="stop relaybox (SIGTERM) after half of each run's prompts and start it again on the same "
        "data directory and configuration for the second half",
    )
    parser.add_argument(
        "--without",
        default="",
        metavar="DOMAIN[,DOMAIN...]",
        help="also report each table's measures over the prompts outside these domains (as the data "
        "names them: 'professional_law' or 'mmlu/professional_law'); relaybox still gets every prompt",
    )
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in sets:
        if s not in TITLES:
            parser.error(f"unknown set {s!r} (one of {', '.join(TITLES)})")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    levels: list[float | None] = [
        None if x.strip().lower() in ("off", "none") else float(x)
        for x in args.quality_kept.split(",")
        if x.strip()
    ]
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    without = [d.strip() for d in args.without.split(",") if d.strip()]
    loaded = {set_name: load_rows(args.data, set_name) for set_name in sets}
    domains = sorted({row.domain for rows, _ in loaded.values() for row in rows})
    unknown = [d for d in without if not any(in_domain(domain, d) for domain in domains)]
    if unknown:
        parser.error(
            f"--without: {', '.join(map(repr, unknown))} matches no domain of the set(s) {', '.join(sets)} "
            f"in {args.data}; their domains: {', '.join(domains)}"
        )
    check_judge_protocol()
    promises: list[float | None]
    if quality_kept_supported():
        promises = list(levels)
    else:
        if any(level is not None for level in levels):
            print(
                "relaybox has no [routing] quality_kept setting yet: the promise level is not supported; "
                "running with the shipped defaults once per seed",
                flush=True,
            )
        promises = [None]
    command = "python -m bench.live_routing " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    when = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine.describe()}; {git_state()}"
    sections: dict[str, str] = {}
    shipped = shipped_prior()
    built: dict[frozenset[str], Prior] = {}
    priors_dir = Path(tempfile.mkdtemp(prefix="live_routing_priors_"))
    try:
        for set_name in sets:
            rows, dropped = loaded[set_name]
            runs = []
            for seed in seeds:
                order = list(rows)
                random.Random(seed).shuffle(order)
                if args.limit is not None:
                    order = order[: args.limit]
                prior = shipped
                if args.prior == "heldout":
                    ids = frozenset(row.id for row in order)
                    if ids not in built:
                        print(f"building a prior without these {len(ids)} prompts ...", flush=True)
                        built[ids] = heldout_prior(args.data, order, priors_dir / str(len(built)))
                    prior = built[ids]
                for promise in promises:
                    print(f"{set_name}, seed {seed}, promise {promise}: {len(order)} prompts", flush=True)
                    run = trio.run(
                        run_one, set_name, order, seed, promise, args.concurrency, prior, args.restart_midway
                    )
                    m = measure(run, without)
                    print(
                        f"  strong {pct(m.strong_share)} %, PGR {m.pgr:.3f} (prior alone: strong "
                        f"{pct(m.prior_strong_share)} %, PGR {m.prior_pgr:.3f}), errors {m.errors}, "
                        f"{1000 * run.seconds / max(1, m.prompts):.0f} s per 1,000 prompts"
                        + (
                            f"; without {','.join(without)}: strong {pct(m.without.strong_share)} %, "
                            f"PGR {m.without.pgr:.3f}, LF {pct(m.without.longest_first)} %"
                            if m.without
                            else ""
                        ),
                        flush=True,
                    )
                    for text in restart_lines(run):
                        print("  " + text, flush=True)
                    runs.append(run)
            key = section_key(set_name, args.prior, args.limit, args.restart_midway)
            sections[key] = set_section(key, set_name, runs, dropped, len(rows), command, when, without)
            print("\n" + sections[key] + "\n", flush=True)
        header = (
            "The learned router measured live: relaybox serve (child process, fresh SQLite) over a fake "
            "upstream replaying recorded weak (Mixtral-8x7B) and strong (GPT-4) answers; model 'auto', "
            "non-streaming, judge and shadow calls as shipped."
        )
    finally:
        shutil.rmtree(priors_dir, ignore_errors=True)
    print(f"written to {machine.write(NAME, merge_results(sections, header))}")


if __name__ == "__main__":
    main()
