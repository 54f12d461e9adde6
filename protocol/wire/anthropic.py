"""Anthropic's Messages API as relaybox serves it (`/v1/messages`, answered by any provider): a
client's Messages body becomes a `ChatRequest`, and events are rendered back as Messages SSE or a
message object. The upstream direction is `anthropic_upstream.py`."""

from __future__ import annotations

import json
from typing import Any

import orjson
from relaybox.protocol.chat import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    ImagePart,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    arguments_object,
)
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import ContentDelta, ToolCallDelta, Usage

FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


# --- inbound: a client's Messages body -> ChatRequest ------------------------------------


def _bad(message: str, param: str | None = None) -> RelayError:
    return RelayError(400, message, "invalid_request_error", code="invalid_request", param=param)


def _text_of(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    if content is None:
        return ""
    raise _bad(f"'{where}' must be a string or an array of blocks", where)


def _inbound_image(block: dict[str, Any], where: str) -> ImagePart:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        return ImagePart(f"data:{source.get('media_type', 'image/png')};base64,{source['data']}")
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return ImagePart(source["url"])
    raise _bad(f"'{where}.source' must be a base64 or url image source", f"{where}.source")


def _inbound_message(index: int, raw: object) -> list[ChatMessage]:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise _bad(f"'{where}' must be a message object", where)
    role = raw.get("role")
    if role not in ("user", "assistant", "system"):
        raise _bad(f"'{where}.role' must be 'user', 'assistant' or 'system', got {role!r}", f"{where}.role")
    content = raw.get("content")
    if isinstance(content, str):
        return [ChatMessage(role, content)]
    if not isinstance(content, list):
        raise _bad(f"'{where}.content' must be a string or an array of content blocks", f"{where}.content")
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    cached = False
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(block, dict):
            raise _bad(f"'{at}' must be a content block object", at)
        kind = block.get("type")
        marked = bool(block.get("cache_control"))
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _bad(f"'{at}.text' must be a string", f"{at}.text")
            parts.append(TextPart(block["text"]))
        elif kind == "image" and role != "system":
            parts.append(_inbound_image(block, at))
        elif kind == "document" and role == "user":
            parts.append(_inbound_document(block, at))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"'{at}' needs a string 'id' and 'name'", at)
            calls.append(ToolCall(block["id"], block["name"], json.dumps(block.get("input") or {})))
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise _bad(f"'{at}.tool_use_id' must be a string", f"{at}.tool_use_id")
            text, images = _tool_result_content(block.get("content"), f"{at}.content")
            if block.get("is_error"):
                text = f"[tool error] {text}"
            results.append(
                ChatMessage(
                    "tool", text, tool_call_id=block["tool_use_id"], cache_breakpoint=marked and not images
                )
            )
            if images:  # no dialect takes images in a tool's result: they follow it in the user's turn
                parts += [TextPart(f"[images returned by tool call {block['tool_use_id']}]"), *images]
            marked = marked and bool(images)
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # the model's own reasoning from an earlier turn: not needed by other providers
        else:
            raise _bad(f"'{at}.type' {kind!r} is not supported in a {role} message", f"{at}.type")
        cached = cached or marked
    messages = list(results)
    if parts or calls or not results:
        content_out = tuple(parts) if parts else (None if calls else "")
        messages.append(ChatMessage(role, content_out, tool_calls=tuple(calls), cache_breakpoint=cached))
    return messages


def _tool_result_content(content: object, where: str) -> tuple[str, list[ImagePart]]:
    """A tool result's text, and the images it returned (Claude Code's Read of a picture)."""
    if not isinstance(content, list):
        return _text_of(content, where), []
    images = [
        _inbound_image(block, f"{where}[{i}]")
        for i, block in enumerate(content)
        if isinstance(block, dict) and block.get("type") == "image"
    ]
    return _text_of(content, where), images


def _inbound_document(block: dict[str, Any], where: str) -> TextPart:
    """A plain-text document becomes text; a PDF needs a provider that reads PDFs, which relaybox
    cannot promise on a route, so it is refused rather than dropped."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
        title = block.get("title")
        heading = f"<document title={json.dumps(title)}>" if isinstance(title, str) else "<document>"
        return TextPart(f"{heading}\n{source['data']}\n</document>")
    raise _bad(f"'{where}': only plain-text documents are supported (source type 'text')", f"{where}.source")


def parse_messages_request(body: object) -> ChatRequest:
    """Validate an Anthropic Messages body into a `ChatRequest`; 400 `RelayError` otherwise."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is a required string", "model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("'max_tokens' is required: a positive integer", "max_tokens")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    messages: list[ChatMessage] = []
    system = body.get("system")
    if system:
        cached = isinstance(system, list) and any(
            isinstance(b, dict) and b.get("cache_control") for b in system
        )
        messages.append(ChatMessage("system", _text_of(system, "system"), cache_breakpoint=cached))
    for i, raw in enumerate(raw_messages):
        messages.extend(_inbound_message(i, raw))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 1
    ):
        raise _bad("'temperature' must be a number between 0 and 1", "temperature")
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _bad("'stop_sequences' must be an array of strings", "stop_sequences")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=stream,
        include_usage=True,
        temperature=None if temperature is None else float(temperature),
        max_tokens=max_tokens,
        stop=tuple(stop),
        tools=_inbound_tools(body.get("tools")),
        tool_choice=_inbound_tool_choice(body.get("tool_choice")),
    )


def _inbound_tools(raw: object) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad("'tools' must be an array", "tools")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"'tools[{i}]' needs a string 'name'", f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            continue  # Anthropic's server tools (web search, ...) exist only on Anthropic's side
        schema = tool.get("input_schema") or {"type": "object", "properties": {}}
        tools.append(ToolSpec(tool["name"], tool.get("description"), schema))
    return tuple(tools)


def _inbound_tool_choice(raw: object) -> ToolChoice | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "tool" and isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return ToolChoice("tool", raw["name"])
    modes = {"auto": "auto", "any": "required", "none": "none"}
    if kind in modes:
        return ToolChoice(modes[kind])
    raise _bad("'tool_choice.type' must be auto, any, tool or none", "tool_choice")


# --- inbound: events -> Messages answers -------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def error_body(error: RelayError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(error.status, "api_error"), "message": error.message},
    }


def usage_body(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": usage.prompt_tokens - usage.cache_read_tokens - usage.cache_write_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


def message_body(
    *,
    message_id: str,
    model: str,
    text: str,
    tool_calls: list[dict[str, Any]],
    finish_reason: str,
    usage: Usage | None,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [
        {
            "type": "tool_use",
            "id": c["id"],
            "name": c["function"]["name"],
            "input": arguments_object(c["function"]["arguments"]),
        }
        for c in tool_calls
    ]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_REASONS.get(finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": usage_body(usage),
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = sse("ping", {"type": "ping"})


class MessagesStreamRenderer:
    """Renders relaybox's events as the Messages API's SSE stream, one content block at a time."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self._block = -1
        self._open: str | None = None  # "text" or "tool:<index>"
        self.usage: Usage | None = None

    def start(self) -> bytes:
        return sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._block})

    def text(self, delta: ContentDelta) -> bytes:
        out = b""
        if self._open != "text":
            out += self._close()
            self._block += 1
            self._open = "text"
            out += sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self._block,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        return out + sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._block,
                "delta": {"type": "text_delta", "text": delta.text},
            },
        )

    def tool(self, delta: ToolCallDelta) -> bytes:
        out = b""
        key = f"tool:{delta.index}"
        if self._open != key:
            out += self._close()
            self._block += 1
            self._open = key
            out += sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self._block,
                    "content_block": {
                        "type": "tool_use",
                        "id": delta.id or f"toolu_{self.message_id}_{delta.index}",
                        "name": delta.name or "",
                        "input": {},
                    },
                },
            )
        if delta.arguments:
            out += sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._block,
                    "delta": {"type": "input_json_delta", "partial_json": delta.arguments},
                },
            )
        return out

    def finish(self, finish_reason: str) -> bytes:
        return (
            self._close()
            + sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": FINISH_REASONS.get(finish_reason, "end_turn"),
                        "stop_sequence": None,
                    },
                    "usage": usage_body(self.usage),
                },
            )
            + sse("message_stop", {"type": "message_stop"})
        )

    def error(self, error: RelayError) -> bytes:
        return sse("error", error_body(error))
