"""OpenAI's Responses API as relaybox serves it (`POST /v1/responses`, answered by any provider): a
client's body becomes a `ResponsesRequest`, whose input items, after those of the responses it
continues, become the neutral `ChatRequest`. What goes back to the client is `responses_output.py`.

Only function tools (and the Codex CLI's `namespace` and `custom` forms of them) reach a model: the
API's hosted tools (web search, file search, code interpreter...) need OpenAI's own servers, so
they are left out of the request and named in `dropped_tools`, which the response's warning header
reports. A `tool_choice` that forces one of them is a 400, since it cannot be honoured.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from relaybox.protocol.chat import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    ImagePart,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from relaybox.protocol.names import check_name
from relaybox.protocol.wire.openai import (
    bad_request,
    expect,
    json_type,
    optional_number,
    optional_positive_int,
)

# Tools that run on OpenAI's servers, not in the client: no other provider can run them.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "image_generation",
        "mcp",
        "local_shell",
    }
)
# Items of earlier turns that carry nothing another model can use (reasoning is encrypted or
# OpenAI's own; a hosted tool's call ran on OpenAI's servers).
SKIPPED_ITEMS = frozenset(
    {"reasoning", "web_search_call", "file_search_call", "image_generation_call", "compaction"}
)
# Parameters a chat-completions upstream takes under the same name.
PASSTHROUGH = ("top_p", "parallel_tool_calls", "user", "service_tier")
METADATA_KEYS = 16
METADATA_VALUE_CHARS = 512


@attrs.frozen
class ResponsesRequest:
    """A validated Responses request. `chat` holds this request's own input only; `conversation`
    puts the continued responses' items before it."""

    chat: ChatRequest
    input_items: tuple[dict[str, Any], ...]  # as the client sent them, normalised to item objects
    instructions: str | None = None
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] = attrs.field(factory=dict)
    # Tools given in the `custom` form: their single text input travels as {"input": ...}.
    custom_tools: frozenset[str] = frozenset()
    # A namespaced tool's name -> its namespace, to name it again on the calls the model makes.
    namespaces: dict[str, str] = attrs.field(factory=dict)
    dropped_tools: tuple[str, ...] = ()
    # What the response object repeats back to the client.
    echo: dict[str, Any] = attrs.field(factory=dict)


def parse_responses_request(body: object) -> ResponsesRequest:
    """Validate a client's JSON body; raise a 400 `RelayError` naming the field otherwise."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {json_type(body)}", None)
    model = body.get("model")
    if model is None:
        raise bad_request("'model' is a required property", "model")
    expect(model, str, "model", "a string")
    if not model.strip():
        raise bad_request("'model' must not be empty (GET /v1/models lists the valid names)", "model")
    items = _input_items(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None:
        expect(instructions, str, "instructions", "a string")
    stream = body.get("stream") or False
    expect(stream, bool, "stream", "a boolean")
    store = body.get("store", True)
    expect(store, bool, "store", "a boolean")
    previous = body.get("previous_response_id")
    if previous is not None:
        expect(previous, str, "previous_response_id", "a string")
        check_name(previous, "previous_response_id")  # looked up in storage before the call
    tools, custom, namespaces, dropped = _tools(body.get("tools"))
    response_format, json_schema = _text_format(body.get("text"))
    passthrough = {key: body[key] for key in PASSTHROUGH if body.get(key) is not None}
    reasoning = body.get("reasoning")
    if reasoning is not None:
        expect(reasoning, dict, "reasoning", "an object")
        if isinstance(reasoning.get("effort"), str):
            passthrough["reasoning_effort"] = reasoning["effort"]
    chat = ChatRequest(
        model=model,
        messages=messages_of(items, "input"),
        stream=stream,
        include_usage=True,
        temperature=optional_number(body, "temperature", 0, 2),
        max_tokens=optional_positive_int(body, "max_output_tokens"),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice")),
        response_format=response_format,
        json_schema=json_schema,
        passthrough=passthrough,
    )
    return ResponsesRequest(
        chat=chat,
        input_items=items,
        instructions=instructions,
        store=store,
        previous_response_id=previous,
        metadata=_metadata(body.get("metadata")),
        custom_tools=custom,
        namespaces=namespaces,
        dropped_tools=dropped,
        echo={
            key: body.get(key)
            for key in (
                "tools",
                "tool_choice",
                "temperature",
                "top_p",
                "max_output_tokens",
                "parallel_tool_calls",
                "text",
                "reasoning",
                "user",
            )
        },
    )


def conversation(request: ResponsesRequest, earlier_items: list[dict[str, Any]]) -> ChatRequest:
    """The whole conversation for a model: the instructions, the items of the responses this one
    continues (each one's input, then its output), then this request's input."""
    messages = messages_of(tuple(earlier_items), "previous_response_id") + request.chat.messages
    if request.instructions:
        messages = (ChatMessage("system", request.instructions), *messages)
    if not any(message.role != "system" for message in messages):
        raise bad_request("'input' must contain at least one item", "input")
    return attrs.evolve(request.chat, messages=messages)


# --- input items -------------------------------------------------------------------------


def _input_items(raw: object) -> tuple[dict[str, Any], ...]:
    if raw is None:
        raise bad_request("'input' is a required property", "input")
    if isinstance(raw, str):
        return ({"type": "message", "role": "user", "content": raw},)
    expect(raw, list, "input", "a string or an array of input items")
    assert isinstance(raw, list)
    items = []
    for i, item in enumerate(raw):
        expect(item, dict, f"input[{i}]", "an input item object")
        items.append(item if "type" in item else {"type": "message", **item})
    return tuple(items)


def messages_of(items: tuple[dict[str, Any], ...], param: str) -> tuple[ChatMessage, ...]:
    """Input items as chat messages: an assistant's text and the function calls after it are one
    assistant message, each call's output a tool message."""
    messages: list[ChatMessage] = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        kind = item.get("type")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind in ("function_call", "custom_tool_call"):
            call = _call(item, where)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                messages[-1] = attrs.evolve(last, tool_calls=(*last.tool_calls, call))
            else:
                messages.append(ChatMessage("assistant", None, tool_calls=(call,)))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append(_call_output(item, where))
        elif kind in SKIPPED_ITEMS:
            continue
        else:
            raise bad_request(
                f"'{where}.type' {kind!r} is not supported (use 'message', 'function_call', "
                "'function_call_output', 'custom_tool_call' or 'custom_tool_call_output')",
                f"{where}.type",
            )
    return tuple(messages)


def _message(item: dict[str, Any], where: str) -> ChatMessage:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise bad_request(
            f"'{where}.role' must be one of user, assistant, system, developer, got {role!r}", f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return ChatMessage(role, content)
    expect(content, list, f"{where}.content", "a string or an array of content parts")
    parts = tuple(_part(part, f"{where}.content[{j}]") for j, part in enumerate(content))
    if all(isinstance(part, TextPart) for part in parts):
        # Text alone travels as a string, which every provider (the CLIs too) takes as it is.
        return ChatMessage(role, "".join(part.text for part in parts if isinstance(part, TextPart)))
    return ChatMessage(role, parts)


def _part(part: object, where: str) -> ContentPart:
    expect(part, dict, where, "a content part object")
    assert isinstance(part, dict)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        expect(part.get("text"), str, f"{where}.text", "a string")
        return TextPart(part["text"])
    if kind == "refusal":
        expect(part.get("refusal"), str, f"{where}.refusal", "a string")
        return TextPart(part["refusal"])
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise bad_request(
                f"'{where}.image_url' must be a URL or a data: URL (file ids are not supported)",
                f"{where}.image_url",
            )
        detail = part.get("detail")
        return ImagePart(url, detail if isinstance(detail, str) else None)
    raise bad_request(
        f"'{where}.type' {kind!r} is not supported (use 'input_text', 'output_text' or 'input_image')",
        f"{where}.type",
    )


def _call(item: dict[str, Any], where: str) -> ToolCall:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"'{where}.call_id' must be a non-empty string", f"{where}.call_id")
    if not isinstance(name, str) or not name:
        raise bad_request(f"'{where}.name' must be a non-empty string", f"{where}.name")
    if item["type"] == "custom_tool_call":
        expect(item.get("input"), str, f"{where}.input", "a string")
        return ToolCall(call_id, name, json.dumps({"input": item["input"]}))
    arguments = item.get("arguments", "{}")
    expect(arguments, str, f"{where}.arguments", "a JSON string")
    return ToolCall(call_id, name, arguments)


def _call_output(item: dict[str, Any], where: str) -> ChatMessage:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"'{where}.call_id' must be a non-empty string", f"{where}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        # Parts (text, images) given as a tool's output: the text is what every provider takes.
        output = "".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
    expect(output, str, f"{where}.output", "a string or an array of content parts")
    return ChatMessage("tool", output, tool_call_id=call_id)


# --- tools -------------------------------------------------------------------------------


def _tools(raw: object) -> tuple[tuple[ToolSpec, ...], frozenset[str], dict[str, str], tuple[str, ...]]:
    if raw is None:
        return (), frozenset(), {}, ()
    expect(raw, list, "tools", "an array of tools")
    assert isinstance(raw, list)
    tools: list[ToolSpec] = []
    custom: set[str] = set()
    namespaces: dict[str, str] = {}
    dropped: list[str] = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        expect(tool, dict, where, "a tool object")
        kind = tool.get("type")
        if kind == "function":
            tools.append(_function(tool, where))
        elif kind == "custom":
            tools.append(_custom(tool, where))
            custom.add(tools[-1].name)
        elif kind == "namespace":
            expect(tool.get("tools"), list, f"{where}.tools", "an array of function tools")
            for j, inner in enumerate(tool["tools"]):
                expect(inner, dict, f"{where}.tools[{j}]", "a function tool object")
                tools.append(_function(inner, f"{where}.tools[{j}]"))
                namespaces[tools[-1].name] = str(tool.get("name", ""))
        elif kind in HOSTED_TOOLS:
            dropped.append(kind)
        else:
            raise bad_request(
                f"'{where}.type' {kind!r} is not supported (use 'function' or 'custom')", f"{where}.type"
            )
    return tuple(tools), frozenset(custom), namespaces, tuple(dropped)


def _function(tool: dict[str, Any], where: str) -> ToolSpec:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"'{where}.name' must be a non-empty string", f"{where}.name")
    parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    expect(parameters, dict, f"{where}.parameters", "a JSON Schema object")
    description = tool.get("description")
    if description is not None:
        expect(description, str, f"{where}.description", "a string")
    return ToolSpec(name, description, parameters)


def _custom(tool: dict[str, Any], where: str) -> ToolSpec:
    """A free-form tool (its input one text, maybe under a grammar) as a function of one string."""
    spec = _function({**tool, "parameters": None}, where)
    grammar = tool.get("format")
    note = ""
    if isinstance(grammar, dict) and isinstance(grammar.get("definition"), str):
        note = f" It must follow this {grammar.get('syntax', '')} grammar:\n{grammar['definition']}"
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": f"The tool's whole input.{note}"}},
        "required": ["input"],
    }
    return attrs.evolve(spec, parameters=parameters)


def _tool_choice(raw: object) -> ToolChoice | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        return ToolChoice(str(raw))
    if (
        isinstance(raw, dict)
        and raw.get("type") in ("function", "custom")
        and isinstance(raw.get("name"), str)
    ):
        return ToolChoice("tool", raw["name"])
    if isinstance(raw, dict) and raw.get("type") in HOSTED_TOOLS:
        raise bad_request(
            f"'tool_choice' forces the hosted tool {raw['type']!r}, which only OpenAI's servers run",
            "tool_choice",
        )
    raise bad_request(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}",
        "tool_choice",
    )


def _text_format(raw: object) -> tuple[str | None, dict[str, Any] | None]:
    if raw is None:
        return None, None
    expect(raw, dict, "text", "an object")
    assert isinstance(raw, dict)
    fmt = raw.get("format")
    if fmt is None:
        return None, None
    expect(fmt, dict, "text.format", "an object")
    kind = fmt.get("type")
    if kind == "text":
        return None, None
    if kind == "json_object":
        return "json_object", None
    if kind == "json_schema":
        expect(fmt.get("schema"), dict, "text.format.schema", "a JSON Schema object")
        name = fmt.get("name") or "response"
        expect(name, str, "text.format.name", "a string")
        schema = {"name": name, "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        return "json_schema", schema
    raise bad_request("'text.format.type' must be 'text', 'json_object' or 'json_schema'", "text.format.type")


def _metadata(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    expect(raw, dict, "metadata", "an object of strings")
    assert isinstance(raw, dict)
    if len(raw) > METADATA_KEYS:
        raise bad_request(f"'metadata' takes at most {METADATA_KEYS} keys", "metadata")
    for key, value in raw.items():
        check_name(key, "metadata")  # kept with the stored response
        if not isinstance(value, str) or len(value) > METADATA_VALUE_CHARS:
            raise bad_request(
                f"'metadata.{key}' must be a string of at most {METADATA_VALUE_CHARS} characters",
                f"metadata.{key}",
            )
    return dict(raw)
