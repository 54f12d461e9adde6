"""Faults stay where they start: no upstream, client or crash wedges a provider, takes down its
other streams, or loses a record. Each test here failed before the fix it checks."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import attrs
import httpx
import trio
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.budget import BudgetActor, BudgetHold
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.messages import Dispatch, EvidenceLoaded, Settle
from relaybox.actors.provider import ProviderLimits
from relaybox.actors.recorder import RecorderActor
from relaybox.actors.supervisor import RestartPolicy, Supervisor
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import Answering, ContentDelta, Event, Failed, Finished
from relaybox.storage.journal import as_lines
from relaybox.storage.records import AttemptRecord
from relaybox.storage.sqlite import SQLiteStorage
from relaybox.web.answer import Begun
from relaybox.web.dedup import HELD_EVENTS_LIMIT, InFlightAnswers
from relaybox.web.system import running_system

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import (
    claude_executable,
    claude_provider,
    eventually,
    openai_provider,
    serve,
    serving_child,
    settings_for,
)
from tests.scripted import Answer, Crash, ScriptedTransport, chat, complete
from tests.test_recorder_faults import a_record

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def streamed_text(response: httpx.Response) -> str:
    parts = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            parts += [c["delta"].get("content") or "" for c in chunk.get("choices", [])]
    return "".join(parts)


async def test_a_crash_during_the_half_open_probe_does_not_wedge_the_provider(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    down = ProviderFailure(FailureKind.SERVER_ERROR, "500 from upstream", upstream_status=500)
    solo = ScriptedTransport(down, down, down, Crash(), default=Answer("healed"))
    settings = settings_for(
        tmp_path,
        openai_provider("solo", "http://unused", models=("m",)),
        breaker=BreakerPolicy(consecutive_failures=3, cooldown=5.0),
    )
    async with running_system(settings, lambda config, _: solo) as system:
        for _ in range(3):
            assert isinstance((await complete(system, chat()))[-1], Failed)
        await trio.sleep(6)  # the cooldown: the next request is the probe, and its handling crashes
        probe = await complete(system, chat())
        assert isinstance(probe[-1], Failed) and "crash" in probe[-1].error.message
        after = await complete(system, chat())
        statistics = system.providers["solo"].statistics()
    assert isinstance(after[-1], Finished), after
    assert solo.calls == 5, "the upstream was asked again after the crashed probe"
    assert statistics.accepting and statistics.breaker.state.value == "closed"


async def test_one_malformed_chunk_fails_its_own_stream_only(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    # A breaker that stays out of the way: malformed streams would rightly open it; this is about
    # the actor and the sibling stream.
    breaker = BreakerPolicy(consecutive_failures=100, minimum_volume=1000)
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), breaker=breaker)
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        answers: dict[str, httpx.Response] = {}

        async def ask(name: str, reply: Reply) -> None:
            fake_openai.replies.push(reply)
            body = {**HELLO, "stream": True, "messages": [{"role": "user", "content": name}]}
            answers[name] = await client.post("/v1/chat/completions", json=body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "healthy", Reply(text="abcdefgh", pieces=8, chunk_delay=0.2))
            await trio.sleep(0.3)  # it is streaming (the fake has taken its reply)
            for i in range(6):  # six in a minute used to leave the provider failed for good
                await ask(f"malformed {i}", Reply(pieces=4, wrong_shape_after=1))
        after = await client.post("/v1/chat/completions", json=HELLO)
        await eventually(lambda: relay.system.recorder.statistics().written >= 8, within=10)
        tree = (await client.get("/actors")).json()
        rows = (await client.get("/api/requests")).json()["data"]
    assert streamed_text(answers["healthy"]) == "abcdefgh", "the sibling stream went on"
    for i in range(6):
        frames = answers[f"malformed {i}"].text
        assert "malformed upstream stream" in frames and frames.rstrip().endswith("}"), frames
    up = next(c for c in tree["supervisor"]["children"] if c["name"] == "up")
    assert up["state"] == "running" and up["restarts"] == 0
    assert after.status_code == 200
    assert sorted(r["status"] for r in rows).count("transport") == 6, "each failed attempt is in the log"


async def test_requests_whose_clients_hung_up_give_their_mailbox_places_to_live_ones(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    busy = ScriptedTransport(default=Answer("finally", delay=100))
    provider = attrs.evolve(
        openai_provider("cli", "http://unused", models=("m",)),
        limits=ProviderLimits(slots=2, mailbox=16, idle_timeout=300),
    )
    async with (
        running_system(settings_for(tmp_path, provider), lambda config, _: busy) as system,
        trio.open_nursery() as nursery,
    ):
        for _ in range(2):  # both slots taken for 100 s
            nursery.start_soon(complete, system, chat())
        await trio.sleep(1)
        abandoned = []
        for _ in range(16):  # each waits in the mailbox, then its client hangs up
            send, receive = trio.open_memory_channel[Event](8)
            token = CancelToken()
            system.router.mailbox.tell(Dispatch(f"chatcmpl-{uuid.uuid4().hex}", chat(), send, token))
            abandoned.append((token, receive))
        await trio.sleep(0.3)
        for token, receive in abandoned:
            token.cancel()
            receive.close()
        live = await complete(system, chat())
        mailbox = system.providers["cli"].statistics().mailbox
    assert isinstance(live[-1], Finished), live
    assert mailbox.purged == 16


async def test_a_huge_system_prompt_reaches_the_claude_cli_and_trips_no_one_elses_breaker(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    claude = claude_executable()
    huge = "You follow the house style guide below.\n" + "Rule: keep it short. " * 7000  # ~150 KB
    body = {
        "model": "sonnet",
        "messages": [{"role": "system", "content": huge}, {"role": "user", "content": "hi"}],
    }
    async with (
        serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client,
    ):
        answers = [await client.post("/v1/chat/completions", json=body) for _ in range(4)]
        breaker = relay.system.providers["claude-cli"].statistics().breaker
    assert [a.status_code for a in answers] == [200] * 4, answers[0].text
    assert breaker.state.value == "closed" and breaker.consecutive_failures == 0
    sent = fake_anthropic.message_requests()[-1].body.decode()
    assert "keep it short" in sent, "the system prompt reached the upstream (inline, by stdin)"


async def test_the_warm_pool_starts_nothing_for_one_off_system_prompts(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    claude = claude_executable()
    settings = settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url, warm=1))
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client,
    ):
        transport = relay.system.providers["claude-cli"].transport
        pool = transport.pool  # type: ignore[attr-defined]
        await eventually(lambda: pool.statistics().idle == 1, within=30)  # the pre-warmed process
        for i in range(5):
            body = {
                "model": "sonnet",
                "messages": [
                    {"role": "system", "content": f"persona {i}"},
                    {"role": "user", "content": "hi"},
                ],
            }
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        await trio.sleep(1)
        statistics = pool.statistics()
        spawned = transport.statistics().spawned
        keys = len(pool._idle)  # the command lines it keeps processes for
    assert spawned == 6, "the pre-warmed process and one per request: no speculative ones"
    assert statistics.misses == 5 and statistics.idle == 1 and keys == 1


async def test_names_clients_make_up_do_not_grow_relayboxs_statistics(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        for i in range(40):
            answer = await client.post("/v1/chat/completions", json={**HELLO, "model": f"up:made-up-{i}"})
            assert answer.status_code == 200
        await client.post("/v1/chat/completions", json=HELLO)
        # The router's refresh of what storage knows (every minute), done now: the log keeps the
        # names as asked, the router's evidence must not.
        await eventually(lambda: relay.system.recorder.statistics().written >= 41, within=10)
        rows = await relay.system.storage.routing_evidence(since=0)
        relay.system.router.mailbox.tell(EvidenceLoaded(tuple(rows), time.time(), trio.current_time()))
        tree = (await client.get("/actors")).json()
        metrics = (await client.get("/metrics")).text
    assert len({row.model for row in rows}) == 41
    children = {c["name"]: c for c in tree["supervisor"]["children"]}
    assert sorted(children["router"]["outcomes"]) == ["up/(other)", "up/gpt-4o-mini"]
    assert sorted(children["up"]["totals"]) == ["(other)", "gpt-4o-mini"]
    assert {row["model"] for row in children["router"]["evidence"]} <= {"(other)", "gpt-4o-mini"}
    series = [line for line in metrics.splitlines() if line.startswith("relaybox_attempts_total{")]
    assert len(series) == 2 and 'model="(other)",outcome="success"} 40' in metrics


# --- smaller defects -----------------------------------------------------------------------


async def test_a_body_nested_too_deep_is_a_400_not_a_500(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    deep = '{"model": "gpt-4o-mini", "messages": ' + "[" * 5000 + "]" * 5000 + "}"
    tools = {**HELLO, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    params: dict = tools["tools"][0]["function"]["parameters"]
    for _ in range(200):  # deep, but json.loads takes it: what comes after must not choke
        params["properties"] = {"x": {"type": "object"}}
        params = params["properties"]["x"]
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        json_headers = {"content-type": "application/json"}
        too_deep = await client.post("/v1/chat/completions", content=deep, headers=json_headers)
        still_deep = await client.post("/v1/chat/completions", json=tools)
        admin = await client.put(
            "/api/budget", content=deep.replace("messages", "period"), headers=json_headers
        )
    for answer in (too_deep, still_deep, admin):
        assert answer.status_code == 400, answer.text
        assert "nests deeper than" in answer.json()["error"]["message"]


def test_an_upstreams_retry_after_is_capped() -> None:
    from relaybox.actors.transports.http_api import RETRY_AFTER_LIMIT, _retry_after

    assert _retry_after(httpx.Headers({"retry-after": "86400"})) == RETRY_AFTER_LIMIT
    assert _retry_after(httpx.Headers({"retry-after": "Fri, 31 Dec 2100 23:59:59 GMT"})) == RETRY_AFTER_LIMIT
    assert _retry_after(httpx.Headers({"retry-after": "7"})) == 7.0


async def test_a_journal_is_replayed_a_batch_at_a_time_past_a_torn_last_line(tmp_path: Path) -> None:
    class CountingStorage(SQLiteStorage):
        batches: list[int] = []

        async def insert_records(self, records: list[AttemptRecord]) -> int:
            self.batches.append(len(records))
            return await super().insert_records(records)

    journal = tmp_path / "journal"
    journal.mkdir()
    lines = as_lines(a_record(i) for i in range(1200))
    # The last line torn by a kill in the middle of a character ("☕" is three bytes in UTF-8).
    torn = as_lines([attrs.evolve(a_record(1200), prompt_summary="coffee ☕ please")])
    (journal / "000000000007.jsonl").write_bytes(lines + torn[: torn.index("☕".encode()) + 1])
    storage = CountingStorage(str(tmp_path / "relaybox.db"))
    recorder = RecorderActor(storage, str(journal), batch_size=500)
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("root", RestartPolicy()).run)
        await supervisor.start_child(recorder)
        await eventually(lambda: recorder.statistics().written == 1200, within=10)
        nursery.cancel_scope.cancel()
    assert CountingStorage.batches == [500, 500, 200] and await storage.record_count() == 1200
    await storage.aclose()


async def test_a_budget_hold_is_settled_even_when_the_budget_actor_is_busy(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    storage = SQLiteStorage(str(tmp_path / "relaybox.db"))
    budget = BudgetActor(storage, mailbox=1)
    hold = BudgetHold(budget, pricer=None)
    hold.reservation_id = "r1"
    budget.mailbox.tell(Settle("r0", 0.0))  # the mailbox is full
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold.settle, 0.5)
        await trio.sleep(0.5)
        first = await budget.mailbox.receive.receive()  # the actor gets round to its mailbox
        second = await budget.mailbox.receive.receive()
    assert (first.reservation_id, second.reservation_id) == ("r0", "r1"), "the settle waited, not dropped"
    await storage.aclose()


async def test_a_reader_too_far_behind_a_shared_answer_is_left_behind_not_held_for() -> None:
    send, receive = trio.open_memory_channel[Event](20_000)
    for i in range(HELD_EVENTS_LIMIT + 500):
        send.send_nowait(ContentDelta(str(i)))
    send.send_nowait(Finished("stop", 1.0))
    answering = Answering("p", "m", "reason", 1, False, 0.0)
    in_flight = InFlightAnswers(5.0)
    leader = in_flight.lead(b"key", "r1").started(Begun(answering, receive, CancelToken()))
    follower = await in_flight.join(b"key")
    assert follower is not None
    read = [await leader.receive.receive() for _ in range(HELD_EVENTS_LIMIT + 500)]
    assert isinstance(read[-1], ContentDelta)
    assert isinstance(await leader.receive.receive(), Finished)
    behind = await follower.receive.receive()
    assert isinstance(behind, Failed) and behind.error.code == "fell_behind"
    assert await in_flight.join(b"key") is None


# --- a graceful stop --------------------------------------------------------------------------


async def test_on_sigterm_answers_in_flight_finish_or_end_with_an_error_frame(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    process, base_url = await serving_child(fake_openai, tmp_path / "data", "--grace", "3")
    streamed = {**HELLO, "stream": True}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            answers: dict[str, str] = {}

            async def stream(name: str, reply: Reply) -> None:
                fake_openai.replies.push(reply)
                body = {**streamed, "messages": [{"role": "user", "content": name}]}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    answers[name] = (await response.aread()).decode()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream, "short", Reply(text="abc", pieces=3, chunk_delay=0.4))
                await trio.sleep(0.3)
                nursery.start_soon(stream, "long", Reply(text="x" * 40, pieces=40, chunk_delay=0.5))
                await trio.sleep(0.5)
                process.send_signal(signal.SIGTERM)
                stopped_at = trio.current_time()
            with trio.fail_after(15):
                code = await process.wait()
            took = trio.current_time() - stopped_at
    finally:
        if process.returncode is None:
            process.kill()
    assert code == 0 and took < 5, "it stopped within the grace period (3 s)"
    assert answers["short"].rstrip().endswith("data: [DONE]"), "it finished within the grace period"
    assert "shutting down" in answers["long"] and "[DONE]" not in answers["long"], answers["long"][-300:]


async def test_while_draining_new_requests_are_refused_and_health_says_so(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(delay=10))
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        answers: list[httpx.Response] = []

        async def slow() -> None:
            answers.append(await client.post("/v1/chat/completions", json=HELLO))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.sleep(0.5)
            relay.pipeline.drain.begin(grace=2.0)
            refused = await client.post("/v1/chat/completions", json={**HELLO, "model": "up:other"})
            health = await client.get("/health")
            alive = await client.get("/ping")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "shutting_down"
    assert health.status_code == 503 and health.json()["status"] == "draining" and alive.status_code == 200
    assert answers[0].status_code == 503, "the answer that would outlast the grace period ends with a 503"
    assert answers[0].json()["error"]["code"] == "shutting_down"
