"""A seeded storm of faults against a running relaybox, and the invariants that must hold after it.

Among them: every request gets its last word (its answer, or a clean error) within its own bound,
a refusal within seconds, and the report says the longest wait seen.

The storm: requests of every shape (OpenAI and Messages API, streamed and not, made-up model
names, bodies over the limit, an oversized system prompt for the Claude CLI) from clients that
sometimes hang up, at a steady concurrency with bursts past the providers' capacity. Behind
relaybox: two fake OpenAI upstreams serving the same model (so one falls back to the other) whose
every answer may be a fault drawn from `HTTP_FAULTS`, and the real Claude CLI against a fake
Anthropic API that sometimes hangs, its processes killed now and then from outside. The request
log goes to PostgreSQL through a proxy that is cut for a while and restored.

Everything is drawn from one seed: the requests up front, each fake's faults as requests reach it
(so which request meets which fault depends on timing; the mix does not).

Used by tests/test_chaos.py (a fixed seed) and bench/chaos_soak.py (longer, any seed).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import re
import signal
from collections import Counter
from pathlib import Path

import attrs
import httpx
import trio
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.supervisor import RestartPolicy
from relaybox.storage.records import AttemptRecord, group_id

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import FaultMenu, Reply, SeededFaults
from tests.fakes.tcp_proxy import CuttableProxy
from tests.harness import Running, claude_provider, eventually, openai_provider, serve, settings_for

HTTP_FAULTS: FaultMenu = (
    (0.72, lambda r: Reply(pieces=r.randint(1, 6))),
    (0.04, lambda r: Reply(status=500)),
    (0.01, lambda r: Reply(status=429, headers={"retry-after": "1"})),
    (0.02, lambda r: Reply(status=503)),
    (0.03, lambda r: Reply(reset_after=0)),  # before the first byte
    (0.03, lambda r: Reply(pieces=4, reset_after=r.randint(1, 3))),  # mid-stream
    (0.02, lambda r: Reply(stall=True)),
    (0.02, lambda r: Reply(pieces=4, stall_after=r.randint(1, 3))),
    (0.03, lambda r: Reply(pieces=4, garbage_after=r.randint(0, 3))),  # malformed
    (0.03, lambda r: Reply(pieces=4, wrong_shape_after=r.randint(0, 3))),  # wrong types
    (0.02, lambda r: Reply(pieces=4, end_after=r.randint(0, 3))),  # truncated
    (0.03, lambda r: Reply(delay=r.uniform(0.05, 0.3))),
)
CLI_FAULTS: FaultMenu = (
    (0.92, lambda r: Reply(text="From the CLI's fake upstream.")),
    (0.08, lambda r: Reply(stall=True)),  # the CLI hangs on its upstream
)
HTTP_IDLE_TIMEOUT = 1.0
CLI_IDLE_TIMEOUT = 6.0
COOLDOWN = 1.0
REQUEST_DEADLINE = 30.0  # every request is answered, or ends with an error, within this
# A request refused before any upstream work (a bad body, an unknown name, a full provider) is told
# so within this: nothing it waits for can be slow.
REFUSAL_DEADLINE = 5.0
REFUSALS = frozenset({400, 404, 413, 429})
MAX_BODY_BYTES = 1024 * 1024
CLEAN_ERROR_STATUSES = frozenset({400, 404, 413, 429, 502, 503, 504})


@attrs.frozen
class Storm:
    seed: int
    requests: int  # through the HTTP providers; the CLI's come on top
    cli_requests: int
    concurrency: int = 24
    burst_every: int = 250  # requests; then a burst of `burst_size` at once, past every limit
    burst_size: int = 48
    cut_database: tuple[float, float] = (0.3, 0.5)  # from / until these fractions of the storm
    kill_cli_every: float = 2.0  # seconds between SIGKILLs of a running Claude CLI process


@attrs.frozen
class Call:
    """One client request of the storm, drawn before it starts."""

    index: int
    api: str  # "openai" or "anthropic"
    model: str
    stream: bool
    hang_up_after: float | None = None  # the client gives up after this many seconds
    oversized: bool = False  # a body past the server's limit
    system: str | None = None

    def body(self) -> dict:
        # Each prompt is unique: no answer is shared (dedup) or cached, so every answered
        # request has an attempt of its own in the log.
        text = f"chaos request {self.index}" + ("x" * MAX_BODY_BYTES if self.oversized else "")
        body: dict = {"model": self.model, "stream": self.stream}
        if self.api == "anthropic":
            body |= {"max_tokens": 64, "messages": [{"role": "user", "content": text}]}
            if self.system:
                body["system"] = self.system
        else:
            system = [{"role": "system", "content": self.system}] if self.system else []
            body["messages"] = [*system, {"role": "user", "content": text}]
        return body

    @property
    def path(self) -> str:
        return "/v1/messages" if self.api == "anthropic" else "/v1/chat/completions"


def draw_calls(storm: Storm) -> list[Call]:
    rng = random.Random(storm.seed)
    calls = []
    for index in range(storm.requests):
        api = "anthropic" if rng.random() < 0.25 else "openai"
        roll = rng.random()
        if roll < 0.03:
            model = rng.choice((f"gpt-made-up-{index}", f"alpha:made-up-{index}", f"made-up/{index}"))
        else:
            model = "gpt-4o-mini"
        hang_up = rng.uniform(0.0, 0.4) if rng.random() < 0.08 else None
        calls.append(Call(index, api, model, rng.random() < 0.5, hang_up, oversized=rng.random() < 0.01))
    for n in range(storm.cli_requests):
        huge = n % 10 == 3  # too long for a command line: it must travel another way
        system = "You are terse. " + "Context line.\n" * 10_000 if huge else None
        call = Call(storm.requests + n, "openai", "haiku", rng.random() < 0.5, system=system)
        calls.insert(rng.randrange(len(calls) + 1), call)
    return calls


@attrs.define(eq=False)  # hashable by identity: a borrower of the concurrency limiter
class Outcome:
    call: Call
    status: int | None = None
    answered: bool = False  # a whole answer: 200 and (streamed) its closing frames
    hung_up: bool = False
    task_id: str | None = None
    error: str | None = None  # the error's message, for an answer that is one
    problem: str | None = None  # an invariant this request broke
    seconds: float | None = None  # from sending to its last word (answer or error), unless it hung up


@attrs.define
class Report:
    storm: Storm
    outcomes: list[Outcome] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)  # invariants broken after the storm
    cli_kills: int = 0
    upstream_calls: Counter[str] = attrs.field(factory=Counter)
    objects_after: list[int] = attrs.field(factory=list)  # gc-tracked objects after each half
    log_rows: int = 0
    healed_after: float = 0.0  # seconds the storm's end waited for every breaker's cooldown

    def statuses(self) -> Counter[int | None]:
        return Counter(o.status for o in self.outcomes if not o.hung_up)

    def errors(self) -> Counter[str]:
        """The errors clients got, by message with its numbers blanked out."""
        return Counter(re.sub(r"[0-9.]+", "N", o.error) for o in self.outcomes if o.error)

    def longest_wait(self, statuses: frozenset[int] | None = None) -> float:
        """The longest any request waited for its last word (of those with these statuses)."""
        waits = [
            o.seconds
            for o in self.outcomes
            if o.seconds is not None and (statuses is None or o.status in statuses)
        ]
        return max(waits, default=0.0)

    def summary(self) -> str:
        answered = sum(o.answered for o in self.outcomes)
        hung_up = sum(o.hung_up for o in self.outcomes)
        return (
            f"seed {self.storm.seed}: {len(self.outcomes)} requests, {answered} answered, "
            f"{hung_up} hung up, statuses {dict(sorted(self.statuses().items(), key=str))}; "
            f"longest wait for a last word {self.longest_wait():.2f} s "
            f"({self.longest_wait(REFUSALS):.2f} s for a refusal); "
            f"upstream calls {dict(self.upstream_calls)}, {self.cli_kills} CLI processes killed, "
            f"{self.log_rows} attempts logged; gc objects after each half {self.objects_after}; "
            f"serving again {self.healed_after:.1f} s after the storm"
        )


async def run_storm(storm: Storm, tmp_path: Path, claude: str, database_url: str) -> Report:
    """Run the storm, heal, and check the invariants; the report lists whatever broke."""
    report = Report(storm)
    calls = draw_calls(storm)
    async with trio.open_nursery() as nursery:
        alpha = await FakeOpenAI().start(nursery)
        beta = await FakeOpenAI().start(nursery)
        anthropic = await FakeAnthropic().start(nursery)
        alpha.replies = SeededFaults(HTTP_FAULTS, storm.seed + 1)
        beta.replies = SeededFaults(HTTP_FAULTS, storm.seed + 2)
        anthropic.replies = SeededFaults(CLI_FAULTS, storm.seed + 3)
        fakes = {"alpha": alpha.server, "beta": beta.server, "claude-cli": anthropic.server}
        proxy = await CuttableProxy("127.0.0.1", 5432).start(nursery)
        settings = settings_for(
            tmp_path,
            openai_provider("alpha", alpha.base_url, slots=12, mailbox=12, idle_timeout=HTTP_IDLE_TIMEOUT),
            # Small: bursts overflow it.
            openai_provider("beta", beta.base_url, slots=3, mailbox=3, idle_timeout=HTTP_IDLE_TIMEOUT),
            claude_provider(claude, anthropic.base_url, slots=2, idle_timeout=CLI_IDLE_TIMEOUT),
            database_url=database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"),
            max_body_bytes=MAX_BODY_BYTES,
            breaker=BreakerPolicy(consecutive_failures=5, cooldown=COOLDOWN),
            restart=RestartPolicy(max_restarts=3, period=30.0, backoff_initial=0.01, backoff_max=0.1),
        )
        fds_before = _open_fds()
        # No limit on the client's connections: a request waits for relaybox, never for the client's pool.
        unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=storm.concurrency)
        async with (
            serve(settings) as relay,
            httpx.AsyncClient(base_url=relay.base_url, limits=unlimited) as client,
        ):
            half = len(calls) // 2
            killing = trio.CancelScope()
            nursery.start_soon(_kill_cli_processes, storm, report, killing)
            for part, (start, end) in enumerate(((0, half), (half, len(calls)))):
                await _drive(client, calls, range(start, end), storm, report, proxy)
                for name, fake in fakes.items():  # the fakes' own request lists are no leak
                    report.upstream_calls[name] += len(fake.requests)
                    fake.requests.clear()
                if part == 0:
                    proxy.restore()
                gc.collect()
                report.objects_after.append(len(gc.get_objects()))
            killing.cancel()
            proxy.restore()
            for replies in (alpha.replies, beta.replies, anthropic.replies):
                replies.calm()
            await _check_healing(client, relay, report)
            await _check_log(relay, report)
            await _check_bounded(client, report)
        with trio.move_on_after(10):
            await eventually(lambda: not _cli_children(), within=10)
        if _cli_children():
            report.problems.append(f"Claude CLI processes left after the stop: {_cli_children()}")
        # The fakes close their side of a connection shortly after relaybox closes its own.
        with trio.move_on_after(3):
            await eventually(lambda: _open_fds() <= fds_before, within=3)
        if left_open := _open_fds() - fds_before:
            report.problems.append(f"file descriptors left open: {sorted(left_open)}")
        nursery.cancel_scope.cancel()
    report.problems += [f"request {o.call}: {o.problem}" for o in report.outcomes if o.problem]
    return report


async def _drive(
    client: httpx.AsyncClient,
    calls: list[Call],
    positions: range,
    storm: Storm,
    report: Report,
    proxy: CuttableProxy,
) -> None:
    """Send the calls at `positions` at the storm's concurrency, with its bursts; cut and restore
    the database on the way."""
    limiter = trio.CapacityLimiter(storm.concurrency)
    cut_at, restore_at = (round(len(calls) * f) for f in storm.cut_database)
    async with trio.open_nursery() as requests:
        for position in positions:
            call = calls[position]
            if position == cut_at:
                proxy.cut()
            elif position == restore_at:
                proxy.restore()
            if position % storm.burst_every == storm.burst_every - 1:
                for _ in range(storm.burst_size):  # extra requests, past every provider's capacity
                    burst = Call(-1 - len(report.outcomes), call.api, "gpt-4o-mini", call.stream)
                    outcome = Outcome(burst)
                    report.outcomes.append(outcome)
                    requests.start_soon(_send, client, outcome, None)
            outcome = Outcome(call)
            report.outcomes.append(outcome)
            await limiter.acquire_on_behalf_of(outcome)
            requests.start_soon(_send, client, outcome, limiter)


async def _send(client: httpx.AsyncClient, outcome: Outcome, limiter: trio.CapacityLimiter | None) -> None:
    call, pause = outcome.call, 0.0
    started = trio.current_time()
    try:
        with trio.move_on_after(call.hang_up_after or float("inf")) as hang_up:
            with trio.fail_after(REQUEST_DEADLINE):
                async with client.stream("POST", call.path, json=call.body(), timeout=None) as response:
                    outcome.status = response.status_code
                    outcome.task_id = response.headers.get("x-task-id")
                    body = b"".join([chunk async for chunk in response.aiter_bytes()])
                outcome.problem, outcome.answered = _judge(call, response, body)
                if response.status_code != 200 and outcome.problem is None:
                    outcome.error = json.loads(body)["error"]["message"]
                pause = float(response.headers.get("retry-after", 0))
        outcome.hung_up = hang_up.cancelled_caught
        if not outcome.hung_up:
            outcome.seconds = trio.current_time() - started
            if outcome.status in REFUSALS and outcome.seconds > REFUSAL_DEADLINE and outcome.problem is None:
                outcome.problem = f"refused ({outcome.status}) only after {outcome.seconds:.1f} s"
        if limiter is not None:
            # As the SDKs do: this client waits before its next request (a little: the storm goes on).
            await trio.sleep(min(pause, 0.5))
    except trio.TooSlowError:
        outcome.problem = f"no answer or error within {REQUEST_DEADLINE:g} s"
    except httpx.HTTPError as error:
        outcome.problem = f"the connection failed: {type(error).__name__}: {error}"
    finally:
        if limiter is not None:
            limiter.release_on_behalf_of(outcome)


def _judge(call: Call, response: httpx.Response, body: bytes) -> tuple[str | None, bool]:
    """What is wrong with this answer, if anything, and whether it is a whole answer. An error must
    be in the API's own format with a fitting status; a stream must end with its closing frames
    (a whole answer) or with an error frame."""
    if response.status_code != 200:
        if response.status_code not in CLEAN_ERROR_STATUSES:
            return f"status {response.status_code}: {body[:300]!r}", False
        try:
            error = json.loads(body)
            message = error["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return f"an error not in the API's format: {body[:300]!r}", False
        if call.api == "anthropic" and error.get("type") != "error":
            return f"a Messages API error without its type: {body[:300]!r}", False
        return (None if message else "an error with no message"), False
    if not call.stream:
        try:
            answer = json.loads(body)
            if call.api == "anthropic":
                whole = answer["type"] == "message" and answer["content"][0]["type"] == "text"
            else:
                whole = isinstance(answer["choices"][0]["message"]["content"], str)
        except (ValueError, KeyError, IndexError, TypeError):
            whole = False
        return (None if whole else f"a 200 that is no answer: {body[:300]!r}"), whole
    frames = [line for line in body.decode(errors="replace").splitlines() if line.startswith("data: ")]
    last = frames[-1].replace(" ", "") if frames else ""
    if call.api == "anthropic":
        whole, error_frame = '"type":"message_stop"' in last, '"type":"error"' in last
    else:
        whole, error_frame = last == "data:[DONE]", last.startswith('data:{"error"')
    if whole or error_frame:
        return None, whole
    return f"a stream cut without an error frame, ending {frames[-1:]!r}", False


async def _kill_cli_processes(storm: Storm, report: Report, scope: trio.CancelScope) -> None:
    """Now and then SIGKILL a running Claude CLI process, as the OOM killer or a user would."""
    rng = random.Random(storm.seed + 4)
    with scope:
        while True:
            await trio.sleep(storm.kill_cli_every)
            running = _cli_children()
            if running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(running), signal.SIGKILL)
                    report.cli_kills += 1


async def _check_healing(client: httpx.AsyncClient, relay: Running, report: Report) -> None:
    """Once the upstreams are healthy, every provider serves again within its cooldown (the
    breaker's current one: it doubles with each failed probe)."""
    cooldowns = [actor.statistics().breaker.open_for_s or 0.0 for actor in relay.system.providers.values()]
    report.healed_after = max(cooldowns) + 0.1
    await trio.sleep(report.healed_after)
    for pinned in ("alpha:gpt-4o-mini", "beta:gpt-4o-mini", "claude-cli:haiku"):
        body = {"model": pinned, "messages": [{"role": "user", "content": f"after the storm {pinned}"}]}
        response = await client.post("/v1/chat/completions", json=body, timeout=REQUEST_DEADLINE)
        if response.status_code != 200:
            report.problems.append(f"{pinned} did not serve after its cooldown: {response.text[:300]}")
    health = await client.get("/health")
    if health.status_code != 200 or health.json()["status"] != "ok":
        report.problems.append(f"/health after healing: {health.status_code} {health.text[:500]}")
    with trio.move_on_after(5):
        await eventually(lambda: not _cli_children(), within=5)
    if _cli_children():
        report.problems.append(f"Claude CLI processes running with nothing to do: {_cli_children()}")


async def _check_log(relay: Running, report: Report) -> None:
    """Every attempt a provider ran is in the log exactly once, and every answer has its attempt."""
    providers = relay.system.providers
    attempts = {
        name: sum(sum(t.attempts.values()) for t in actor.statistics().totals.values())
        for name, actor in providers.items()
    }
    storage = relay.system.storage
    for _ in range(150):  # the recorder writes in batches, and catches up after the cut
        if await storage.record_count() >= sum(attempts.values()):
            break
        await trio.sleep(0.2)
    rows: list[AttemptRecord] = await storage.recent(limit=10**7)
    report.log_rows = len(rows)
    logged = Counter(row.provider for row in rows)
    if dict(logged) != {name: n for name, n in attempts.items() if n}:
        report.problems.append(f"attempts run {attempts} but logged {dict(logged)}")
    twice = [key for key, n in Counter((r.request_group_id, r.attempt) for r in rows).items() if n > 1]
    if twice:
        report.problems.append(f"{len(twice)} attempts logged more than once, e.g. {twice[:3]}")
    succeeded = {row.request_group_id for row in rows if row.status == "success"}
    unlogged = [o for o in report.outcomes if o.answered and group_id(o.task_id or "") not in succeeded]
    if unlogged:
        groups = {row.request_group_id: row for row in rows}
        examples = [(o.call, o.task_id, groups.get(group_id(o.task_id or ""))) for o in unlogged[:3]]
        report.problems.append(
            f"{len(unlogged)} answered requests with no successful attempt logged, e.g. {examples}"
        )


async def _check_bounded(client: httpx.AsyncClient, report: Report) -> None:
    """Names clients made up leave no trace in the statistics, and memory stopped growing."""
    for page in ("/metrics", "/actors"):
        text = (await client.get(page)).text
        if "made-up" in text:
            at = text.index("made-up")
            report.problems.append(
                f"{page} keeps statistics of model names clients made up: {text[at - 300 : at + 100]}"
            )
    first, second = report.objects_after
    if second - first > first // 10:
        report.problems.append(f"gc-tracked objects grew from {first} to {second} over the second half")


def _cli_children() -> list[int]:
    """Live Claude CLI processes started by this process."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z" and b"claude" in cmdline:
            found.append(int(entry.name))
    return found


def _open_fds() -> set[tuple[int, str]]:
    """This process's open file descriptors, with what each is (a socket, a pipe, a file)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.add((int(fd), os.readlink(f"/proc/self/fd/{fd}")))
    return found
