"""A transport that does what the test says, for actor-level tests under a mock clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.messages import Dispatch
from relaybox.actors.transports.base import Emit
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.errors import ProviderFailure
from relaybox.protocol.events import ContentDelta, Event, Failed, Finished, Usage
from relaybox.web.system import System


@attrs.define
class Answer:
    text: str = "scripted answer"
    pieces: int = 1
    delay: float = 0.0


@attrs.define
class Crash:
    """A bug in the transport: an exception that is not a ProviderFailure."""


Step = Answer | Crash | ProviderFailure


@attrs.frozen
class ScriptedStatistics:
    calls: int
    kind: str = "scripted"


class ScriptedTransport:
    def __init__(self, *steps: Step, default: Step | None = None) -> None:
        self.steps: list[Step] = list(steps)
        self.default = default or Answer()
        self.calls = 0

    def statistics(self) -> ScriptedStatistics:
        return ScriptedStatistics(self.calls)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def run(self, request: ChatRequest, model: str, emit: Emit) -> str:
        self.calls += 1
        step = self.steps.pop(0) if self.steps else self.default
        if isinstance(step, Crash):
            raise RuntimeError("injected crash")
        if isinstance(step, ProviderFailure):
            raise step
        await trio.sleep(step.delay)
        for i in range(step.pieces):
            await emit(ContentDelta(step.text if step.pieces == 1 else f"{step.text}{i}"))
        await emit(Usage(3, step.pieces))
        return "stop"


def chat(model: str = "m", *, stream: bool = False) -> ChatRequest:
    return ChatRequest(model=model, messages=(ChatMessage("user", "hi"),), stream=stream)


async def complete(system: System, request: ChatRequest) -> list[Event]:
    """Send one request through the router and collect its events up to the terminal one."""
    send, receive = trio.open_memory_channel[Event](64)
    system.router.mailbox.tell(Dispatch(f"chatcmpl-{uuid.uuid4().hex}", request, send, CancelToken()))
    events: list[Event] = []
    async with receive:
        async for event in receive:
            events.append(event)
            if isinstance(event, Finished | Failed):
                break
    return events
