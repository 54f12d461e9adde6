"""The server-side tool loop: a request whose route has `tools` (or that asks for `agent:ROUTE`) is
answered by several model calls, with relaybox running the MCP tools the model calls in between.

The loop is an `EventSource` over the steps: the client reads one answer, streamed as it comes.
Each step's text goes out as it arrives; its tool calls are held until the step ends, and if any
is an MCP tool (and none is the client's own) relaybox runs them (at once, each bounded by
`[mcp] tool_timeout`, each a row in the log), shows each as an SSE comment, and asks the model
again with the results. The loop ends when the model answers without an MCP call (its calls to the
client's tools go to the client as usual), or at `max_steps` or the time budget, with a clear last
sentence. Every step is a model call of its own through the request pipeline (routing, fallback,
budgets, the key's limits, the log), linked to the request by its group id; the usage the client
sees is the sum.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Protocol

import attrs
import trio
from relaybox.actors.mailbox import MailboxFull
from relaybox.actors.mcp_server import McpServerActor
from relaybox.protocol.chat import ChatRequest, ToolCall
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import ContentDelta, Event, Failed, Finished, ToolCallDelta, ToolRan, Usage
from relaybox.protocol.routing.routes import ROUTE_PREFIX, NamedRoute, requested_route
from relaybox.protocol.tool_loop import (
    AGENT_PREFIX,
    McpSettings,
    ToolOutcome,
    after_tools,
    arguments_of,
    split_name,
    stopped_early,
    with_tools,
)
from relaybox.protocol.wire.openai import merge_tool_calls
from relaybox.web.answer import REPLY_BUFFER, Begun, EventSource, next_event
from relaybox.web.drain import shutting_down
from relaybox.web.model_call import ModelCall
from relaybox.web.system import System


class Steps(Protocol):
    """What the loop needs of the request pipeline: one model call answered, one tool call logged."""

    system: System

    async def answer_step(self, call: ModelCall) -> Begun: ...

    async def record_tool_call(
        self, call: ModelCall, server: str, tool: str, outcome: ToolOutcome
    ) -> None: ...


# How long the first request waits for a server still starting (relaybox's own start, a restart).
READY_WAIT = 10.0


def tool_loop_servers(
    call: ModelCall, mcp: McpSettings, servers: dict[str, McpServerActor], routes: Mapping[str, NamedRoute]
) -> tuple[ModelCall, list[McpServerActor]] | None:
    """The call as the loop makes it and the servers whose tools it offers; None when the request
    names no route with tools. A 400/403/404 when it asks for a loop it cannot have."""
    request = call.request
    if not isinstance(request, ChatRequest):
        return None
    agent = request.model.startswith(AGENT_PREFIX)
    model = ROUTE_PREFIX + request.model[len(AGENT_PREFIX) :] if agent else request.model
    route = requested_route(model, call.route_header, routes)
    if route is None or not route.tools:
        if agent:
            raise RelayError(
                400, f"the route '{model[len(ROUTE_PREFIX) :]}' has no tools", code="no_tools", param="model"
            )
        return None
    key = call.key
    allowed = [
        servers[name]
        for name in route.tools
        if name in servers
        and (spec := mcp.server(name)) is not None
        and spec.allows(key and key.name, bool(key and key.admin))
    ]
    if not allowed:
        who = "this client" if key is None else f"the key '{key.name}'"
        raise RelayError(
            403,
            f"{who} may not use the MCP servers of route '{route.name}'",
            "permission_error",
            code="mcp_forbidden",
        )
    loop_call = attrs.evolve(call, request=attrs.evolve(request, model=model), cache=None, dedup_key=None)
    return loop_call, allowed


class ToolLoop:
    """One request's loop. Its steps run in a task of their own (the `tool-loops` actor's), which
    hands their events to the handler over a memory channel: the handler may stop waiting at any
    moment (to send a keep-alive) without cancelling a tool or the next step's start."""

    def __init__(
        self, pipeline: Steps, call: ModelCall, servers: list[McpServerActor], mcp: McpSettings
    ) -> None:
        self.pipeline = pipeline
        self.call = call
        self.servers = {server.spec.name: server for server in servers}
        self.mcp = mcp
        self._client_tools = call.request.tools
        self.steps = 0
        self._started = trio.current_time()
        self._source: EventSource | None = None
        self._begun: Begun | None = None
        self._text: list[str] = []  # this step's text
        self._calls: list[ToolCallDelta] = []  # this step's tool calls, held until it ends
        self._usage: Usage | None = None  # the steps' usage, summed
        self._send, self._receive = trio.open_memory_channel[Event](REPLY_BUFFER)
        # The loop's task: cancelled when its reader goes, and at the loop's time budget.
        self._scope = trio.CancelScope(deadline=self._started + mcp.time_budget)

    async def begin(self) -> Begun:
        """The first step's start, here, so that a request refused before any answer is the
        HTTP error it should be; the rest in the runner's task."""
        runner = self.pipeline.system.tool_loops
        if runner is None:
            raise RelayError(503, "the tool loops' runner is not running", "service_unavailable")
        for server in self.servers.values():
            with trio.move_on_after(READY_WAIT):
                await server.wait_ready()
        begun = await self._step(self._chat())
        try:
            runner.mailbox.tell(self)
        except MailboxFull:
            begun.close()
            raise RelayError(
                503, "too many tool loops at once; retry shortly", "service_unavailable", retry_after=1
            ) from None
        first = attrs.evolve(begun)
        first.receive = _LoopEvents(self._receive, self._scope)
        return first

    async def run(self) -> None:
        """Hand the steps' events to the reader until the answer ends, the reader goes, or the
        time budget runs out (which ends the answer with a sentence that says so)."""
        with self._send:
            try:
                with self._scope:
                    while True:
                        assert self._source is not None
                        for event in await self._take(await next_event(self._source)):
                            await self._send.send(event)
                            if isinstance(event, Finished | Failed):
                                return
                if self._scope.cancelled_caught and trio.current_time() >= self._scope.deadline:
                    await self._stopped_by_the_time_budget()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the reader has gone
            finally:
                if self._begun is not None:
                    self._begun.close()

    def abandon(self) -> None:
        with (
            self._send,
            contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            self._send.send_nowait(Failed(shutting_down()))
        if self._begun is not None:
            self._begun.close()

    async def _stopped_by_the_time_budget(self) -> None:
        """A step cut short by the budget: what it said so far stays, and a last sentence says why."""
        why = f"the time budget ({self.mcp.time_budget:g} s)"
        for event in (
            ContentDelta(stopped_early(why, self.steps)),
            *self._usage_events(),
            Finished("stop", (trio.current_time() - self._started) * 1000),
        ):
            await self._send.send(event)

    # --- the loop -----------------------------------------------------------------------------

    async def _take(self, event: Event) -> list[Event]:
        if isinstance(event, ContentDelta):
            self._text.append(event.text)
            return [event]
        if isinstance(event, ToolCallDelta):
            self._calls.append(event)
            return []
        if isinstance(event, Usage):
            self._usage = _summed(self._usage, event)
            return []
        if isinstance(event, Finished):
            return await self._step_ended(event)
        return [event]  # Failed, and anything else, as it is

    async def _step_ended(self, finished: Finished) -> list[Event]:
        calls = [
            ToolCall(c["id"] or f"call_{i}", c["function"]["name"], c["function"]["arguments"])
            for i, c in enumerate(merge_tool_calls(self._calls))
        ]
        ours = [call for call in calls if self._runs(call)]
        if not ours or len(ours) < len(calls):
            # The model answered, or called the client's own tools: the client takes it from here.
            theirs = [ToolCallDelta(i, call.id, call.name, call.arguments) for i, call in enumerate(calls)]
            return [*theirs, *self._usage_events(), finished]
        elapsed = trio.current_time() - self._started
        if self.steps >= self.mcp.max_steps or elapsed >= self.mcp.time_budget:
            why = (
                f"max_steps ({self.mcp.max_steps})"
                if self.steps >= self.mcp.max_steps
                else f"the time budget ({self.mcp.time_budget:g} s)"
            )
            return [
                ContentDelta(stopped_early(why, self.steps)),
                *self._usage_events(),
                Finished("stop", finished.upstream_ms),
            ]
        outcomes = await self._run(ours)
        request = after_tools(self._chat(), "".join(self._text), outcomes)
        ran: list[Event] = [ToolRan(o.call.name, o.ok, o.seconds) for o in outcomes]
        try:
            if self.call.key is not None and self.pipeline.system.keys is not None:
                await self.pipeline.system.keys.within_limit(self.call.key, "/v1/tool-loop", time.time())
            await self._step(request)
        except RelayError as error:
            return [*ran, Failed(error)]
        return ran

    def _chat(self) -> ChatRequest:
        request = self.call.request
        assert isinstance(request, ChatRequest)  # only chat requests loop (`tool_loop_servers`)
        return request

    def _runs(self, call: ToolCall) -> bool:
        named = split_name(call.name)
        return named is not None and named[0] in self.servers

    async def _step(self, request: ChatRequest) -> Begun:
        """One model call, offered the client's tools and the servers' as they are now (a server
        may have changed its tools since the last step). The step before is released once this
        one has begun: until then it is what a failure leaves to close."""
        tools = [tool for server in self.servers.values() for tool in server.tools]
        request = with_tools(attrs.evolve(request, tools=self._client_tools), tools)
        self.call = attrs.evolve(self.call, request=request)
        self.steps += 1
        self._text, self._calls = [], []
        begun = await self.pipeline.answer_step(attrs.evolve(self.call, request=request))
        if self._begun is not None:
            self._begun.close()
        self._begun, self._source = begun, begun.receive
        # The next step's attempts are numbered after this one's: in the log the loop is one request.
        self.call = attrs.evolve(self.call, attempts_before=begun.answering.attempt)
        return begun

    async def _run(self, calls: list[ToolCall]) -> list[ToolOutcome]:
        outcomes: list[ToolOutcome | None] = [None] * len(calls)

        async def run_one(i: int, call: ToolCall) -> None:
            named = split_name(call.name)
            assert named is not None
            server, tool = self.servers[named[0]], named[1]
            arguments = arguments_of(call)
            if arguments is None:
                outcome = ToolOutcome(call, "the arguments must be a JSON object", False, 0.0)
            else:
                result = await server.call(tool, arguments)
                outcome = ToolOutcome(call, result.text, result.ok, result.seconds)
            outcomes[i] = outcome
            await self.pipeline.record_tool_call(self.call, server.spec.name, tool, outcome)

        async with trio.open_nursery() as nursery:
            for i, call in enumerate(calls):
                nursery.start_soon(run_one, i, call)
        return [outcome for outcome in outcomes if outcome is not None]

    def _usage_events(self) -> list[Event]:
        return [] if self._usage is None else [self._usage]


@attrs.define
class _LoopEvents:
    """The handler's end of a loop: a memory channel whose reader may stop waiting at any time;
    closing it (the client went) cancels the loop's task."""

    receive_channel: trio.MemoryReceiveChannel[Event]
    scope: trio.CancelScope

    async def receive(self) -> Event:
        return await self.receive_channel.receive()

    def receive_nowait(self) -> Event:
        return self.receive_channel.receive_nowait()

    def close(self) -> None:
        self.receive_channel.close()
        self.scope.cancel()


def _summed(total: Usage | None, more: Usage) -> Usage:
    if total is None:
        return more
    cost = (
        None
        if total.cost_usd is None and more.cost_usd is None
        else (total.cost_usd or 0) + (more.cost_usd or 0)
    )
    return Usage(
        total.prompt_tokens + more.prompt_tokens,
        total.completion_tokens + more.completion_tokens,
        total.cache_read_tokens + more.cache_read_tokens,
        total.cache_write_tokens + more.cache_write_tokens,
        cost_usd=cost,
    )
