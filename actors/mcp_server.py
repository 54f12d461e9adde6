"""One MCP server, as a supervised actor: relaybox starts it (a stdio command) or connects to it
(streamable HTTP) with the official `mcp` SDK, lists its tools at start and whenever the server
says they changed, and runs the tool calls the tool loop sends it, each in its own task, each
bounded by `[mcp] tool_timeout`. A tool that fails or times out is an answer (`ToolResult` with
`ok` false) for the model to read, never a crash; a connection that dies is a crash, and the
supervisor starts the server again with backoff.

The server's own stderr goes to `<data dir>/mcp/NAME.log`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

import attrs
import httpx2
import mcp_types
import trio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from relaybox.actors.mailbox import Mailbox, MailboxFull, MailboxStatistics
from relaybox.actors.messages import CallTool, ToolResult
from relaybox.protocol.tool_loop import McpServerSpec, McpTool, clipped
from relaybox.protocol.wire.gemini import gemini_drops

log = logging.getLogger("relaybox.mcp")

MAILBOX = 256
# Calls of one server running at once.
CONCURRENT_CALLS = 16
# A server that does not answer a ping this often, within this long, is taken for dead.
PING_EVERY = 5.0
PING_TIMEOUT = 10.0
# Connecting and listing the tools.
CONNECT_TIMEOUT = 60.0
# Past the tool's own timeout, how long a call waits for the actor to answer at all.
ANSWER_MARGIN = 5.0


@attrs.frozen
class McpServerStatistics:
    mailbox: MailboxStatistics
    ready: bool
    transport: str
    tools: tuple[str, ...]
    calls: int
    failed_calls: int
    timeouts: int
    tool_lists: int  # times the tools were listed (1 + the server's changes)
    last_error: str | None
    schema_notes: tuple[str, ...]  # what each tool's schema loses on the way to an active Gemini provider


class McpServerActor:
    kind = "mcp"

    def __init__(
        self, spec: McpServerSpec, *, tool_timeout: float, log_dir: str, gemini_active: bool = False
    ) -> None:
        self.spec = spec
        self.gemini_active = gemini_active  # a Gemini provider is active: its schema losses matter
        self.name = f"mcp:{spec.name}"
        self.tool_timeout = tool_timeout
        self.log_dir = log_dir
        self.mailbox: Mailbox[CallTool] = Mailbox(MAILBOX)
        self.tools: tuple[McpTool, ...] = ()
        self._ready = trio.Event()
        self._calls = self._failed = self._timeouts = self._lists = 0
        self._last_error: str | None = None
        self._schema_notes: tuple[str, ...] = ()
        self._started_calls = 0  # calls sent to the server, ever (a ping sees whether more began)
        self._running_calls = 0
        self._changed: trio.MemorySendChannel[None] | None = None

    # --- for the tool loop ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, with its tools listed."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """Run one tool call within `tool_timeout` from now, however long it waits for its turn;
        a full mailbox or a server that is down is a failed result."""
        send, receive = trio.open_memory_channel[ToolResult](1)
        deadline = trio.current_time() + self.tool_timeout
        try:
            self.mailbox.tell(CallTool(tool, arguments, send, deadline))
        except MailboxFull:
            return ToolResult(f"the MCP server {self.spec.name} is busy; try again later", False)
        with receive, trio.move_on_at(deadline + ANSWER_MARGIN):
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                return ToolResult(f"the MCP server {self.spec.name} stopped before answering", False)
        # The actor is down (restarting, or left down after crashing too often): nobody took the call.
        return ToolResult(
            f"the MCP server {self.spec.name} did not answer (it is restarting or down); the call may not have run",
            False,
        )

    def statistics(self) -> McpServerStatistics:
        return McpServerStatistics(
            self.mailbox.statistics(),
            self._ready.is_set(),
            "stdio" if self.spec.command else "streamable-http",
            tuple(tool.name for tool in self.tools),
            self._calls,
            self._failed,
            self._timeouts,
            self._lists,
            self._last_error,
            self._schema_notes,
        )

    # --- the actor -----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # Started at once: a server that is slow to come up must not hold relaybox's start back.
        task_status.started()
        changed_send, changed = trio.open_memory_channel[None](1)
        self._changed = changed_send
        # The connection and the first listing of tools must be done within CONNECT_TIMEOUT; the
        # deadline is lifted once they are.
        connecting = trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT)
        try:
            with self._errlog() as errlog, connecting:
                async with Client(self._transport(errlog), message_handler=self._on_message) as client:
                    await self._list_tools(client)
                    connecting.deadline = math.inf
                    self._ready.set()
                    log.info("MCP server %s ready: %d tools", self.spec.name, len(self.tools))
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._keep_alive, client)
                        nursery.start_soon(self._relist_on_change, client, changed)
                        limiter = trio.CapacityLimiter(CONCURRENT_CALLS)
                        async for message in self.mailbox.receive:
                            nursery.start_soon(self._serve, client, message, limiter)
        finally:
            if self._ready.is_set():
                self._ready = trio.Event()  # a later wait is for the next connection
        if connecting.cancelled_caught:
            raise RuntimeError(
                f"the MCP server {self.spec.name} did not start within {CONNECT_TIMEOUT:.0f} s"
            )

    async def on_crash(self, error: BaseException) -> None:
        self._last_error = f"{type(error).__name__}: {error}"[:300]
        for message in self.mailbox.drain():
            with message.reply, contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                message.reply.send_nowait(
                    ToolResult(f"the MCP server {self.spec.name} crashed: {self._last_error}", False)
                )

    def on_give_up(self) -> None:
        log.error("the MCP server %s keeps crashing; its tools are unavailable for now", self.spec.name)

    # --- inside ----------------------------------------------------------------------------

    def _transport(self, errlog: TextIO) -> Any:
        spec = self.spec
        if spec.command is not None:
            params = StdioServerParameters(
                command=spec.command, args=list(spec.args), env=spec.env or None, cwd=spec.cwd
            )
            return stdio_client(params, errlog=errlog)
        assert spec.url is not None
        return _streamable_http(spec.url, spec.headers)

    @contextlib.contextmanager
    def _errlog(self) -> Any:
        directory = Path(self.log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / f"{self.spec.name}.log").open("a") as errlog:
            yield errlog

    async def _list_tools(self, client: Client) -> None:
        listed = await client.list_tools()
        self.tools = tuple(
            McpTool(self.spec.name, tool.name, tool.description, dict(tool.input_schema or {}))
            for tool in listed.tools
        )
        self._lists += 1
        self._schema_notes = schema_notes(self.tools, gemini_active=self.gemini_active)
        if self._schema_notes:
            log.info(
                "MCP server %s: Gemini drops part of %d tools' schemas (each at /actors)",
                self.spec.name,
                len(self._schema_notes),
            )

    async def _on_message(self, message: object) -> None:
        """The server's notifications: a change of its tools is listed again (at most one waits)."""
        if isinstance(message, mcp_types.ToolListChangedNotification) and self._changed is not None:
            with contextlib.suppress(trio.WouldBlock):
                self._changed.send_nowait(None)

    async def _relist_on_change(self, client: Client, changed: trio.MemoryReceiveChannel[None]) -> None:
        """A server of the 2026 protocol tells its changes to a subscription; an older one sends a
        notification (`_on_message`)."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    await self._relist(client)
                return
        except ListenNotSupportedError:
            pass
        async for _ in changed:
            await self._relist(client)

    async def _relist(self, client: Client) -> None:
        await self._list_tools(client)
        log.info("MCP server %s changed its tools: %d now", self.spec.name, len(self.tools))

    async def _keep_alive(self, client: Client) -> None:
        """A connection that has died shows up here (a crash, so the supervisor starts it again),
        not on the next unlucky tool call. A server that does not take pings (the 2026 protocol
        has none) is left alone: its end shows on the next call, which crashes the actor. An
        unanswered ping means a dead server only when it had nothing else to do: many servers
        answer one request at a time, and a tool at work holds the ping back."""
        if client.session.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return  # the 2026 protocol has no ping
        while True:
            await trio.sleep(PING_EVERY)
            calls_before = self._started_calls
            try:
                with trio.fail_after(PING_TIMEOUT), warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await client.send_ping()
            except trio.TooSlowError:
                if self._running_calls or self._started_calls != calls_before:
                    continue  # busy, not dead
                raise
            except MCPError as error:
                if _connection_lost(error):
                    raise
                return

    async def _serve(self, client: Client, message: CallTool, limiter: trio.CapacityLimiter) -> None:
        """One call, by its own deadline (its wait for a turn included); its caller always gets an
        answer, even when the connection is lost under it (then the actor crashes and the
        supervisor reconnects). A call whose caller has gone, or whose deadline passed while it
        waited behind others, is never started."""
        started = time.perf_counter()
        result = ToolResult(f"the MCP server {self.spec.name} stopped before answering", False)
        began = False
        try:
            with trio.move_on_at(message.deadline) as deadline:
                async with limiter:
                    if message.reply.statistics().open_receive_channels == 0:
                        return  # the caller has gone
                    began = True
                    result = await self._called(client, message)
            if deadline.cancelled_caught and began:
                self._timeouts += 1
                result = ToolResult(f"the tool did not answer within {self.tool_timeout:g} s", False)
            elif deadline.cancelled_caught:
                busy = CONCURRENT_CALLS - limiter.available_tokens
                result = ToolResult(
                    f"the MCP server {self.spec.name} is busy with {busy} other calls: this one did not "
                    f"start within {self.tool_timeout:g} s",
                    False,
                )
        finally:
            if not result.ok:
                self._failed += 1
            with message.reply, contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                message.reply.send_nowait(attrs.evolve(result, seconds=time.perf_counter() - started))

    async def _called(self, client: Client, message: CallTool) -> ToolResult:
        self._calls += 1
        self._started_calls += 1
        self._running_calls += 1
        try:
            answer = await client.call_tool(message.tool, message.arguments)
        except MCPError as error:
            if _connection_lost(error):
                raise
            return ToolResult(f"the tool failed: {error}", False)
        finally:
            self._running_calls -= 1
        return ToolResult(clipped(_text_of(answer)), not answer.is_error)


def schema_notes(tools: tuple[McpTool, ...], *, gemini_active: bool) -> tuple[str, ...]:
    """What each tool's schema loses on the way to the active providers. One definition serves
    every dialect, and only Gemini's schema cannot say everything JSON Schema can: with no Gemini
    provider active, nothing is lost and nothing is said."""
    if not gemini_active:
        return ()
    return tuple(
        f"{tool.name}: Gemini drops {', '.join(drops)}"
        for tool in tools
        if (drops := gemini_drops(tool.input_schema))
    )


@contextlib.asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """The SDK's streamable-HTTP transport over a client carrying the configured headers (with the
    SDK's usual timeouts: a server may hold a stream open for minutes)."""
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


def _connection_lost(error: MCPError) -> bool:
    return "connection closed" in str(error).lower()


def _text_of(answer: Any) -> str:
    """A tool's result as the text a model reads: its text parts, and a note for anything else."""
    parts = []
    for item in answer.content or ():
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind == "resource" and hasattr(item.resource, "text"):
            parts.append(item.resource.text)
        else:
            parts.append(f"[{kind} content omitted]")
    if not parts and answer.structured_content is not None:
        parts.append(json.dumps(answer.structured_content))
    return "\n".join(parts)
