"""Anthropic's Messages API upstream (the Anthropic provider): a `ChatRequest` becomes a Messages body
(system prompt at the top level, tool results as `tool_result` blocks in a user turn, images as
`image` blocks), and the native SSE stream (`message_start`, `content_block_*`, `message_delta`,
`message_stop`, `ping`, `error`) or one message becomes events."""

from __future__ import annotations

import json
from typing import Any

import attrs
from relaybox.protocol.chat import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    ImagePart,
    ImageRequest,
    TextPart,
    arguments_object,
    inline_image,
)
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, ToolCallDelta, TransportEvent, Usage
from relaybox.protocol.wire.dialect import HttpCall, SSEStreamDecoder, error_message, load_json, malformed
from relaybox.protocol.wire.sse import SSEvent

API_VERSION = "2023-06-01"
# The most each family of Anthropic's models writes in one answer, by model id prefix; newer
# models (Claude 3.7 and 4.x) write at least 32,000.
_OUTPUT_LIMITS = (("claude-3-5-", 8192), ("claude-3-", 4096))
NEWER_MODELS_OUTPUT_LIMIT = 32_000

MAX_CACHE_BREAKPOINTS = 4
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


# --- upstream: ChatRequest -> Messages body ---------------------------------------------


def _image_block(part: ImagePart) -> dict[str, Any]:
    inline = inline_image(part)
    if inline is not None:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": inline.media_type, "data": inline.data},
        }
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _content_blocks(content: str | tuple[ContentPart, ...] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [
        {"type": "text", "text": part.text} if isinstance(part, TextPart) else _image_block(part)
        for part in content
        if not (isinstance(part, TextPart) and not part.text)
    ]


def _json_instruction(request: ChatRequest) -> str:
    if request.response_format == "json_object":
        return "Respond with a single valid JSON object and nothing else."
    if request.response_format == "json_schema":
        schema = (request.json_schema or {}).get("schema", request.json_schema)
        return (
            "Respond with a single valid JSON object, and nothing else, that conforms to this JSON Schema:\n"
            + json.dumps(schema)
        )
    return ""


def output_limit(model: str) -> int:
    """What to ask for when the client set no limit: Anthropic requires one, where OpenAI's API and
    others default to the model's own. A fixed small default would cut long answers (a whole file
    an agent rewrites) short."""
    return next(
        (limit for prefix, limit in _OUTPUT_LIMITS if model.startswith(prefix)), NEWER_MODELS_OUTPUT_LIMIT
    )


def messages_body(request: ChatRequest, model: str) -> dict[str, Any]:
    turns: list[dict[str, Any]] = []
    breakpoints: list[dict[str, Any]] = []  # the blocks that end a part of the prompt to cache

    def add(role: str, blocks: list[dict[str, Any]], message: ChatMessage) -> None:
        if not blocks:
            return
        if message.cache_breakpoint:
            breakpoints.append(blocks[-1])
        if turns and turns[-1]["role"] == role:  # the API wants user and assistant to alternate
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in request.conversation():
        if message.role == "tool":
            add(
                "user",
                [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text()}],
                message,
            )
        elif message.role == "assistant":
            blocks = _content_blocks(message.content)
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": arguments_object(c.arguments)}
                for c in message.tool_calls
            ]
            add("assistant", blocks, message)
        else:
            add("user", _content_blocks(message.content), message)
    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": request.max_tokens or output_limit(model),
        "stream": request.stream,
    }
    system = [{"type": "text", "text": t} for t in (request.system_text(), _json_instruction(request)) if t]
    if system and request.system_cache_breakpoint():
        breakpoints.insert(0, system[0])
        body["system"] = system
    elif system:
        body["system"] = "\n\n".join(block["text"] for block in system)
    # The API takes at most four; the latest cover the most.
    for block in breakpoints[-MAX_CACHE_BREAKPOINTS:]:
        block["cache_control"] = {"type": "ephemeral"}
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0-1
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                "input_schema": t.parameters,
                **({"description": t.description} if t.description else {}),
            }
            for t in request.tools
        ]
    if request.tool_choice is not None and (request.tools or request.tool_choice.mode == "none"):
        choice = request.tool_choice
        body["tool_choice"] = {
            "auto": {"type": "auto"},
            "required": {"type": "any"},
            "none": {"type": "none"},
            "tool": {"type": "tool", "name": choice.name},
        }[choice.mode]
    return body


# --- upstream: Messages answers -> events -------------------------------------------------


def _usage(usage: dict[str, Any]) -> Usage:
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _stream_error(error: object) -> ProviderFailure:
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(error)
    failure_kind = {
        "rate_limit_error": FailureKind.RATE_LIMITED,
        "authentication_error": FailureKind.AUTH,
        "invalid_request_error": FailureKind.REJECTED,
    }.get(str(kind), FailureKind.SERVER_ERROR)
    return ProviderFailure(failure_kind, f"upstream error mid-stream: {kind}: {message}"[:300])


class AnthropicStreamDecoder(SSEStreamDecoder):
    def __init__(self) -> None:
        super().__init__()
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index

    def on_event(self, frame: SSEvent) -> list[TransportEvent]:
        event = load_json(frame.data)
        if not isinstance(event, dict):
            raise malformed("event is not an object")
        kind = event.get("type", frame.event)
        if kind == "message_start":
            self._usage.update((event.get("message") or {}).get("usage") or {})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index[event.get("index", 0)] = len(self._tool_index)
                return [ToolCallDelta(index, block.get("id"), block.get("name"), "")]
            if block.get("type") == "text" and block.get("text"):
                return [ContentDelta(block["text"])]
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [ContentDelta(delta["text"])]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self._tool_index.get(event.get("index", 0))
                if index is None:
                    raise malformed("input_json_delta for a block that is not a tool_use")
                return [ToolCallDelta(index, arguments=delta["partial_json"])]
        elif kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop = (event.get("delta") or {}).get("stop_reason")
            if stop:
                self.finish_reason = STOP_REASONS.get(stop, "stop")
        elif kind == "message_stop":
            self.done = True
            self.finish_reason = self.finish_reason or "stop"
            return [_usage(self._usage)]
        elif kind == "error":
            raise _stream_error(event.get("error"))
        return []


def decode_message(body: object) -> tuple[list[TransportEvent], str]:
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise ValueError("upstream answer is not a message")
    events: list[TransportEvent] = []
    tools = 0
    for block in body["content"]:
        if block.get("type") == "text" and block.get("text"):
            events.append(ContentDelta(block["text"]))
        elif block.get("type") == "tool_use":
            events.append(
                ToolCallDelta(tools, block.get("id"), block.get("name"), json.dumps(block.get("input") or {}))
            )
            tools += 1
    events.append(_usage(body.get("usage") or {}))
    return events, STOP_REASONS.get(str(body.get("stop_reason")), "stop")


@attrs.frozen
class AnthropicDialect:
    name: str = "anthropic"

    def call(self, request: ChatRequest, model: str, api_key: str | None) -> HttpCall:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return HttpCall("/v1/messages", headers, messages_body(request, model))

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def decode_body(self, body: bytes) -> tuple[list[TransportEvent], str]:
        try:
            return decode_message(load_json(body))
        except (ValueError, AttributeError) as error:
            raise malformed(str(error)) from None

    def error_message(self, body: bytes) -> str:
        return error_message(body)

    def embedding_call(self, request: EmbeddingRequest, model: str, api_key: str | None) -> None:
        return None

    def image_call(self, request: ImageRequest, model: str, api_key: str | None) -> None:
        return None  # Anthropic's API generates no images
