"""OpenAI's API as relaybox serves it: a client's JSON body becomes a validated `ChatRequest` (or
`ImageRequest`), or a `RelayError` naming the offending field; events become `chat.completion`
objects and `chat.completion.chunk` frames. The upstream direction is `openai_upstream.py`."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
from relaybox.protocol.chat import (
    ROLES,
    ChatMessage,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    ImagePart,
    ImageRequest,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import ToolCallDelta, Usage

# Parameters relaybox does not interpret but forwards to OpenAI-compatible upstreams.
PASSTHROUGH_PARAMS = frozenset(
    {
        "parallel_tool_calls",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "n",
        "user",
        "reasoning_effort",
        "metadata",
        "service_tier",
        "store",
        "modalities",
        "prediction",
    }
)


def bad_request(message: str, param: str | None) -> RelayError:
    return RelayError(400, message, "invalid_request_error", code="invalid_request", param=param)


# --- inbound --------------------------------------------------------------------------
#
# Validated by hand rather than through cattrs: a client deserves "messages[2].role must be
# one of ..." naming the field and the allowed values, which generic structuring errors
# do not say. Strict on types (no "yes" for a boolean), tolerant of unknown keys.


def expect(value: object, kind: type | tuple[type, ...], param: str, what: str) -> None:
    wrong_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    if wrong_bool or not isinstance(value, kind):
        raise bad_request(f"'{param}' must be {what}, got {json_type(value)}", param)


def json_type(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def optional_number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    expect(value, (int, float), key, "a number")
    if not low <= value <= high:
        raise bad_request(f"'{key}' must be between {low:g} and {high:g}, got {value}", key)
    return float(value)


def optional_positive_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    expect(value, int, key, "an integer")
    if value < 1:
        raise bad_request(f"'{key}' must be at least 1, got {value}", key)
    return int(value)


def parse_chat_request(body: object) -> ChatRequest:
    """Validate a client's JSON body into a `ChatRequest`; raise a 400 `RelayError` otherwise."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {json_type(body)}", None)
    for required in ("model", "messages"):
        if required not in body:
            raise bad_request(f"'{required}' is a required property", required)
    expect(body["model"], str, "model", "a string")
    if not body["model"].strip():
        raise bad_request("'model' must not be empty (GET /v1/models lists the valid names)", "model")
    expect(body["messages"], list, "messages", "an array of messages")
    if not body["messages"]:
        raise bad_request("'messages' must contain at least one message", "messages")
    messages = tuple(_message(i, m) for i, m in enumerate(body["messages"]))

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    expect(stream, bool, "stream", "a boolean")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        expect(options, dict, "stream_options", "an object")
        usage_flag = options.get("include_usage", False)
        expect(usage_flag, bool, "stream_options.include_usage", "a boolean")
        include_usage = usage_flag

    stop: tuple[str, ...] = ()
    raw_stop = body.get("stop")
    if isinstance(raw_stop, str):
        stop = (raw_stop,)
    elif raw_stop is not None:
        expect(raw_stop, list, "stop", "a string or an array of strings")
        for i, item in enumerate(raw_stop):
            expect(item, str, f"stop[{i}]", "a string")
        stop = tuple(raw_stop)
    if len(stop) > 4:
        raise bad_request("'stop' takes at most 4 sequences", "stop")

    response_format, json_schema = _response_format(body.get("response_format"))
    max_tokens = optional_positive_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = optional_positive_int(body, "max_tokens")
    return ChatRequest(
        model=body["model"],
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        temperature=optional_number(body, "temperature", 0, 2),
        max_tokens=max_tokens,
        stop=stop,
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        response_format=response_format,
        json_schema=json_schema,
        passthrough={k: v for k, v in body.items() if k in PASSTHROUGH_PARAMS},
    )


IMAGE_FIELDS = frozenset({"prompt", "model", "n", "size", "quality", "response_format"})


def parse_image_request(body: object) -> ImageRequest:
    """`POST /v1/images/generations`: a JSON body as a validated `ImageRequest`."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", None)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad_request("'prompt' is required: a non-empty string", "prompt")
    model = body.get("model", "auto")
    if not isinstance(model, str):
        raise bad_request("'model' must be a string", "model")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
        raise bad_request("'n' must be an integer from 1 to 10", "n")
    fields: dict[str, str | None] = {}
    for key in ("size", "quality", "response_format"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise bad_request(f"'{key}' must be a string", key)
        fields[key] = value
    if fields["response_format"] not in (None, "url", "b64_json"):
        raise bad_request("'response_format' must be 'url' or 'b64_json'", "response_format")
    return ImageRequest(
        model=model,
        prompt=prompt,
        n=n,
        passthrough={k: v for k, v in body.items() if k not in IMAGE_FIELDS},
        **fields,
    )


# OpenAI's own limits on one embeddings request.
MAX_EMBEDDING_INPUTS = 2048


def parse_embedding_request(body: object) -> EmbeddingRequest:
    """`POST /v1/embeddings`: `input` a string, strings, token ids or arrays of token ids."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {json_type(body)}", None)
    model = body.get("model", "auto")
    expect(model, str, "model", "a string")
    raw = body.get("input")
    if raw is None:
        raise bad_request("'input' is a required property", "input")
    inputs = _embedding_inputs(raw)
    if not inputs:
        raise bad_request("'input' must not be empty", "input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise bad_request(f"'input' takes at most {MAX_EMBEDDING_INPUTS} items", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return EmbeddingRequest(
        model=model,
        inputs=inputs,
        encoding_format=encoding,
        dimensions=optional_positive_int(body, "dimensions"),
        passthrough={"user": body["user"]} if isinstance(body.get("user"), str) else {},
    )


def _embedding_inputs(raw: object) -> tuple[str | tuple[int, ...], ...]:
    if isinstance(raw, str):
        return (raw,)
    expect(raw, list, "input", "a string, an array of strings or an array of token arrays")
    assert isinstance(raw, list)
    if raw and all(isinstance(item, int) and not isinstance(item, bool) for item in raw):
        return (tuple(raw),)
    inputs: list[str | tuple[int, ...]] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            if not item:
                raise bad_request(f"'input[{i}]' must not be empty", f"input[{i}]")
            inputs.append(item)
        elif (
            isinstance(item, list)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        ):
            inputs.append(tuple(item))
        else:
            raise bad_request(f"'input[{i}]' must be a string or an array of token ids", f"input[{i}]")
    return tuple(inputs)


def embedding_body(
    model: str, vectors: tuple[tuple[float, ...], ...], encoding: str, usage: Usage | None
) -> dict[str, Any]:
    """The `list` of `embedding` objects; base64 is the vector's little-endian float32 bytes, as OpenAI sends it."""
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
        for i, vector in enumerate(vectors)
    ]
    tokens = 0 if usage is None else usage.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: tuple[float, ...], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)


def _tools(raw: object) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    expect(raw, list, "tools", "an array of tools")
    assert isinstance(raw, list)
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        expect(tool, dict, where, "a tool object")
        if tool.get("type", "function") != "function":
            raise bad_request(
                f"'{where}.type' {tool.get('type')!r} is not supported (use 'function')", f"{where}.type"
            )
        function = tool.get("function")
        expect(function, dict, f"{where}.function", "an object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"'{where}.function.name' must be a non-empty string", f"{where}.function.name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        expect(parameters, dict, f"{where}.function.parameters", "a JSON Schema object")
        description = function.get("description")
        if description is not None:
            expect(description, str, f"{where}.function.description", "a string")
        tools.append(ToolSpec(name, description, parameters))
    return tuple(tools)


def _tool_choice(raw: object) -> ToolChoice | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        return ToolChoice(str(raw))
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("function"), dict)
        and isinstance(raw["function"].get("name"), str)
    ):
        return ToolChoice("tool", raw["function"]["name"])
    raise bad_request(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", "
        '"function": {"name": ...}}',
        "tool_choice",
    )


def _response_format(raw: object) -> tuple[str | None, dict[str, Any] | None]:
    if raw is None:
        return None, None
    expect(raw, dict, "response_format", "an object")
    assert isinstance(raw, dict)
    kind = raw.get("type")
    if kind == "text":
        return None, None
    if kind == "json_object":
        return "json_object", None
    if kind == "json_schema":
        schema = raw.get("json_schema")
        expect(schema, dict, "response_format.json_schema", "an object")
        return "json_schema", schema
    raise bad_request(
        "'response_format.type' must be 'text', 'json_object' or 'json_schema'", "response_format.type"
    )


def _message(index: int, raw: object) -> ChatMessage:
    where = f"messages[{index}]"
    expect(raw, dict, where, "a message object")
    assert isinstance(raw, dict)
    role = raw.get("role")
    if role not in ROLES:
        raise bad_request(f"'{where}.role' must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
    raw_content = raw.get("content")
    content: str | tuple[ContentPart, ...] | None
    if isinstance(raw_content, list):
        content = tuple(_part(where, j, part) for j, part in enumerate(raw_content))
    elif raw_content is None or isinstance(raw_content, str):
        content = raw_content
    else:
        raise bad_request(
            f"'{where}.content' must be a string or an array of content parts, got {json_type(raw_content)}",
            f"{where}.content",
        )
    tool_calls = _tool_calls(where, raw.get("tool_calls"))
    if content is None and not tool_calls:
        raise bad_request(f"'{where}.content' is required for role '{role}'", f"{where}.content")
    tool_call_id = raw.get("tool_call_id")
    if role == "tool" and (not isinstance(tool_call_id, str) or not tool_call_id):
        raise bad_request(f"'{where}.tool_call_id' is required for role 'tool'", f"{where}.tool_call_id")
    name = raw.get("name")
    if name is not None:
        expect(name, str, f"{where}.name", "a string")
    return ChatMessage(
        role=role,
        content=content,
        name=name,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id if isinstance(tool_call_id, str) else None,
    )


def _tool_calls(where: str, raw: object) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    expect(raw, list, f"{where}.tool_calls", "an array")
    assert isinstance(raw, list)
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}.tool_calls[{j}]"
        expect(call, dict, at, "an object")
        function = call.get("function")
        expect(function, dict, f"{at}.function", "an object")
        name, arguments, call_id = function.get("name"), function.get("arguments", "{}"), call.get("id")
        if not isinstance(name, str) or not name:
            raise bad_request(f"'{at}.function.name' must be a non-empty string", f"{at}.function.name")
        expect(arguments, str, f"{at}.function.arguments", "a JSON string")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(f"'{at}.id' must be a non-empty string", f"{at}.id")
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def _part(message: str, j: int, part: object) -> ContentPart:
    where = f"{message}.content[{j}]"
    expect(part, dict, where, "a content part object")
    assert isinstance(part, dict)
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return TextPart(part["text"])
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str) and url:
            detail = image.get("detail") if isinstance(image, dict) else None
            return ImagePart(url, detail)
        raise bad_request(f"'{where}.image_url.url' must be a non-empty string", f"{where}.image_url")
    if kind == "text":
        raise bad_request(f"'{where}.text' must be a string", f"{where}.text")
    raise bad_request(
        f"'{where}.type' {kind!r} is not supported (use 'text' or 'image_url')", f"{where}.type"
    )


# --- outbound to clients --------------------------------------------------------------


def usage_body(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cache_read_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cache_read_tokens}
    return body


def tool_call_body(call: ToolCallDelta) -> dict[str, Any]:
    body: dict[str, Any] = {"index": call.index}
    if call.id is not None:
        body["id"] = call.id
        body["type"] = "function"
    function: dict[str, Any] = {"arguments": call.arguments}
    if call.name is not None:
        function["name"] = call.name
    body["function"] = function
    return body


def merge_tool_calls(deltas: list[ToolCallDelta]) -> list[dict[str, Any]]:
    """Fold streamed tool-call fragments into complete calls, in index order."""
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        call = calls.setdefault(
            delta.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.id is not None:
            call["id"] = delta.id
        if delta.name is not None:
            call["function"]["name"] += delta.name
        call["function"]["arguments"] += delta.arguments
    return [calls[i] for i in sorted(calls)]


def completion_body(
    *,
    completion_id: str,
    model: str,
    created: int,
    text: str,
    tool_calls: list[ToolCallDelta],
    finish_reason: str,
    usage: Usage | None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = merge_tool_calls(tool_calls)
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
    }
    body["usage"] = usage_body(usage) if usage else None
    return body


def chunk_body(
    *,
    completion_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def usage_chunk_body(*, completion_id: str, model: str, created: int, usage: Usage) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_body(usage),
    }


def dumps(body: object) -> str:
    """Compact JSON, characters as they are (every chunk of a stream goes through here: orjson)."""
    return orjson.dumps(body).decode()
