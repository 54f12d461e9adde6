"""Every ask gets its last word: messages about the same thing keep their order, and no caller
waits out a long timeout because someone else failed (on trio's mock clock)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from relaybox.actors import mcp_server
from relaybox.actors.budget import BudgetActor
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import Mailbox
from relaybox.actors.mcp_server import McpServerActor
from relaybox.actors.messages import AttemptEnded, AttemptResult, Dispatch, Job, Reserve, Settle, ToolResult
from relaybox.actors.provider import REPORT_WAIT, report
from relaybox.actors.supervisor import ChildState, RestartPolicy, Supervisor
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.errors import AttemptFailure, FailureKind, RelayError
from relaybox.protocol.events import Event, Failed, Finished
from relaybox.protocol.routing.catalog import Candidate, Route
from relaybox.protocol.routing.progress import DispatchState
from relaybox.protocol.tool_loop import McpServerSpec
from relaybox.storage.records import Budget, Reservation, StoredResponse, Window
from relaybox.web import streaming
from relaybox.web.answer import REPLY_BUFFER
from relaybox.web.config import load_settings
from relaybox.web.stored_responses import MAX_CHAIN, MEMORY_ENTRIES, ResponseStore
from relaybox.web.system import running_system

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import openai_provider, serve, settings_for
from tests.scripted import Answer, ScriptedTransport, chat, complete
from tests.test_smart_routing import SIMPLE, ask, cheap_and_strong
from tests.test_supervision import scripted_factory
from tests.test_tool_loop import WORKBENCH, call, loop_settings, script


class SlowReservations:
    """Storage whose reservations take a second: long enough for a hung-up attempt's Settle to
    arrive while its Reserve is still being placed."""

    def __init__(self) -> None:
        self.held: dict[str, float] = {}
        self.settled: dict[str, float] = {}

    async def budgets(self) -> list[Budget]:
        return [Budget("daily", 1.0, True)]

    async def budget_spent(self, since: float, now: float, key_name: str | None = None) -> float:
        return sum(self.held.values())

    async def reserve(
        self,
        reservation_id: str,
        amount: float,
        windows: list[Window],
        now: float,
        key_name: str | None = None,
    ) -> Reservation:
        await trio.sleep(1.0)
        self.held[reservation_id] = amount
        return Reservation(True)

    async def settle(self, reservation_id: str, amount: float) -> None:
        self.held[reservation_id] = amount
        self.settled[reservation_id] = amount


async def test_a_settle_that_overtakes_its_reservation_still_releases_the_hold(
    autojump_clock: object,
) -> None:
    storage = SlowReservations()
    budget = BudgetActor(storage, refresh=60.0, timeout=5.0)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(budget.run)
        await trio.sleep(0.1)  # the budgets are read
        assert budget.enforcing
        for i in range(20):
            reply, _ = trio.open_memory_channel[Reservation](1)
            budget.mailbox.tell(Reserve(f"r{i}", 0.75, reply))
            budget.mailbox.tell(Settle(f"r{i}", 0.0))  # the client hung up during the reservation
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert storage.settled == {f"r{i}": 0.0 for i in range(20)}
    assert sum(storage.held.values()) == 0.0, "nothing was spent, so nothing may count"


async def test_a_held_answer_of_many_pieces_reaches_the_client_whole(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    """Suspected from the code and ruled out: the cascade holds a poor answer back and, when no
    stronger model answers, the router sends it after all without waiting, on a reply channel of
    64 places. The held answer is merged into a few events first (and only an answer without
    tool calls is ever poor), so an answer of 300 pieces arrives whole, with its end."""
    refusal = "I'm sorry, but I can't help with that. " * 30
    fake_openai.replies.push(Reply(text=refusal, pieces=300))
    fake_openai_backup.replies.push(Reply(status=503))
    async with (
        serve(cheap_and_strong(tmp_path, fake_openai, fake_openai_backup)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        kept = await ask(client, "auto", SIMPLE)
    assert kept.status_code == 200, kept.text
    assert "kept: no stronger model answered" in kept.headers["x-router-reason"]
    choice = kept.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == refusal


async def test_an_attempt_the_router_takes_no_report_of_tells_its_caller_at_once(
    autojump_clock: object,
) -> None:
    """A router escalated with its mailbox full reads no reports: the attempt's end used to wait
    for room for ever (its slot held, its caller waiting out its own timeout)."""
    router_mailbox: Mailbox[object] = Mailbox(1)
    router_mailbox.tell("a message nobody reads")
    reply, answers = trio.open_memory_channel[Event](REPLY_BUFFER)
    candidate = Candidate("up", "m")
    job = Job(
        ChatRequest("m", (ChatMessage("user", "hi"),)),
        candidate,
        reply,
        CancelToken(),
        DispatchState("req-1", Route((candidate,), "pinned")),
        router_mailbox,  # type: ignore[arg-type]
    )
    failure = AttemptFailure("up", "m", FailureKind.SERVER_ERROR, "503")
    started = trio.current_time()
    delivered = await report(job, AttemptEnded(job, AttemptResult.FAILURE, 5.0, False, failure))
    assert not delivered and trio.current_time() - started == REPORT_WAIT
    last_word = answers.receive_nowait()
    assert isinstance(last_word, Failed) and last_word.error.code == "router_down"


async def test_a_streamed_tool_loop_outlasts_the_keepalive_through_a_slow_tool_and_a_slow_step(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's keep-alive timer (15 s; 0.2 s here) used to cancel the loop's work between two
    keep-alives: a tool slower than it, or a next step slow to start, lost the step for good."""
    monkeypatch.setattr(streaming, "KEEPALIVE_AFTER", 0.2)
    fake_openai.answer_with = script(
        call("mcp__bench__sleep", {"seconds": 1.0}),
        lambda body: Reply(text="Slept well.", pieces=2, delay=1.0),  # slow to start
    )
    body = {"model": "agent:workbench", "stream": True, "messages": [{"role": "user", "content": "sleep"}]}
    async with (
        serve(loop_settings(tmp_path, fake_openai.base_url, WORKBENCH)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        with trio.fail_after(20):
            streamed = (await client.post("/v1/chat/completions", json=body)).text
    assert streamed.count(": keep-alive") >= 5, streamed
    assert "Slept well." in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in streamed.splitlines()
        if line.startswith("data: {") and json.loads(line[6:]).get("choices")
    )
    assert streamed.rstrip().endswith("data: [DONE]")
    assert len(fake_openai.chat_requests()) == 2


class CrashesAsItStops:
    """An actor whose clean-up fails while it is being stopped: its nursery raises a group that
    holds both the stop's `Cancelled` and the crash."""

    kind = "test"
    name = "crashes-as-it-stops"

    def __init__(self) -> None:
        self.cleaned_up = False

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async def fails_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                raise RuntimeError("clean-up failed") from None

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails_when_cancelled)
            task_status.started()
            await trio.sleep_forever()

    async def on_crash(self, error: BaseException) -> None:
        await trio.sleep(0.5)  # answering its in-flight work takes a moment, stop or not
        self.cleaned_up = True

    def on_give_up(self) -> None:
        return None

    def statistics(self) -> None:
        return None


async def test_a_crash_that_coincides_with_a_stop_is_handled_and_the_stop_goes_on(
    autojump_clock: object,
) -> None:
    supervisor = Supervisor("root", RestartPolicy())
    child = CrashesAsItStops()
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.start_child(child)
        await supervisor.stop(child.name)
        nursery.cancel_scope.cancel()
    record = supervisor.record(child.name)
    assert record.state is ChildState.STOPPED and record.restarts == 0
    assert record.last_crash is not None and "clean-up failed" in record.last_crash.reason
    assert child.cleaned_up, "its crash clean-up ran to the end, shielded from the stop"


async def test_dedup_shares_a_whole_answer_whatever_the_checkpoints(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Without the journal, an answer's end is not held back: the whole answer is in the channel
    at once and the leader collected it without a checkpoint, before the waiting followers ran."""
    fake_openai.replies.default = Reply(text="Shared.", delay=0.5, pieces=1)
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), journal="off")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "the same question"}]}
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        answers: list[httpx.Response] = []

        async def one() -> None:
            answers.append(await client.post("/v1/chat/completions", json=body))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == ["Shared."] * 5
    assert len(fake_openai.chat_requests()) == 1
    assert sum("x-deduplicated-from" in a.headers for a in answers) == 4


async def test_a_client_that_reads_slowly_does_not_hold_the_providers_slot(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """A slot stands for upstream work: with `slots = 1`, a client that stops reading its streamed
    answer used to hold the only slot while it kept the connection open, and the next request
    waited behind it. Now the upstream is read to its end (the rest held for the client, within a
    bound) and its slot freed."""
    fake_openai.answer_with = lambda body: (
        Reply(text="y" * 200_000, pieces=200) if body.get("stream") else Reply(text="Next.")
    )
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url, slots=1))
    async with serve(settings) as relay:
        host, port = relay.base_url.removeprefix("http://").split(":")
        slow = trio.socket.socket()
        slow.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        await slow.connect((host, int(port)))
        stream = trio.SocketStream(slow)
        body = json.dumps(
            {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "long"}]}
        )
        await stream.send_all(
            (
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n{body}"
            ).encode()
        )
        try:
            await stream.receive_some(1)  # the answer has begun; then nothing more is read
            async with httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client:
                queued = await client.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "next"}]},
                )
        finally:
            await stream.aclose()
    assert queued.status_code == 200 and queued.json()["choices"][0]["message"]["content"] == "Next."


def stored(response_id: str, previous_id: str | None = None) -> StoredResponse:
    return StoredResponse(response_id, previous_id, "", 0.0, json.dumps([{"turn": response_id}]), "{}")


@pytest.mark.parametrize(("depth", "refused"), [(MAX_CHAIN, False), (MAX_CHAIN + 2, True)])
async def test_a_conversation_longer_than_relaybox_continues_is_refused_not_cut(
    depth: int, refused: bool
) -> None:
    store = ResponseStore(None, None)  # type: ignore[arg-type]
    for turn in range(depth):
        await store.keep(stored(f"r{turn}", f"r{turn - 1}" if turn else None))
    if not refused:
        items = await store.earlier_items(f"r{depth - 1}", None)
        assert items[0] == {"turn": "r0"} and len(items) == depth
        return
    with pytest.raises(RelayError) as error:
        await store.earlier_items(f"r{depth - 1}", None)
    assert error.value.status == 400 and error.value.code == "conversation_too_long"


async def test_a_conversation_whose_first_turn_was_forgotten_is_refused_not_cut() -> None:
    """Kept in memory only (`[log] prompts = "none"`), the oldest responses make way for new ones."""
    store = ResponseStore(None, None)  # type: ignore[arg-type]
    await store.keep(stored("first"))
    for other in range(MEMORY_ENTRIES - 1):
        await store.keep(stored(f"other{other}"))
    await store.keep(stored("second", "first"))
    with pytest.raises(RelayError) as error:
        await store.earlier_items("second", None)
    assert error.value.status == 400 and error.value.code == "earlier_response_missing"
    assert "'first' is no longer stored" in error.value.message


async def test_a_full_provider_says_when_a_place_will_likely_free(
    autojump_clock: object, tmp_path: Path
) -> None:
    """`Retry-After` on a 429 `saturated` estimates from the attempts' length and the queue ahead,
    instead of a constant second."""
    transports = {"solo": ScriptedTransport(default=Answer("slow", delay=5.0))}
    solo = openai_provider("solo", "http://unused", models=("m",), slots=2, mailbox=2, idle_timeout=30)
    settings = settings_for(tmp_path, solo)
    async with running_system(settings, scripted_factory(transports)) as system:
        await complete(system, chat())  # one attempt of 5 s: the average to go by
        answers: list[list[Event]] = []

        async def one() -> None:
            answers.append(await complete(system, chat()))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
                await trio.sleep(0.1)
    refused = [events[-1] for events in answers if isinstance(events[-1], Failed)]
    assert len(refused) == 1 and refused[0].error.status == 429, answers
    # Two queued ahead of it, and itself, through two slots of 5 s each: 7.5 s, rounded up.
    assert refused[0].error.retry_after == 8


async def test_a_thousand_streams_to_one_http_provider_on_its_defaults_are_all_taken(
    autojump_clock: object, tmp_path: Path
) -> None:
    """On defaults an HTTP provider took 256 at once and queued 256: a thousand concurrent streams
    to the user's own upstream, which would have served them all, were half refused."""
    env = {
        "PATH": "",
        "HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-ant",
        "RELAYBOX_DATA_DIR": str(tmp_path),
    }
    settings = load_settings(env)
    [anthropic] = [provider for provider in settings.providers if provider.kind == "anthropic"]
    transports = {anthropic.name: ScriptedTransport(default=Answer("piece", pieces=20, delay=2.0))}
    async with running_system(settings, scripted_factory(transports)) as system:
        ends: list[Event] = []

        async def one() -> None:
            ends.append((await complete(system, chat(anthropic.default_model, stream=True)))[-1])

        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(one)
    assert len(ends) == 1000 and all(isinstance(end, Finished) for end in ends), {
        type(end).__name__ for end in ends
    }


SEQUENTIAL = McpServerSpec(
    "sequential", command=sys.executable, args=(str(Path(__file__).parent / "mcp_servers/sequential.py"),)
)


async def started_server(
    nursery: trio.Nursery, tmp_path: Path, tool_timeout: float, spec: McpServerSpec = WORKBENCH
) -> McpServerActor:
    server = McpServerActor(spec, tool_timeout=tool_timeout, log_dir=str(tmp_path / "mcp"))
    supervisor = Supervisor("root", RestartPolicy(backoff_initial=0.01))
    await nursery.start(supervisor.run)
    await supervisor.start_child(server)
    with trio.fail_after(30):
        await server.wait_ready()
    return server


async def test_a_busy_mcp_server_is_not_taken_for_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keep-alive ping went unanswered while a slow tool held the server (well inside
    `tool_timeout`): the server was restarted, and the tool came back "stopped before answering"."""
    monkeypatch.setattr(mcp_server, "PING_EVERY", 0.2)
    monkeypatch.setattr(mcp_server, "PING_TIMEOUT", 0.5)
    async with trio.open_nursery() as nursery:
        server = await started_server(nursery, tmp_path, tool_timeout=30, spec=SEQUENTIAL)
        result = await server.call("work", {"seconds": 2.5})
        statistics = server.statistics()
        nursery.cancel_scope.cancel()
    assert result.ok and result.text == "worked", result
    assert statistics.last_error is None and statistics.ready


async def test_a_call_queued_behind_hung_calls_is_told_so_in_its_own_time_and_never_runs_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind hung calls, a call's own timeout used to start only once it had its turn: its caller
    gave up first, told the server "did not answer (it is restarting or down)", and the call ran
    later all the same. Now a call is answered by its own deadline, its wait included."""
    monkeypatch.setattr(mcp_server, "CONCURRENT_CALLS", 1)
    async with trio.open_nursery() as nursery:
        server = await started_server(nursery, tmp_path, tool_timeout=1.5, spec=SEQUENTIAL)
        results: dict[str, ToolResult] = {}
        took: dict[str, float] = {}

        async def call(name: str, seconds: float) -> None:
            started = trio.current_time()
            results[name] = await server.call("work", {"seconds": seconds})
            took[name] = trio.current_time() - started

        async with trio.open_nursery() as calls:
            for hung in range(4):  # the server is stuck on the first: the others wait their turn
                calls.start_soon(call, f"hung{hung}", 10.0)
                await trio.sleep(0.05)
            calls.start_soon(call, "queued", 0.1)
        calls_when_answered = server.statistics().calls
        await trio.sleep(1.0)
        calls_later = server.statistics().calls
        nursery.cancel_scope.cancel()
    queued = results["queued"]
    assert not queued.ok and "restarting or down" not in queued.text, queued
    assert took["queued"] < 2.5, f"told within its own timeout of 1.5 s: {took}"
    assert calls_later == calls_when_answered, "no call started after its caller had its answer"


async def test_a_tool_loop_keeps_its_time_budget_inside_a_step_too(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """The budget was checked only between steps: a slow tool ran past it by as long as it took."""
    fake_openai.answer_with = script(
        call("mcp__bench__sleep", {"seconds": 4.0}), lambda body: Reply(text="Too late.")
    )
    body = {"model": "agent:workbench", "messages": [{"role": "user", "content": "sleep long"}]}
    settings = loop_settings(tmp_path, fake_openai.base_url, WORKBENCH, time_budget=1.0, tool_timeout=30.0)
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        started = trio.current_time()
        answer = await client.post("/v1/chat/completions", json=body)
        took = trio.current_time() - started
    assert answer.status_code == 200, answer.text
    assert "the time budget (1 s)" in answer.json()["choices"][0]["message"]["content"]
    assert took < 3.0, f"ended at its budget, not when the 4 s tool did: {took:.1f} s"


async def test_a_slow_readers_stream_still_gets_its_end(autojump_clock: object, tmp_path: Path) -> None:
    """The answer's end is sent after its record is safe; with the client's channel still full of
    the answer then, it was held for the client and never sent: the stream never ended."""
    transports = {"solo": ScriptedTransport(default=Answer("piece", pieces=100))}
    settings = settings_for(tmp_path, openai_provider("solo", "http://unused", models=("m",)))
    async with running_system(settings, scripted_factory(transports)) as system:
        send, receive = trio.open_memory_channel[Event](4)
        system.router.mailbox.tell(Dispatch("chatcmpl-slow-reader", chat(stream=True), send, CancelToken()))
        events: list[Event] = []
        with trio.fail_after(60):
            async with receive:
                async for event in receive:
                    events.append(event)
                    if isinstance(event, Finished | Failed):
                        break
                    await trio.sleep(0.05)  # a client slower than the upstream
    assert isinstance(events[-1], Finished) and len(events) >= 100
