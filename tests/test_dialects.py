"""Pure translation tests per dialect: schemas, stream decoding, errors, usage."""

from __future__ import annotations

import json

import pytest
from relaybox.protocol.chat import ChatMessage, ChatRequest, ToolChoice, ToolSpec
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, ToolCallDelta, Usage
from relaybox.protocol.wire.anthropic import MessagesStreamRenderer, parse_messages_request
from relaybox.protocol.wire.anthropic_upstream import AnthropicStreamDecoder
from relaybox.protocol.wire.gemini import GeminiDialect, from_gemini_schema, generate_body, to_gemini_schema
from relaybox.protocol.wire.ollama import OllamaStreamDecoder

JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "description": "who"},
        "age": {"type": ["integer", "null"], "minimum": 0},
        "kind": {"const": "person"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
        "nick": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["name"],
    "$defs": {"tag": {"type": "string", "enum": ["a", "b"]}},
}


def test_json_schema_to_gemini_schema_and_back() -> None:
    gemini = to_gemini_schema(JSON_SCHEMA)
    assert gemini == {
        "type": "OBJECT",
        "required": ["name"],
        "properties": {
            "name": {"type": "STRING", "description": "who"},
            "age": {"type": "INTEGER", "nullable": True, "minimum": 0},
            "kind": {"type": "STRING", "enum": ["person"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}},
            "nick": {"type": "STRING", "nullable": True},
        },
    }
    back = from_gemini_schema(gemini)
    assert back["properties"]["age"] == {"type": ["integer", "null"], "minimum": 0}
    assert back["properties"]["tags"]["items"] == {"type": "string", "enum": ["a", "b"]}
    assert to_gemini_schema(back) == gemini, "one definition, converted both ways"


def test_gemini_request_maps_roles_system_tools_and_results() -> None:
    from relaybox.protocol.chat import ToolCall

    request = ChatRequest(
        model="m",
        temperature=0.3,
        max_tokens=10,
        stop=("X",),
        response_format="json_object",
        tools=(ToolSpec("lookup", "Find", {"type": "object", "properties": {"q": {"type": "string"}}}),),
        tool_choice=ToolChoice("tool", "lookup"),
        messages=(
            ChatMessage("system", "Sys."),
            ChatMessage("user", "q?"),
            ChatMessage("assistant", None, tool_calls=(ToolCall("c9", "lookup", '{"q": "x"}'),)),
            ChatMessage("tool", "plain text result", tool_call_id="c9"),
        ),
    )
    body = generate_body(request)
    assert body["systemInstruction"] == {"parts": [{"text": "Sys."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "lookup", "args": {"q": "x"}}}]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"result": "plain text result"}}}
    ]
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "maxOutputTokens": 10,
        "stopSequences": ["X"],
        "responseMimeType": "application/json",
    }
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}
    }
    call = GeminiDialect().call(
        ChatRequest(model="m", messages=(ChatMessage("user", "x"),), stream=True), "gemini-2.5-flash", "key"
    )
    assert call.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert call.headers == {"x-goog-api-key": "key"}


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def test_anthropic_stream_with_tool_use_split_and_cache_usage() -> None:
    stream = b"".join(
        [
            sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "usage": {
                            "input_tokens": 5,
                            "cache_read_input_tokens": 100,
                            "cache_creation_input_tokens": 20,
                        }
                    },
                },
            ),
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "thinking", "thinking": ""},
                },
            ),
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": "hmm"},
                },
            ),
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                },
            ),
            *[
                sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": p},
                    },
                )
                for p in ['{"a"', ": 1", "}"]
            ],
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 9},
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]
    )
    decoder = AnthropicStreamDecoder()
    events = [
        e for i in range(0, len(stream), 17) for e in decoder.feed(stream[i : i + 17])
    ] + decoder.close()
    assert events == [
        ToolCallDelta(0, "t1", "f", ""),
        ToolCallDelta(0, arguments='{"a"'),
        ToolCallDelta(0, arguments=": 1"),
        ToolCallDelta(0, arguments="}"),
        Usage(125, 9, cache_read_tokens=100, cache_write_tokens=20),
    ]
    assert decoder.finish_reason == "tool_calls"


def test_anthropic_stream_error_event_and_truncation() -> None:
    decoder = AnthropicStreamDecoder()
    with pytest.raises(ProviderFailure) as caught:
        decoder.feed(
            sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
        )
    assert caught.value.kind is FailureKind.SERVER_ERROR
    truncated = AnthropicStreamDecoder()
    truncated.feed(
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}},
        )
    )
    with pytest.raises(ProviderFailure, match="ended before"):
        truncated.close()


def test_ollama_ndjson_split_anywhere_and_error_lines() -> None:
    lines = (
        b'{"message": {"role": "assistant", "content": "he"}, "done": false}\n'
        b'{"message": {"role": "assistant", "content": "llo"}, "done": false}\n'
        b'{"message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "length", '
        b'"prompt_eval_count": 4, "eval_count": 2}\n'
    )
    decoder = OllamaStreamDecoder()
    events = [e for i in range(len(lines)) for e in decoder.feed(lines[i : i + 1])] + decoder.close()
    assert events == [ContentDelta("he"), ContentDelta("llo"), Usage(4, 2)]
    assert decoder.finish_reason == "length"
    with pytest.raises(ProviderFailure, match="model crashed"):
        OllamaStreamDecoder().feed(b'{"error": "model crashed"}\n')


def test_inbound_messages_request_tool_results_and_renderer_blocks() -> None:
    request = parse_messages_request(
        {
            "model": "x",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "Sys"}],
            "tools": [
                {"name": "f", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "ws"},
            ],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "..."},
                        {"type": "text", "text": "ok"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "done"},
                        {"type": "text", "text": "next?"},
                    ],
                },
            ],
        }
    )
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert request.messages[2].tool_calls[0].arguments == '{"a": 1}'
    assert request.messages[3].tool_call_id == "t1" and request.messages[3].text() == "done"
    assert [t.name for t in request.tools] == ["f"] and request.tool_choice == ToolChoice("required")
    renderer = MessagesStreamRenderer("msg_1", "m")
    out = (
        renderer.start()
        + renderer.text(ContentDelta("a"))
        + renderer.tool(ToolCallDelta(0, "c", "f", "{"))
        + renderer.tool(ToolCallDelta(0, arguments="}"))
        + renderer.finish("tool_calls")
    ).decode()
    kinds = [line.removeprefix("event: ") for line in out.splitlines() if line.startswith("event: ")]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert '"stop_reason":"tool_use"' in out
