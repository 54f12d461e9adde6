"""Pure wire code: SSE framing, OpenAI dialect both ways, the Claude CLI's stream-json, the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from relaybox.protocol.chat import ChatMessage, ChatRequest, ImagePart, TextPart, ToolCall, ToolSpec
from relaybox.protocol.errors import FailureKind, ProviderFailure, RelayError
from relaybox.protocol.events import ContentDelta, ToolCallDelta, Usage
from relaybox.protocol.routing.catalog import Candidate, Catalog, ModelEntry, ProviderModels
from relaybox.protocol.wire.claude_cli import (
    ClaudeStreamDecoder,
    SystemPromptStrategy,
    build_argv,
    build_prompt,
    classify_error,
)
from relaybox.protocol.wire.openai import merge_tool_calls, parse_chat_request
from relaybox.protocol.wire.openai_upstream import decode_upstream_chunk, upstream_request_body
from relaybox.protocol.wire.sse import SSEDecoder, SSEvent

GOLDEN = Path(__file__).parent / "golden"


# --- SSE ------------------------------------------------------------------------------


def test_sse_decoder_is_indifferent_to_chunk_boundaries() -> None:
    stream = (
        'event: a\r\ndata: {"x": "é"}\r\n\r\n: comment\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n'
    ).encode()
    expected = [SSEvent('{"x": "é"}', "a"), SSEvent("line1\nline2"), SSEvent("[DONE]")]
    for size in (1, 2, 3, 7, len(stream)):
        decoder = SSEDecoder()
        events = []
        for i in range(0, len(stream), size):
            events += decoder.feed(stream[i : i + size])
        assert events == expected, size


def test_sse_decoder_flushes_an_unterminated_event_and_limits_line_size() -> None:
    decoder = SSEDecoder(max_line=10)
    assert decoder.feed(b"data: tail") == []
    assert decoder.close() == [SSEvent("tail")]
    with pytest.raises(ValueError, match="size limit"):
        decoder.feed(b"x" * 11)


# --- OpenAI dialect -------------------------------------------------------------------


def test_parse_keeps_content_parts_and_forwards_known_parameters() -> None:
    request = parse_chat_request(
        {
            "model": "gpt-4o",
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": 9,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                        },
                    ],
                }
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "seed": 1,
            "unknown_vendor_field": True,
        }
    )
    assert request.messages[0].content == (TextPart("look"), ImagePart("data:image/png;base64,AA", "low"))
    assert request.include_usage and request.max_tokens == 9
    assert request.passthrough == {"seed": 1}
    assert request.tools == (ToolSpec("f", None, {"type": "object", "properties": {}}),)


def test_upstream_body_round_trips_messages_and_always_asks_for_usage() -> None:
    request = ChatRequest(
        model="x",
        stream=True,
        temperature=0.2,
        max_tokens=5,
        stop=("END",),
        passthrough={"seed": 3},
        messages=(
            ChatMessage("system", "s"),
            ChatMessage("user", (TextPart("a"), ImagePart("http://i"))),
            ChatMessage(
                "assistant",
                None,
                tool_calls=(ToolCall("c1", "f", "{}"),),
            ),
            ChatMessage("tool", "42", tool_call_id="c1"),
        ),
    )
    body = upstream_request_body(request, "gpt-4o")
    assert body["model"] == "gpt-4o" and body["seed"] == 3 and body["stop"] == ["END"]
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "http://i"}},
    ]
    assert body["messages"][2]["tool_calls"][0]["id"] == "c1"
    assert body["messages"][3] == {"role": "tool", "content": "42", "tool_call_id": "c1"}


def test_chunk_decoding_keeps_tool_call_fragments_and_usage() -> None:
    events, finish = decode_upstream_chunk(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "call_1", "function": {"name": "get", "arguments": '{"a"'}}
                        ]
                    },
                    "finish_reason": None,
                }
            ]
        }
    )
    more, finish2 = decode_upstream_chunk(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": 4,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 3},
            },
        }
    )
    assert finish is None and finish2 == "tool_calls"
    calls = [e for e in events + more if isinstance(e, ToolCallDelta)]
    assert merge_tool_calls(calls) == [
        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}
    ]
    assert more[-1] == Usage(4, 2, cache_read_tokens=3)


def test_chunk_decoding_rejects_garbage_and_surfaces_upstream_errors() -> None:
    with pytest.raises(ValueError):
        decode_upstream_chunk([1])
    with pytest.raises(Exception, match="overloaded"):
        decode_upstream_chunk({"error": {"message": "overloaded"}})


# --- Claude CLI -----------------------------------------------------------------------


def test_golden_success_stream_decodes_to_deltas_once_and_usage() -> None:
    decoder = ClaudeStreamDecoder()
    events = [
        e
        for line in (GOLDEN / "claude_cli_stream_success.jsonl").read_bytes().splitlines()
        for e in decoder.feed(line)
    ]
    assert events == [
        ContentDelta("Hello t"),
        ContentDelta("here, f"),
        ContentDelta("riend."),
        Usage(11, 7, reported_cost_usd=0.000138),
    ]
    assert decoder.finish_reason == "stop" and decoder.session_model == "claude-sonnet-5"


@pytest.mark.parametrize(
    ("golden", "kind", "status"),
    [
        ("claude_cli_stream_auth_error.jsonl", FailureKind.AUTH, 401),
        ("claude_cli_stream_rate_limited.jsonl", FailureKind.RATE_LIMITED, 429),
        ("claude_cli_stream_overloaded.jsonl", FailureKind.SERVER_ERROR, 529),
    ],
)
def test_golden_error_streams_map_to_failure_kinds(golden: str, kind: FailureKind, status: int) -> None:
    decoder = ClaudeStreamDecoder()
    with pytest.raises(ProviderFailure) as caught:
        for line in (GOLDEN / golden).read_bytes().splitlines():
            assert decoder.feed(line) == []
    assert caught.value.kind is kind and caught.value.upstream_status == status


def test_noise_lines_and_rate_limit_resets_are_understood() -> None:
    decoder = ClaudeStreamDecoder(now=1000.0)
    assert decoder.feed(b"Warning: 256-color support not detected") == []
    decoder.feed(
        json.dumps(
            {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected", "resetsAt": 1600}}
        ).encode()
    )
    with pytest.raises(ProviderFailure) as caught:
        decoder.feed(
            json.dumps(
                {
                    "type": "result",
                    "subtype": "success",
                    "is_error": True,
                    "result": "You've hit your limit · resets 5pm",
                }
            ).encode()
        )
    assert caught.value.kind is FailureKind.RATE_LIMITED and caught.value.retry_after == 600


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Not logged in · Please run /login", FailureKind.AUTH),
        ("OAuth token has expired", FailureKind.AUTH),
        ("Claude AI usage limit reached", FailureKind.RATE_LIMITED),
        ("API Error: 529 Overloaded", FailureKind.SERVER_ERROR),
        ("segfault", FailureKind.TRANSPORT),
    ],
)
def test_error_text_classification(text: str, kind: FailureKind) -> None:
    assert classify_error(text).kind is kind


def test_argv_is_lean_and_prompt_never_goes_to_argv() -> None:
    argv = build_argv("claude", "sonnet", "Be brief.", SystemPromptStrategy.REPLACE)
    assert argv[:2] == ["claude", "-p"]
    assert argv[argv.index("--tools") : argv.index("--tools") + 2] == ["--tools", ""]
    assert "--strict-mcp-config" in argv and "--no-session-persistence" in argv
    assert argv[argv.index("--system-prompt") + 1] == "Be brief."
    appended = build_argv("claude", "opus", "Be brief.", SystemPromptStrategy.APPEND)
    assert appended[appended.index("--append-system-prompt") + 1] == "Be brief."
    assert "--system-prompt" not in appended


def test_prompt_flattening_and_inline_system() -> None:
    request = ChatRequest(model="m", messages=(ChatMessage("system", "Rules."), ChatMessage("user", "hi")))
    assert build_prompt(request, SystemPromptStrategy.REPLACE) == "hi"
    inline = build_prompt(request, SystemPromptStrategy.INLINE)
    assert inline.startswith("<system_instructions>\nRules.\n</system_instructions>") and inline.endswith(
        "hi"
    )


# --- catalog --------------------------------------------------------------------------


CATALOG = Catalog(
    providers=(
        ProviderModels(
            "openai",
            (ModelEntry("gpt-4o-mini"), ModelEntry("shared")),
            "gpt-4o-mini",
            accepts_prefixes=("gpt-",),
        ),
        ProviderModels(
            "claude-cli",
            (ModelEntry("sonnet"), ModelEntry("shared")),
            "sonnet",
            accepts_prefixes=("claude-",),
        ),
    ),
    default_provider="claude-cli",
    aliases={"fast": "openai:gpt-4o-mini", "loop": "fast"},
)


@pytest.mark.parametrize(
    ("name", "candidates", "reason"),
    [
        ("gpt-4o-mini", [("openai", "gpt-4o-mini")], "exact model id"),
        ("shared", [("claude-cli", "shared"), ("openai", "shared")], "exact model id"),
        ("openai:gpt-5", [("openai", "gpt-5")], "pinned"),
        ("fast", [("openai", "gpt-4o-mini")], "alias fast"),
        ("claude-opus-4-6", [("claude-cli", "claude-opus-4-6")], "claude-cli serves"),
        ("default", [("claude-cli", "sonnet"), ("openai", "gpt-4o-mini")], "default route"),
    ],
)
def test_resolution(name: str, candidates: list[tuple[str, str]], reason: str) -> None:
    route = CATALOG.resolve(name)
    assert list(route.candidates) == [Candidate(p, m) for p, m in candidates]
    assert reason in route.reason


@pytest.mark.parametrize("name", ["nothing", "loop", "openai:"])
def test_unresolvable_names_are_404(name: str) -> None:
    with pytest.raises(RelayError) as caught:
        CATALOG.resolve(name)
    assert caught.value.status == 404 and caught.value.code == "model_not_found"


# --- tool calls written by CLIs ------------------------------------------------------------


def test_tool_call_block_is_extracted_wherever_the_chunks_split() -> None:
    from relaybox.protocol.wire.cli_prompt import ToolCallExtractor

    answer = 'Checking.<tool_call>{"name": "read_file", "arguments": {"path": "a<b>.py"}}</tool_call>'
    for size in (1, 2, 5, 11, len(answer)):
        extractor = ToolCallExtractor()
        events = [e for i in range(0, len(answer), size) for e in extractor.feed(answer[i : i + size])]
        events += extractor.finish()
        text = "".join(e.text for e in events if isinstance(e, ContentDelta))
        calls = [e for e in events if isinstance(e, ToolCallDelta)]
        assert text == "Checking.", size
        assert [(c.index, c.name, json.loads(c.arguments)) for c in calls] == [
            (0, "read_file", {"path": "a<b>.py"})
        ]
        assert calls[0].id and calls[0].id.startswith("call_")


def test_text_that_only_looks_like_a_tool_call_stays_text() -> None:
    from relaybox.protocol.wire.cli_prompt import ToolCallExtractor

    extractor = ToolCallExtractor()
    events = (
        extractor.feed("a < b and <tool")
        + extractor.feed("kit>")
        + extractor.feed("<tool_call>not json</tool_call>")
    )
    events += extractor.finish()
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == (
        "a < b and <toolkit><tool_call>not json</tool_call>"
    )
    assert extractor.calls == 0


def test_cli_prompt_describes_tools_and_replays_calls() -> None:
    from relaybox.protocol.chat import ToolCall, ToolChoice
    from relaybox.protocol.wire.cli_prompt import flatten

    request = ChatRequest(
        model="m",
        tools=(ToolSpec("grep", "Search", {"type": "object"}),),
        tool_choice=ToolChoice("required"),
        messages=(
            ChatMessage("user", "find x"),
            ChatMessage("assistant", None, tool_calls=(ToolCall("c1", "grep", '{"q": "x"}'),)),
            ChatMessage("tool", "x.py:1", tool_call_id="c1"),
        ),
    )
    prompt = flatten(request, inline_system=True)
    assert '"name": "grep"' in prompt and "You must call one of the tools now." in prompt
    assert '<tool_call>{"name": "grep", "arguments": {"q": "x"}}</tool_call>' in prompt
    assert '<tool_result id="c1">x.py:1</tool_result>' in prompt


TIERED = Catalog(
    providers=(
        ProviderModels(
            "openai",
            (
                ModelEntry("gpt-4o-mini", "economy"),
                ModelEntry("gpt-4o", "standard"),
                ModelEntry("o3", "premium"),
            ),
            "gpt-4o-mini",
        ),
        ProviderModels("ollama", (ModelEntry("llama3.2:3b", "economy"),), "llama3.2:3b"),
        ProviderModels("anthropic", (ModelEntry("claude-opus-4-5", "premium"),), "claude-opus-4-5"),
    ),
    costs={
        ("openai", "gpt-4o-mini"): 0.0006,
        ("ollama", "llama3.2:3b"): 0.0,
        ("openai", "gpt-4o"): 0.01,
        ("openai", "o3"): 0.008,
        ("anthropic", "claude-opus-4-5"): 0.0225,
    },
)


def test_a_tier_is_its_models_cheapest_first_then_the_tiers_above() -> None:
    route = TIERED.resolve("economy")
    assert [(c.provider, c.model) for c in route.candidates] == [
        ("ollama", "llama3.2:3b"),
        ("openai", "gpt-4o-mini"),  # economy, cheapest first
        ("openai", "gpt-4o"),  # then standard
        ("openai", "o3"),
        ("anthropic", "claude-opus-4-5"),  # then premium
    ]
    assert route.reason == "tier economy: cheapest is ollama/llama3.2:3b"
    assert [c.model for c in TIERED.resolve("premium").candidates] == ["o3", "claude-opus-4-5"]


def test_legacy_openai_names_map_to_tiers() -> None:
    assert TIERED.resolve("gpt-4").candidates[0].model == "o3"
    assert TIERED.resolve("gpt-4").reason.startswith("gpt-4 -> tier premium")
    assert TIERED.resolve("gpt-3.5-turbo").candidates[0].model == "llama3.2:3b"


def test_an_empty_tier_escalates_and_no_tier_at_all_is_404() -> None:
    only_premium = Catalog(
        (ProviderModels("anthropic", (ModelEntry("claude-opus-4-5", "premium"),), "claude-opus-4-5"),)
    )
    assert only_premium.resolve("economy").candidates[0].model == "claude-opus-4-5"
    nothing = Catalog((ProviderModels("x", (ModelEntry("m", "economy"),), "m"),))
    with pytest.raises(RelayError):
        nothing.resolve("premium")
