"""The server-side tool loop over MCP servers, its pure part: what the operator configures, how an
MCP tool is named to a model, which of a model's calls relaybox runs itself, and the conversation
that goes back to the model once they have run.

A route marked `tools = ["fs", ...]` (or a request for `agent:ROUTE`) is answered by a loop: the
model is offered the servers' tools next to the client's own; each call it makes to an MCP tool is
run by relaybox and its result fed back, until the model answers without one, or `max_steps` or
the time budget is reached. The I/O (the servers, the model calls) is `actors/mcp_server.py` and
`web/tool_loop.py`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from relaybox.protocol.chat import ChatMessage, ChatRequest, ToolCall, ToolSpec

# How MCP tools are named to a model: `mcp__SERVER__TOOL`, which no client tool is likely to be.
PREFIX = "mcp__"
SEPARATOR = "__"
# What a tool may say back to the model, at most (the rest is cut, with a note).
RESULT_CHARS = 50_000
AGENT_PREFIX = "agent:"


@attrs.frozen
class McpServerSpec:
    """One MCP server as the operator configures it (`[mcp.servers.NAME]`): a command relaybox
    starts and talks to over stdio, or a streamable-HTTP URL. No client can name either."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict, repr=False)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    # The client keys that may use it (and admin keys); None: every key. Until client keys exist,
    # only this machine can reach relaybox, and every client may.
    keys: tuple[str, ...] | None = None

    def allows(self, key_name: str | None, admin: bool) -> bool:
        return self.keys is None or key_name is None or admin or key_name in self.keys


@attrs.frozen
class McpSettings:
    servers: tuple[McpServerSpec, ...] = ()
    tool_timeout: float = 30.0  # one tool call; past it the model is told it timed out
    max_steps: int = 10  # model calls in one request's loop
    time_budget: float = 600.0  # seconds for the whole loop

    def server(self, name: str) -> McpServerSpec | None:
        return next((server for server in self.servers if server.name == name), None)


@attrs.frozen
class McpTool:
    """A tool one server offers, with its JSON Schema: the single source every dialect's tool
    definition is made from (`ToolSpec` → OpenAI functions, Anthropic tools, Gemini function
    declarations, the CLIs' prompt)."""

    server: str
    name: str
    description: str | None
    input_schema: dict[str, Any]

    @property
    def exposed_name(self) -> str:
        return f"{PREFIX}{self.server}{SEPARATOR}{self.name}"

    def spec(self) -> ToolSpec:
        schema = (
            self.input_schema
            if self.input_schema.get("type") == "object"
            else {"type": "object", "properties": {}}
        )
        return ToolSpec(self.exposed_name, self.description, schema)


def split_name(exposed: str) -> tuple[str, str] | None:
    """(server, tool) of an exposed MCP tool name; None for any other name."""
    if not exposed.startswith(PREFIX):
        return None
    server, sep, tool = exposed[len(PREFIX) :].partition(SEPARATOR)
    return (server, tool) if sep and server and tool else None


@attrs.frozen
class ToolOutcome:
    """What running one call gave: the text the model reads, whether it went well, how long it took."""

    call: ToolCall
    text: str
    ok: bool
    seconds: float


def arguments_of(call: ToolCall) -> dict[str, Any] | None:
    """A call's arguments as the object MCP takes; None when they are not a JSON object."""
    try:
        parsed = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def clipped(text: str) -> str:
    if len(text) <= RESULT_CHARS:
        return text
    return text[:RESULT_CHARS] + f"\n[relaybox: the tool's output was cut at {RESULT_CHARS} characters]"


def with_tools(request: ChatRequest, tools: list[McpTool]) -> ChatRequest:
    """The request as the model sees it: the client's tools, then the servers'."""
    offered = {tool.name for tool in request.tools}
    extra = tuple(tool.spec() for tool in tools if tool.exposed_name not in offered)
    return attrs.evolve(request, tools=(*request.tools, *extra))


def after_tools(request: ChatRequest, text: str, outcomes: list[ToolOutcome]) -> ChatRequest:
    """The conversation continued: the model's turn (its text and calls), then each call's result."""
    turn = ChatMessage("assistant", text or None, tool_calls=tuple(outcome.call for outcome in outcomes))
    results = tuple(ChatMessage("tool", outcome.text, tool_call_id=outcome.call.id) for outcome in outcomes)
    return attrs.evolve(request, messages=(*request.messages, turn, *results))


def stopped_early(reason: str, steps: int) -> str:
    """The clear last words of a loop that had to stop before the model finished."""
    return (
        f"\n\n[relaybox stopped the tool loop after {steps} model calls: {reason}. "
        "The model had not finished; ask again, or raise [mcp] max_steps / time_budget_seconds.]"
    )
