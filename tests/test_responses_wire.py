"""The Responses API's wire format, pure: input items to the neutral request, events to typed SSE."""

from __future__ import annotations

import json
from typing import Any

import pytest
from relaybox.protocol.chat import ChatMessage, ImagePart, TextPart, ToolCall
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import ContentDelta, ToolCallDelta, Usage
from relaybox.protocol.wire.responses import conversation, parse_responses_request
from relaybox.protocol.wire.responses_output import ResponseShape, ResponsesStreamRenderer, output_items


def parsed(**body: Any) -> Any:
    return parse_responses_request({"model": "auto", "input": "hi", **body})


def events(stream: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in stream.decode().splitlines()
        if line.startswith("data: ")
    ]


def test_items_become_messages_with_calls_merged_into_the_assistant_turn() -> None:
    request = parsed(
        instructions="Be brief.",
        input=[
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look: "},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "encrypted_content": "opaque"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {"type": "function_call", "call_id": "c1", "name": "ls", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "function_call_output", "call_id": "c1", "output": "a.py"},
            {
                "type": "custom_tool_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "ok"}],
            },
        ],
    )
    messages = conversation(request, []).messages
    assert messages[0] == ChatMessage("system", "Be brief.")
    assert messages[1] == ChatMessage("developer", "Rules.")
    assert messages[2].content == (TextPart("Look: "), ImagePart("data:image/png;base64,AAAA"))
    assert messages[3] == ChatMessage(
        "assistant",
        "Checking.",
        tool_calls=(
            ToolCall("c1", "ls", "{}"),
            ToolCall("c2", "apply_patch", '{"input": "*** Begin Patch"}'),
        ),
    )
    assert messages[4:] == (
        ChatMessage("tool", "a.py", tool_call_id="c1"),
        ChatMessage("tool", "ok", tool_call_id="c2"),
    )


def test_earlier_items_go_before_this_requests_input_and_after_the_instructions() -> None:
    request = parsed(instructions="New rules.", input="and now?")
    earlier = [
        {"type": "message", "role": "user", "content": "first"},
        {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "one", "annotations": []}],
        },
    ]
    roles = [(m.role, m.text()) for m in conversation(request, earlier).messages]
    assert roles == [("system", "New rules."), ("user", "first"), ("assistant", "one"), ("user", "and now?")]


def test_tools_in_every_form_and_what_is_left_out() -> None:
    request = parsed(
        tools=[
            {
                "type": "function",
                "name": "exec",
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
            },
            {
                "type": "custom",
                "name": "apply_patch",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"},
            },
            {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "spawn_agent"}]},
            {"type": "web_search", "external_web_access": False},
        ],
        tool_choice={"type": "function", "name": "exec"},
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        reasoning={"effort": "low", "summary": "auto"},
        max_output_tokens=99,
    )
    chat = request.chat
    assert [tool.name for tool in chat.tools] == ["exec", "apply_patch", "spawn_agent"]
    assert chat.tools[1].parameters["required"] == ["input"]
    assert "start: x" in chat.tools[1].parameters["properties"]["input"]["description"]
    assert request.custom_tools == frozenset({"apply_patch"}) and request.namespaces == {
        "spawn_agent": "agents"
    }
    assert request.dropped_tools == ("web_search",)
    assert chat.tool_choice is not None and chat.tool_choice.name == "exec"
    assert chat.response_format == "json_schema"
    assert chat.json_schema == {"name": "out", "schema": {"type": "object"}, "strict": True}
    assert chat.passthrough["reasoning_effort"] == "low" and chat.max_tokens == 99


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 3}, "input"),
        ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"type": "function_call", "name": "x", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]}, "input[0].output"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"stream": "yes"}, "stream"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"temperature": 3}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_bad_fields_are_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RelayError) as caught:
        parsed(**body)
    assert caught.value.status == 400 and caught.value.param == param


def shape(**body: Any) -> ResponseShape:
    return ResponseShape("resp_abc", 1_800_000_000, "small", parsed(**body))


def test_whole_output_names_custom_and_namespaced_calls_as_the_client_gave_them() -> None:
    s = shape(
        tools=[
            {"type": "custom", "name": "apply_patch"},
            {"type": "namespace", "name": "agents", "tools": [{"type": "function", "name": "spawn_agent"}]},
        ]
    )
    calls = [
        {"id": "c1", "function": {"name": "apply_patch", "arguments": '{"input": "*** Begin Patch"}'}},
        {"id": "c2", "function": {"name": "spawn_agent", "arguments": "{}"}},
    ]
    first, second = output_items(s, "", calls)
    assert (
        first["type"] == "custom_tool_call"
        and first["input"] == "*** Begin Patch"
        and first["call_id"] == "c1"
    )
    assert second["type"] == "function_call" and second["namespace"] == "agents"
    body = s.body(status="completed", output=[first, second], finish_reason="length")
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_stream_that_turns_from_text_to_two_calls_closes_each_item_before_the_next() -> None:
    renderer = ResponsesStreamRenderer(shape())
    stream = renderer.start() + renderer.text(ContentDelta("Let me "))
    stream += renderer.text(ContentDelta("look."))
    stream += renderer.tool(ToolCallDelta(0, "call_1", "ls", '{"pa'))
    stream += renderer.tool(ToolCallDelta(0, None, None, 'th": "."}'))
    stream += renderer.tool(ToolCallDelta(1, "call_2", "pwd", "{}"))
    renderer.usage = Usage(5, 6)
    stream += renderer.finish("tool_calls")
    seen = events(stream)
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert [e["type"] for e in seen] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    completed = seen[-1]["response"]
    assert [item["type"] for item in completed["output"]] == ["message", "function_call", "function_call"]
    assert completed["output"][0]["content"][0]["text"] == "Let me look."
    assert completed["output"][1]["arguments"] == '{"path": "."}'
    assert [e["output_index"] for e in seen if e["type"] == "response.output_item.done"] == [0, 1, 2]
    assert completed["usage"]["total_tokens"] == 11 and renderer.final == completed


def test_a_failure_mid_stream_ends_with_response_failed() -> None:
    renderer = ResponsesStreamRenderer(shape())
    stream = renderer.start() + renderer.text(ContentDelta("par"))
    stream += renderer.error(RelayError(502, "the upstream reset", "upstream_error", code="broken_stream"))
    last = events(stream)[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"] == {"code": "broken_stream", "message": "the upstream reset"}
    assert renderer.final is None, "a failed response is not stored"
