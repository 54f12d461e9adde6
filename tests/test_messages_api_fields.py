"""What Claude Code sends to the Messages API beyond plain turns (a system message in the middle of
the conversation, cache breakpoints, thinking settings, images in tool results, documents), and
what each upstream dialect receives of it: pure translations, no I/O."""

from __future__ import annotations

import attrs
import pytest
from relaybox.protocol.chat import ImagePart, TextPart
from relaybox.protocol.errors import RelayError
from relaybox.protocol.wire.anthropic import parse_messages_request
from relaybox.protocol.wire.anthropic_upstream import messages_body
from relaybox.protocol.wire.cli_prompt import flatten
from relaybox.protocol.wire.gemini import generate_body
from relaybox.protocol.wire.openai_upstream import upstream_request_body

PIXEL = "iVBORw0KGgo="
EPHEMERAL = {"type": "ephemeral"}


def claude_code_body(**changes: object) -> dict:
    """The shape Claude Code 2.1.197 sends at its defaults on a resumed session (texts shortened)."""
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 64000,
        "stream": True,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197;"},
            {"type": "text", "text": "You are a Claude agent.", "cache_control": EPHEMERAL},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>date</system-reminder>"},
                    {"type": "text", "text": "say hi"},
                ],
            },
            {"role": "system", "content": "Available agent types for the Agent tool: claude"},
            {"role": "assistant", "content": [{"type": "text", "text": "hi there"}]},
            {"role": "user", "content": [{"type": "text", "text": "and again", "cache_control": EPHEMERAL}]},
        ],
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}],
        "metadata": {"user_id": "{}"},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
    }
    return {**body, **changes}


def test_the_minimal_report_is_accepted() -> None:
    request = parse_messages_request(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "extra"}],
        }
    )
    assert [(m.role, m.text()) for m in request.messages] == [("user", "hi"), ("system", "extra")]


def test_a_late_system_message_stays_in_place_for_openai_and_becomes_a_note_elsewhere() -> None:
    request = parse_messages_request(claude_code_body())
    openai = upstream_request_body(request, "gpt-4o-mini")["messages"]
    assert [m["role"] for m in openai] == ["system", "user", "system", "assistant", "user"]

    anthropic = messages_body(request, "claude-opus-4-8")
    assert [turn["role"] for turn in anthropic["messages"]] == ["user", "assistant", "user"]
    first = [block["text"] for block in anthropic["messages"][0]["content"]]
    assert first[1] == "say hi" and "Available agent types" in first[2] and "<system-reminder>" in first[2]
    assert "Available agent types" not in str(anthropic["system"])

    gemini = generate_body(request)
    assert [turn["role"] for turn in gemini["contents"]] == ["user", "model", "user"]
    assert "Available agent types" in gemini["contents"][0]["parts"][-1]["text"]
    assert "Available agent types" not in gemini["systemInstruction"]["parts"][0]["text"]

    prompt = flatten(request, inline_system=True)
    assert prompt.index("say hi") < prompt.index("Available agent types") < prompt.index("hi there")
    assert prompt.rstrip().endswith("and again")


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        # After a tool's result, the note waits for the user's next words (results come first).
        (
            [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "system", "content": "late"},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
            ],
            [("user", ["go"]), ("assistant", ["tool_use"]), ("user", ["tool_result", "late"])],
        ),
        # Before the assistant speaks, a note with no user turn beside it is a user turn of its own.
        (
            [
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
                {"role": "system", "content": "late"},
                {"role": "assistant", "content": "done"},
            ],
            [("user", ["tool_result", "late"]), ("assistant", ["done"])],
        ),
    ],
)
def test_a_note_never_comes_between_a_tool_call_and_its_result(messages: list, expected: list) -> None:
    body = messages_body(parse_messages_request({"model": "m", "max_tokens": 5, "messages": messages}), "m")

    def shown(block: dict) -> str:
        text = block.get("text", "")
        return "late" if "late" in text else (text or block["type"])

    assert [(t["role"], [shown(b) for b in t["content"]]) for t in body["messages"]] == expected


def test_cache_breakpoints_reach_anthropic_at_most_four_and_the_latest() -> None:
    request = parse_messages_request(claude_code_body())
    body = messages_body(request, "claude-opus-4-8")
    assert body["system"] == [{"type": "text", "text": request.system_text(), "cache_control": EPHEMERAL}]
    assert body["messages"][-1]["content"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in body["messages"][0]["content"][-1]

    marked = [
        {"role": role, "content": [{"type": "text", "text": f"t{i}", "cache_control": EPHEMERAL}]}
        for i, role in enumerate(["user", "assistant"] * 3)
    ]
    many = messages_body(parse_messages_request(claude_code_body(messages=marked)), "m")
    kept = [b["text"] for t in many["messages"] for b in t["content"] if "cache_control" in b]
    assert kept == ["t2", "t3", "t4", "t5"] and "cache_control" not in many["system"][0]
    # Nothing asked, nothing added: a plain request's system prompt stays a string.
    plain = parse_messages_request({"model": "m", "max_tokens": 5, "system": "s", "messages": [marked[0]]})
    assert messages_body(plain, "m")["system"] == "s"


def test_thinking_and_effort_settings_are_accepted_and_earlier_thinking_is_left_out() -> None:
    body = claude_code_body()
    body["messages"][2]["content"].insert(0, {"type": "thinking", "thinking": "hm", "signature": "sig"})
    request = parse_messages_request(body)
    upstream = messages_body(request, "claude-opus-4-8")
    assert "thinking" not in upstream and "output_config" not in upstream
    assert [b["type"] for b in upstream["messages"][1]["content"]] == ["text"]


def test_images_in_a_tool_result_follow_it_in_the_users_turn() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}
    request = parse_messages_request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "r", "name": "Read", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "r",
                            "content": [{"type": "text", "text": "a png"}, image],
                        }
                    ],
                },
            ],
        }
    )
    tool, user = request.messages[1:]
    assert tool.role == "tool" and tool.text() == "a png"
    assert user.role == "user" and isinstance(user.content, tuple)
    assert user.content == (
        TextPart("[images returned by tool call r]"),
        ImagePart(f"data:image/png;base64,{PIXEL}"),
    )


def test_documents_as_text_are_read_and_a_pdf_is_refused_by_name() -> None:
    def with_document(source: dict) -> dict:
        block = {"type": "document", "title": "notes", "source": source}
        return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}

    text = parse_messages_request(with_document({"type": "text", "media_type": "text/plain", "data": "abc"}))
    assert text.messages[0].text() == '<document title="notes">\nabc\n</document>'
    with pytest.raises(RelayError) as refused:
        parse_messages_request(
            with_document({"type": "base64", "media_type": "application/pdf", "data": "x"})
        )
    assert refused.value.status == 400 and "plain-text documents" in refused.value.message
    with pytest.raises(RelayError) as odd:
        parse_messages_request(
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": [{"type": "image"}]}]}
        )
    assert "'image' is not supported in a system message" in odd.value.message


def test_with_no_limit_asked_anthropic_is_asked_for_what_the_model_can_write() -> None:
    request = parse_messages_request(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    unlimited = attrs.evolve(request, max_tokens=None)
    assert messages_body(unlimited, "claude-sonnet-4-5")["max_tokens"] == 32_000
    assert messages_body(unlimited, "claude-3-5-haiku-latest")["max_tokens"] == 8192
    assert messages_body(unlimited, "claude-3-haiku-20240307")["max_tokens"] == 4096
    assert messages_body(request, "claude-sonnet-4-5")["max_tokens"] == 5
