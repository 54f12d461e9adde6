"""How a reply channel's events become SSE writes: waiting events leave together, the rest as they come."""

from __future__ import annotations

import json

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.protocol.events import Answering, ContentDelta, Event, Finished, Usage
from relaybox.protocol.wire.sse import KEEPALIVE
from relaybox.web.answer import Begun
from relaybox.web.drain import Drain
from relaybox.web.streaming import openai_stream

ANSWERING = Answering(provider="up", model="m", reason="test", attempt=1, fallback_used=False, upstream_ms=0)


def begun_with(receive: trio.MemoryReceiveChannel[Event]) -> Begun:
    return Begun(ANSWERING, receive, CancelToken())


def contents(writes: list[bytes]) -> list[str]:
    frames = [line.removeprefix(b"data: ") for write in writes for line in write.split(b"\n\n") if line]
    return [
        choice["delta"].get("content", "")
        for frame in frames
        if frame != b"[DONE]"
        for choice in json.loads(frame)["choices"]
    ]


async def test_events_already_waiting_leave_in_one_write() -> None:
    send, receive = trio.open_memory_channel[Event](16)
    for text in ("a", "b", "c"):
        send.send_nowait(ContentDelta(text))
    send.send_nowait(Usage(prompt_tokens=1, completion_tokens=3))
    send.send_nowait(Finished("stop", 1.0))
    writes = [data async for data in openai_stream(begun_with(receive), "id", 0, include_usage=True)]
    assert len(writes) == 1
    assert contents(writes) == ["", "a", "b", "c", ""]
    assert writes[0].endswith(b"data: [DONE]\n\n")
    assert b'"usage":{"prompt_tokens":1,"completion_tokens":3' in writes[0]


async def test_events_that_come_one_by_one_leave_one_by_one() -> None:
    send, receive = trio.open_memory_channel[Event](16)
    writes: list[bytes] = []

    async def produce() -> None:
        for text in ("a", "b"):
            await trio.sleep(0.01)
            await send.send(ContentDelta(text))
        await trio.sleep(0.01)
        await send.send(Finished("stop", 1.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for data in openai_stream(begun_with(receive), "id", 0, include_usage=False):
            writes.append(data)
    assert [contents([write]) for write in writes] == [[""], ["a"], ["b"], [""]]


async def test_a_channel_that_ends_without_an_answer_is_a_broken_stream() -> None:
    send, receive = trio.open_memory_channel[Event](16)
    send.send_nowait(ContentDelta("a"))
    send.close()
    writes = [data async for data in openai_stream(begun_with(receive), "id", 0, include_usage=False)]
    frames = b"".join(writes).split(b"\n\n")
    assert json.loads(frames[-2].removeprefix(b"data: "))["error"]["code"] == "broken_stream"


async def test_a_quiet_stream_gets_keep_alives_and_the_grace_periods_end_stops_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """One cancel scope bounds each wait: at the keep-alive (15 s) while the server serves, at the
    grace period's end once it drains, whichever comes first."""
    send, receive = trio.open_memory_channel[Event](16)
    drain = Drain()
    begun = attrs.evolve(begun_with(receive), drain=drain)
    writes: list[tuple[float, bytes]] = []
    started = trio.current_time()

    async def quiet_then_stop() -> None:
        await send.send(ContentDelta("a"))
        await trio.sleep(40)  # two keep-alives
        drain.begin(grace=4.0)  # answers still going end 3 s from now (a second before the grace's end)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(quiet_then_stop)
        async for data in openai_stream(begun, "id", 0, include_usage=False):
            writes.append((trio.current_time() - started, data))
    keep_alives = [at for at, data in writes if data == KEEPALIVE]
    assert keep_alives == [15.0, 30.0]
    ended_at, last = writes[-1]
    assert ended_at == 43.0, "the wait begun at 30 s ended at the drain's deadline, before its keep-alive"
    assert json.loads(last.removeprefix(b"data: "))["error"]["code"] == "shutting_down"
