"""Deduplication: identical requests in flight share one upstream call (seed 001)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.lowlevel
from relaybox.actors.cancellation import CancelToken
from relaybox.protocol.events import Answering, ContentDelta, Event, Finished
from relaybox.web.answer import Begun
from relaybox.web.dedup import InFlightAnswers

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, settings_for

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "summarise the design doc"}]}
TEXT = "Hello from the fake upstream."


def streamed_text(response: httpx.Response) -> str:
    parts = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            parts += [c["delta"].get("content") or "" for c in chunk["choices"]]
    return "".join(parts)


async def test_identical_requests_in_flight_share_one_upstream_call(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.default = Reply(delay=0.5, pieces=5, chunk_delay=0.05)
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        responses: list[httpx.Response] = []

        async def one(body: dict[str, Any]) -> None:
            responses.append(await client.post("/v1/chat/completions", json=body))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one, BODY)
                await trio.sleep(0.05)
            nursery.start_soon(one, {**BODY, "stream": True})  # another body: its own call
        after = await client.post("/v1/chat/completions", json=BODY)  # the first has finished
        await eventually(lambda: relay.system.recorder.written >= 5, within=10)
        rows = (await client.get("/api/requests", params={"limit": 10})).json()["data"]
    plain = [r for r in responses if r.headers["content-type"].startswith("application/json")]
    streamed = next(r for r in responses if r not in plain)
    assert [r.json()["choices"][0]["message"]["content"] for r in plain] == [TEXT] * 3
    assert streamed_text(streamed) == TEXT
    leaders = [r for r in plain if "x-deduplicated-from" not in r.headers]
    assert len(leaders) == 1
    leader_id = leaders[0].headers["x-task-id"]
    followers = [r for r in plain if r is not leaders[0]]
    assert {r.headers["x-deduplicated-from"] for r in followers} == {leader_id}
    assert len({r.headers["x-task-id"] for r in plain}) == 3
    assert "x-deduplicated-from" not in after.headers
    assert len(fake_openai.chat_requests()) == 3, "one for the three identical, one streamed, one after"
    statuses = sorted(row["status"] for row in rows)
    assert statuses == ["deduplicated", "deduplicated", "success", "success", "success"]


async def test_a_late_follower_gets_the_stream_from_its_start_and_outlives_the_leader(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.default = Reply(pieces=6, chunk_delay=0.15)
    body = {**BODY, "stream": True}
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        follower: list[httpx.Response] = []
        streaming = trio.Event()  # the leader's answer is under way: a request now joins it late
        joined = trio.Event()  # the follower's answer has begun: the leader may hang up

        async def follow() -> None:
            await streaming.wait()
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                joined.set()
                await response.aread()
                follower.append(response)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            async with client.stream("POST", "/v1/chat/completions", json=body) as leader:
                seen = 0
                async for line in leader.aiter_lines():
                    seen += line.startswith("data: {") and '"content"' in line
                    if seen == 2:
                        streaming.set()
                    if seen >= 4 and joined.is_set():
                        break  # after the follower joined, the leader's client hangs up
    assert follower[0].status_code == 200 and streamed_text(follower[0]) == TEXT
    assert "x-deduplicated-from" in follower[0].headers
    assert len(fake_openai.chat_requests()) == 1


async def test_past_the_window_or_switched_off_requests_go_alone(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.default = Reply(delay=0.6)
    cases = ((0.2, 0.4, "on", 2), (0.0, 0.05, "on", 2), (5.0, 0.05, "off", 2), (5.0, 0.05, "on", 1))
    for window, second_after, dedup, calls in cases:
        fake_openai.requests.clear()
        settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), dedup_seconds=window)
        headers = {"x-relaybox-dedup": dedup}
        async with (
            serve(settings) as relay,
            httpx.AsyncClient(base_url=relay.base_url, timeout=10, headers=headers) as client,
        ):

            async def later() -> None:
                await trio.sleep(second_after)  # noqa: B023 - used within this iteration
                await client.post("/v1/chat/completions", json=BODY)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(later)
                await client.post("/v1/chat/completions", json=BODY)
        assert len(fake_openai.chat_requests()) == calls, (window, second_after, dedup)


def answered(text: str) -> Begun:
    send, receive = trio.open_memory_channel[Event](10)
    send.send_nowait(ContentDelta(text))
    send.send_nowait(Finished("stop", 1.0))
    return Begun(Answering("p", "m", "reason", 1, False, 0.0), receive, CancelToken())


async def follower_of_a_released_answer(delay: int) -> tuple[str, int, InFlightAnswers]:
    in_flight = InFlightAnswers(5.0)
    own_calls = 0
    leader = in_flight.lead(b"key", "r1").started(answered("leader"))
    received: list[Event] = []

    async def follow() -> None:
        # As the request pipeline does: join the answer in flight, or lead one of its own.
        nonlocal own_calls
        follower = await in_flight.join(b"key")
        if follower is None:
            own_calls += 1
            follower = in_flight.lead(b"key", "r2").started(answered("own"))
        received.append(await follower.receive.receive())
        follower.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        for _ in range(delay):
            await trio.lowlevel.checkpoint()
        leader.close()
    assert isinstance(received[0], ContentDelta)
    return received[0].text, own_calls, in_flight


async def test_a_follower_never_attaches_to_an_answer_released_while_it_joined() -> None:
    # The leader's client leaves just as its answer begins, while a follower is joining: the
    # follower must get an answer of its own, not a reader of the released one.
    for delay in [0, 1, 2, 3] * 25:  # trio's scheduling order varies: try the race many times
        text, own_calls, in_flight = await follower_of_a_released_answer(delay)
        assert text == ("own" if own_calls else "leader"), (delay, own_calls)
        assert await in_flight.join(b"key") is None, "every answer released: none left to join"
