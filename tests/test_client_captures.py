"""Every stored capture of what a real client sent (tests/golden/*_request_*.json, written by the
client tests: tests/test_codex_client.py, tests/test_coding_agent_clients.py,
tests/test_aider_client.py, tests/test_claude_code_client.py) replayed to relaybox over HTTP, with its
headers, answered through an OpenAI-compatible upstream and an Anthropic upstream; and the pure
helper of tests/client_captures.py that keeps and compares them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import client_captures
from tests.client_captures import (
    REDACTED,
    answer_problems,
    capture_request,
    check_against_golden,
    differences,
    golden_captures,
    load_golden,
    replay,
    signature,
    trimmed,
)
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import api_provider, openai_provider, serve, settings_for

ANSWER = "Answered a replayed client request."
CAPTURES = golden_captures()


def tool_names(body: dict[str, Any]) -> set[str]:
    """The names of the tools a request offers the model (function tools in any format, the tools
    inside a Codex namespace); hosted tools, which relaybox leaves out, have none here."""
    names: set[str] = set()
    for tool in body.get("tools") or ():
        if isinstance(tool.get("function"), dict):
            names.add(tool["function"]["name"])
        elif tool.get("type") == "namespace":
            names |= {inner["name"] for inner in tool.get("tools", ())}
        elif tool.get("type") in ("function", "custom") or "input_schema" in tool:
            names.add(tool["name"])
    return names


def test_every_client_has_its_captures() -> None:
    for client in ("codex", "continue", "cline", "aider"):
        assert {f"{client}_request_first", f"{client}_request_resumed"} <= set(CAPTURES), CAPTURES


@pytest.mark.parametrize("upstream", ["openai-chat", "anthropic"])
@pytest.mark.parametrize("name", CAPTURES)
async def test_relaybox_answers_a_stored_client_request(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, name: str, upstream: str
) -> None:
    capture = load_golden(name)
    if upstream == "openai-chat":
        fake_openai.replies.default = Reply(text=ANSWER, pieces=3)
        provider = openai_provider("upstream", fake_openai.base_url)
        seen = fake_openai.chat_requests

        def upstream_tools(body: dict) -> set[str]:
            return {tool["function"]["name"] for tool in body.get("tools") or ()}
    else:
        fake_anthropic.replies.default = Reply(text=ANSWER, pieces=3)
        provider = api_provider(
            "anthropic", "upstream", fake_anthropic.base_url, models=("claude-haiku-4-5",)
        )
        seen = fake_anthropic.message_requests

        def upstream_tools(body: dict) -> set[str]:
            return {tool["name"] for tool in body.get("tools") or ()}

    async with (
        serve(settings_for(tmp_path, provider)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as http,
    ):
        response = await replay(http, capture)
    assert not answer_problems(capture, response.status_code, response.text), answer_problems(
        capture, response.status_code, response.text
    )
    assert ANSWER.split()[0] in response.text
    [forwarded] = seen()
    assert tool_names(capture["body"]) <= upstream_tools(forwarded.json())


# --- the helper ---------------------------------------------------------------------------------

CHAT = {
    "model": "auto",
    "stream": True,
    "messages": [
        {"role": "system", "content": "You are a helpful agent. " * 20},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "Read", "arguments": '{"path": "' + "a" * 200 + '"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "x" * 500},
    ],
    "tools": [{"type": "function", "function": {"name": "Read", "description": "d", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
}  # fmt: skip
HEADERS = {
    "authorization": "Bearer sk-secret",
    "content-type": "application/json",
    "content-length": "123",
    "host": "127.0.0.1:1",
    "anthropic-beta": "b-two,b-one",
    "x-stainless-os": "Linux",
}


def test_a_capture_cuts_long_texts_and_hides_the_key_but_keeps_every_field() -> None:
    capture = capture_request("post", "/v1/chat/completions", HEADERS, json.dumps(CHAT), client="x 1.0")
    assert capture["method"] == "POST" and capture["headers"]["authorization"] == REDACTED
    assert "host" not in capture["headers"] and "content-length" not in capture["headers"]
    system, _, assistant, tool = capture["body"]["messages"]
    assert system["content"].startswith("You are a helpful agent.") and "characters cut" in system["content"]
    assert len(tool["content"]) < 150
    # JSON texts (a call's arguments) stay whole: relaybox parses them.
    assert (
        assistant["tool_calls"][0]["function"]["arguments"]
        == CHAT["messages"][2]["tool_calls"][0]["function"]["arguments"]
    )
    assert signature(capture) == signature({**capture, "body": CHAT})
    assert "sk-secret" not in json.dumps(capture)


def test_a_signature_is_the_structure_without_the_texts() -> None:
    sig = signature(capture_request("POST", "/v1/chat/completions", HEADERS, CHAT, client="x"))
    assert sig["endpoint"] == "POST /v1/chat/completions"
    assert sig["headers"] == {
        "anthropic-beta": ["b-one", "b-two"],
        "authorization": "present",
        "content-type": "application/json",
    }
    assert {m["role"] for m in sig["body"]["messages"]} == {"system", "user", "assistant", "tool"}
    user = next(m for m in sig["body"]["messages"] if m["role"] == "user")
    assert user == {"role": "user", "content": [{"type": "text", "text": "string"}]}
    assert sig["body"]["tools"][0]["function"]["name"] == "Read"
    # Other texts, and how many of each thing there are, are not its structure.
    other = copy.deepcopy(CHAT)
    other["messages"][0]["content"] = "Another prompt"
    other["messages"].insert(1, {"role": "user", "content": [{"type": "text", "text": "again"}]})
    assert signature({**capture_request("POST", "/v1/chat/completions", HEADERS, other, client="x")}) == sig


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b, h: b.update(reasoning_effort="high"), "+ body.reasoning_effort"),
        (lambda b, h: b["messages"][1]["content"].append({"type": "image_url", "image_url": {"url": "u"}}), "image_url"),
        (lambda b, h: b["messages"][3].update(name="x"), "+ body.messages[tool].name"),
        (lambda b, h: b["tools"][0]["function"]["parameters"]["properties"].update(n={"type": "integer"}), ".n"),
        (lambda b, h: b.pop("stream"), "- body.stream"),
        (lambda b, h: h.update({"anthropic-beta": "b-one,b-two,b-three"}), "b-three"),
        (lambda b, h: h.update({"x-new-feature": "on"}), "+ headers.x-new-feature"),
    ],
)  # fmt: skip
def test_what_a_new_client_version_sends_differently_is_named(change: Any, expected: str) -> None:
    before = capture_request("POST", "/v1/chat/completions", HEADERS, CHAT, client="x 1")
    body, headers = copy.deepcopy(CHAT), dict(HEADERS)
    change(body, headers)
    after = capture_request("POST", "/v1/chat/completions", headers, body, client="x 2")
    found = differences(signature(before), signature(after))
    assert found and any(expected in line for line in found), found


def test_a_changed_capture_fails_until_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_captures, "GOLDEN", tmp_path)
    monkeypatch.delenv(client_captures.REFRESH_ENV, raising=False)
    capture = capture_request("POST", "/v1/chat/completions", HEADERS, CHAT, client="x 1")
    with pytest.raises(pytest.fail.Exception, match="RELAYBOX_REFRESH_CAPTURES=1"):
        check_against_golden("x_request_first", capture)
    monkeypatch.setenv(client_captures.REFRESH_ENV, "1")
    check_against_golden("x_request_first", capture)
    monkeypatch.delenv(client_captures.REFRESH_ENV)
    check_against_golden("x_request_first", capture)  # the same shape passes
    newer = capture_request("POST", "/v1/chat/completions", HEADERS, {**CHAT, "seed": 1}, client="x 2")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)x 2 now sends .*\+ body\.seed.*refresh"):
        check_against_golden("x_request_first", newer)
    monkeypatch.setenv(client_captures.REFRESH_ENV, "1")
    check_against_golden("x_request_first", newer)
    assert json.loads((tmp_path / "x_request_first.json").read_text())["body"]["seed"] == 1


def test_long_texts_are_cut_but_json_texts_are_kept() -> None:
    assert trimmed("short") == "short"
    assert trimmed("y" * 100, keep=10) == "yyyyyyyyyy[... 90 characters cut]"
    assert trimmed(json.dumps({"k": "v" * 200}), keep=10) == json.dumps({"k": "v" * 200})
    assert trimmed({"a": ["z" * 50]}, keep=5) == {"a": ["zzzzz[... 45 characters cut]"]}
