"""Supervision: crashes restart the actor, in-flight work fails cleanly, past the limit it stays down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from relaybox.actors.supervisor import RestartPolicy, Supervisor
from relaybox.protocol.events import Answering, Failed, Finished

from tests.harness import eventually, openai_provider, serve, settings_for
from tests.scripted import Answer, Crash, ScriptedTransport, chat, complete

HELLO = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def scripted_factory(transports: dict[str, ScriptedTransport]):
    return lambda config, settings: transports[config.name]


def actor(tree: dict, name: str) -> dict:
    return next(child for child in tree["supervisor"]["children"] if child["name"] == name)


async def test_a_crash_in_a_job_fails_that_attempt_only_and_is_recorded(tmp_path: Path) -> None:
    transports = {"solo": ScriptedTransport(Crash(), default=Answer("after the crash"))}
    settings = settings_for(tmp_path, openai_provider("solo", "http://unused", models=("m",)))
    async with (
        serve(settings, scripted_factory(transports)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        crashed = await client.post("/v1/chat/completions", json=HELLO)
        after = await client.post("/v1/chat/completions", json=HELLO)
        tree = (await client.get("/actors")).json()
        await eventually(lambda: relay.system.recorder.statistics().written >= 2, within=10)
        rows = (await client.get("/api/requests")).json()["data"]
    assert crashed.status_code == 503
    assert "crash" in crashed.json()["error"]["message"]
    solo = actor(tree, "solo")
    assert solo["state"] == "running" and solo["restarts"] == 0, "the actor itself did not crash"
    assert after.status_code == 200
    assert after.json()["choices"][0]["message"]["content"] == "after the crash"
    assert sorted(r["status"] for r in rows) == ["crash", "success"], "the crashed attempt is in the log"
    assert "RuntimeError: injected crash" in next(r for r in rows if r["status"] == "crash")["error_message"]


async def test_actors_shows_each_childs_facts_and_its_statistics_side_by_side(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, openai_provider("solo", "http://unused", models=("m",)))
    async with (
        serve(settings, scripted_factory({"solo": ScriptedTransport()})) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        await client.post("/v1/chat/completions", json=HELLO)
        tree = (await client.get("/actors")).json()
    solo, router = actor(tree, "solo"), actor(tree, "router")
    assert set(solo) == {
        *("name", "kind", "state", "restarts", "last_crash", "escalations", "down_for_s"),  # the supervisor's
        *("health", "accepting", "mailbox", "in_flight", "concurrency_limit", "idle_timeout_s"),
        *("breaker", "completed", "failed", "last_failure", "transport", "totals", "background"),
    }
    assert solo["background"] == {"admitted": 0, "refused": 0, "yielded": 0, "running": 0}
    assert solo["breaker"]["state"] == "closed" and solo["breaker"]["open_for_s"] is None
    assert (
        set(solo["mailbox"]) == {"depth", "capacity", "peak", "purged"} and solo["mailbox"]["capacity"] == 8
    )
    assert solo["transport"] == {"calls": 1, "kind": "scripted"}
    assert solo["totals"]["m"]["attempts"] == {"success": 1}
    assert router["outcomes"]["solo/m"]["successes"] == 1 and router["disabled"] == []
    assert sum(router["overhead"]["counts"]) == 1


async def test_crashed_job_falls_back_to_the_next_candidate(tmp_path: Path) -> None:
    transports = {
        "first": ScriptedTransport(Crash()),
        "second": ScriptedTransport(default=Answer("from second")),
    }
    settings = settings_for(
        tmp_path,
        openai_provider("first", "http://unused", models=("m",)),
        openai_provider("second", "http://unused", models=("m",)),
        default_provider="first",
    )
    async with (
        serve(settings, scripted_factory(transports)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/chat/completions", json=HELLO)
    assert response.status_code == 200
    assert response.headers["x-provider"] == "second"
    assert "failed (crash)" in response.headers["x-router-reason"]


class CrashingSession(ScriptedTransport):
    """A provider whose upstream session cannot be opened `times` times: the actor itself crashes."""

    def __init__(self, times: int) -> None:
        super().__init__(default=Answer("served again"))
        self.times = times

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        if self.times > 0:
            self.times -= 1
            raise RuntimeError("cannot open the session")
        yield


async def test_past_the_restart_intensity_a_provider_is_down_then_started_again(tmp_path: Path) -> None:
    # max_restarts=3 within 30 s in the test policy: the fourth crash escalates, for 1 s here.
    transports = {"solo": CrashingSession(times=4)}
    settings = settings_for(
        tmp_path,
        openai_provider("solo", "http://unused", models=("m",)),
        restart=RestartPolicy(
            max_restarts=3, period=30.0, backoff_initial=0.01, backoff_max=0.1, escalation_initial=1.0
        ),
    )
    async with (
        serve(settings, scripted_factory(transports)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        await eventually(lambda: relay.system.supervisor.state_of("solo").value == "failed", within=5)
        tree = (await client.get("/actors")).json()
        health = await client.get("/health")
        refused = await client.post("/v1/chat/completions", json=HELLO)
        await eventually(lambda: relay.system.supervisor.state_of("solo").value == "running", within=5)
        served = await client.post("/v1/chat/completions", json=HELLO)
        metrics = (await client.get("/metrics")).text
    solo = actor(tree, "solo")
    assert solo["state"] == "failed" and solo["health"] == "down" and solo["escalations"] == 1
    assert 0 < solo["down_for_s"] <= 1.0
    assert "cannot open the session" in solo["last_crash"]["reason"]
    assert health.status_code == 503 and health.json()["providers"]["solo"]["health"] == "down"
    assert refused.status_code == 503 and "provider is down" in refused.json()["error"]["message"]
    assert served.status_code == 200, "not down for the life of the process"
    assert 'relaybox_actor_up{actor="solo"} 1' in metrics


async def test_crash_mid_stream_ends_the_client_stream_with_an_error(tmp_path: Path) -> None:
    class CrashAfterFirstDelta(ScriptedTransport):
        async def run(self, request, model, emit):  # type: ignore[no-untyped-def]
            from relaybox.protocol.events import ContentDelta

            await emit(ContentDelta("partial"))
            raise RuntimeError("crash mid-stream")

    transports = {"solo": CrashAfterFirstDelta()}
    settings = settings_for(tmp_path, openai_provider("solo", "http://unused", models=("m",)))
    async with (
        serve(settings, scripted_factory(transports)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        raw = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
    frames = [line.removeprefix("data: ") for line in raw.text.splitlines() if line.startswith("data: ")]
    assert '"content":"partial"' in frames[1]
    assert '"error"' in frames[-1] and "crash" in frames[-1]


async def test_restart_backoff_grows_and_intensity_window_slides(autojump_clock: trio.abc.Clock) -> None:
    class Flaky:
        name, kind = "flaky", "test"

        def __init__(self) -> None:
            self.starts: list[float] = []

        async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
            self.starts.append(trio.current_time())
            task_status.started()
            raise RuntimeError("always")

        async def on_crash(self, error: BaseException) -> None:
            pass

        def on_give_up(self) -> None:
            self.gave_up_at = trio.current_time()

        def statistics(self) -> dict:
            return {}

    flaky = Flaky()
    policy = RestartPolicy(
        max_restarts=3, period=10.0, backoff_initial=1.0, backoff_max=3.0, escalation_initial=50.0
    )
    async with trio.open_nursery() as nursery:
        supervisor = await nursery.start(Supervisor("root", policy).run)
        await supervisor.start_child(flaky)
        await trio.sleep(100)
        down = supervisor.record("flaky").state.value
        nursery.cancel_scope.cancel()
    start = flaky.starts[0]
    # Backoff 1, 2, 3 (capped) seconds between starts; the fourth crash within 10 s escalates:
    # down for 50 s, then started afresh (and, crashing again at once, escalated for 100 s).
    assert [round(t - start, 6) for t in flaky.starts][:5] == [0, 1, 3, 6, 56]
    assert flaky.gave_up_at == start + 56 + 6, "the second escalation"
    assert down == "failed"
    assert supervisor.record("flaky").escalations == 2


class ExplodingCatalog:
    """A router bug: resolving any name raises."""

    def resolve(self, name: str) -> None:
        raise KeyError("router bug")


async def test_router_crash_answers_the_request_it_held(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    from relaybox.web.system import running_system

    transports = {"solo": ScriptedTransport(default=Answer("fine"))}
    settings = settings_for(tmp_path, openai_provider("solo", "http://unused", models=("m",)))
    async with running_system(settings, scripted_factory(transports)) as system:
        healthy_catalog = system.router.catalog
        system.router.catalog = ExplodingCatalog()  # type: ignore[assignment]
        events = await complete(system, chat())
        assert isinstance(events[-1], Failed) and events[-1].error.code == "router_crashed"
        await trio.sleep(1)
        system.router.catalog = healthy_catalog
        events = await complete(system, chat())
        assert isinstance(events[0], Answering) and isinstance(events[-1], Finished)
        assert system.supervisor.record("router").restarts == 1


async def test_a_client_that_stops_reading_is_not_blamed_on_the_upstream(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    import uuid

    from relaybox.actors.cancellation import CancelToken
    from relaybox.actors.forwarder import CLIENT_STALL_LIMIT
    from relaybox.actors.messages import Dispatch
    from relaybox.web.system import running_system

    transports = {"solo": ScriptedTransport(default=Answer("x", pieces=50))}
    settings = settings_for(
        tmp_path, openai_provider("solo", "http://unused", models=("m",), idle_timeout=10)
    )
    async with running_system(settings, scripted_factory(transports)) as system:
        send, receive = trio.open_memory_channel(1)
        started = trio.current_time()
        system.router.mailbox.tell(
            Dispatch(f"chatcmpl-{uuid.uuid4().hex}", chat(stream=True), send, CancelToken())
        )
        assert isinstance(await receive.receive(), Answering)  # then never read again
        provider = system.providers["solo"]
        await eventually(lambda: "solo/m" in system.router.statistics().outcomes, within=400, poll=1)
        waited = trio.current_time() - started
        counts = system.router.statistics().outcomes["solo/m"]
        assert counts.cancelled == 1 and not counts.failures, "a stalled client is not an upstream failure"
        assert CLIENT_STALL_LIMIT <= waited < CLIENT_STALL_LIMIT + 5
        assert provider.breaker.consecutive_failures == 0
