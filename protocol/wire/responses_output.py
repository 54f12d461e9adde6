"""A Responses API answer as the client sees it: the `response` object with its output items, and
the typed SSE events of a streamed one, each with its `sequence_number`, in the order the API
defines (`response.created`, `response.in_progress`, per item `output_item.added`, its deltas and
`.done` events, `output_item.done`, then `response.completed`, `response.incomplete` or
`response.failed`). The request side is `responses.py`."""

from __future__ import annotations

import json
from typing import Any

import attrs
import orjson
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import ContentDelta, ToolCallDelta, Usage
from relaybox.protocol.wire.responses import ResponsesRequest

# Why an answer stopped short, in the API's words.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


@attrs.frozen
class ResponseShape:
    """What every form of one response repeats: its id, when it began, the model that answers,
    and what the request asked for."""

    response_id: str
    created_at: int
    model: str
    request: ResponsesRequest

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.response_id.removeprefix('resp_')}{index:03d}"

    def body(
        self,
        *,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        finish_reason: str | None = None,
        error: RelayError | None = None,
    ) -> dict[str, Any]:
        echo = self.request.echo
        incomplete = INCOMPLETE_REASONS.get(finish_reason or "")
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": "incomplete" if incomplete and status == "completed" else status,
            "error": None if error is None else {"code": error.code or error.type, "message": error.message},
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": self.request.instructions,
            "max_output_tokens": echo.get("max_output_tokens"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": echo.get("parallel_tool_calls", True) is not False,
            "previous_response_id": self.request.previous_response_id,
            "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
            "store": self.request.store,
            "temperature": echo.get("temperature"),
            "text": echo.get("text") or {"format": {"type": "text"}},
            "tool_choice": echo.get("tool_choice") or "auto",
            "tools": echo.get("tools") or [],
            "top_p": echo.get("top_p"),
            "truncation": "disabled",
            "usage": None if usage is None else usage_body(usage),
            "user": echo.get("user"),
            "metadata": self.request.metadata,
        }

    def call_item(self, item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
        """A tool call as an output item: `custom_tool_call` for a free-form tool, else `function_call`."""
        if name in self.request.custom_tools:
            return {
                "id": item_id,
                "type": "custom_tool_call",
                "status": status,
                "call_id": call_id,
                "name": name,
                "input": _custom_input(arguments),
            }
        item = {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }
        if name in self.request.namespaces:
            item["namespace"] = self.request.namespaces[name]
        return item


def _custom_input(arguments: str) -> str:
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    value = parsed.get("input") if isinstance(parsed, dict) else parsed
    return value if isinstance(value, str) else json.dumps(value)


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_text_part(text)],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_items(shape: ResponseShape, text: str, tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A whole answer's output items: its text as one message, then each tool call (merged, in
    `chat.completion` form)."""
    items = [message_item(shape.item_id("msg", 0), text)] if text or not tool_calls else []
    for call in tool_calls:
        index = len(items)
        function = call["function"]
        call_id = call["id"] or shape.item_id("call", index)
        items.append(
            shape.call_item(
                shape.item_id("fc", index), call_id, function["name"], function["arguments"], "completed"
            )
        )
    return items


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def output_text(output: list[dict[str, Any]]) -> str:
    """The answer's text, as the SDKs' `output_text` reads it."""
    return "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    )


class ResponsesStreamRenderer:
    """Renders relaybox's events as the Responses API's typed SSE events, one output item at a
    time; `output` is the finished items, for the response object and its storage."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._tool_index: int | None = None  # the tool call it is, in the upstream's numbering
        self._buffer: list[str] = []  # its text or arguments so far
        self.final: dict[str, Any] | None = None  # the response object, once the answer has ended

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def start(self) -> bytes:
        response = self.shape.body(status="in_progress", output=[])
        return self.event("response.created", response=response) + self.event(
            "response.in_progress", response=response
        )

    def text(self, delta: ContentDelta) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != "message":
            out += self._close()
            out += self._begin(message_item(self.shape.item_id("msg", len(self.output)), "", "in_progress"))
            out += self.event(
                "response.content_part.added", **self._where(), content_index=0, part=_text_part("")
            )
        self._buffer.append(delta.text)
        return out + self.event(
            "response.output_text.delta", **self._where(), content_index=0, delta=delta.text, logprobs=[]
        )

    def tool(self, delta: ToolCallDelta) -> bytes:
        out = b""
        if self._open is None or self._tool_index != delta.index:
            out += self._close()
            index = len(self.output)
            call_id = delta.id or self.shape.item_id("call", index)
            out += self._begin(
                self.shape.call_item(
                    self.shape.item_id("fc", index), call_id, delta.name or "", "", "in_progress"
                )
            )
            self._tool_index = delta.index
        elif delta.name and self._open is not None:
            self._open["name"] = self._open["name"] + delta.name
        self._buffer.append(delta.arguments)
        if delta.arguments and self._open is not None and self._open["type"] == "function_call":
            out += self.event(
                "response.function_call_arguments.delta", **self._where(), delta=delta.arguments
            )
        return out

    def finish(self, finish_reason: str) -> bytes:
        out = self._close()
        response = self.shape.body(
            status="completed", output=self.output, usage=self.usage, finish_reason=finish_reason
        )
        self.final = response
        return out + self.event(f"response.{response['status']}", response=response)

    def error(self, error: RelayError) -> bytes:
        out = self._close()
        response = self.shape.body(status="failed", output=self.output, usage=self.usage, error=error)
        return out + self.event("response.failed", response=response)

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self.output)}

    def _begin(self, item: dict[str, Any]) -> bytes:
        self._open = item
        self._buffer = []
        return self.event("response.output_item.added", output_index=len(self.output), item=item)

    def _close(self) -> bytes:
        item = self._open
        if item is None:
            return b""
        whole = "".join(self._buffer)
        out = b""
        if item["type"] == "message":
            done = message_item(item["id"], whole)
            where = self._where()
            out += self.event("response.output_text.done", **where, content_index=0, text=whole, logprobs=[])
            out += self.event("response.content_part.done", **where, content_index=0, part=_text_part(whole))
        else:
            done = self.shape.call_item(item["id"], item["call_id"], item["name"], whole, "completed")
            if item["type"] == "function_call":
                out += self.event("response.function_call_arguments.done", **self._where(), arguments=whole)
        out += self.event("response.output_item.done", output_index=len(self.output), item=done)
        self.output.append(done)
        self._open, self._tool_index, self._buffer = None, None, []
        return out
