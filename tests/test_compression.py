"""Prompt compression: property tests over generated agentic conversations (derandomized: every
run checks the same examples, so a failure is reproducible and CI does not flicker) (prose with stray
whitespace, code blocks in many languages, files pasted again, tool calls and their results),
then the stages on hand-written examples, then through the HTTP API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relaybox.protocol import tokens
from relaybox.protocol.chat import ChatMessage, ChatRequest, ToolCall
from relaybox.protocol.compression import code_blocks, segments, whitespace
from relaybox.protocol.compression.pipeline import compress
from relaybox.protocol.compression.repeats import MIN_CHARS
from relaybox.protocol.compression.segments import Segment, last_user_index, split
from relaybox.protocol.compression.trimming import trim

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import eventually, openai_provider, serve, settings_for

SIGNIFICANT = ("python", "yaml", "makefile", "diff", "")  # whitespace carries meaning, or nobody said
NOTE = re.compile(
    r"\[relaybox: this (content|code block) is identical to the one in message (\d+) below; shown there in full\]"
)

words = st.sampled_from(
    ["fix", "the", "test", "in", "parser", "module", "returns", "None", "when", "empty", "λ"]
)
spacing = st.sampled_from([" ", "  ", "\t", " \t "])
line = st.lists(words, min_size=1, max_size=8).flatmap(
    lambda ws: st.lists(spacing, min_size=len(ws), max_size=len(ws)).map(
        lambda gaps: "".join(w + g for w, g in zip(ws, gaps, strict=True)).rstrip(" \t") + "  "
    )
)
prose = st.lists(st.one_of(line, st.just(""), st.just("\r")), min_size=1, max_size=8).map("\n".join)
code_line = st.sampled_from(
    [
        "x = 1",
        "    return x  ",
        "",
        "   ",
        "if (a) {",
        "  // note",
        "}",
        "key: value",
        "  - item",
        '{"a": [1, 2]}',
    ]
)
BIG_FILE = "def parse(text):\n" + "".join(f"    field_{i} = text.split(',')[{i}]  \n" for i in range(30))
BIG_LOG = "".join(
    f"2026-11-30 04:{i:02d}:00 INFO worker {i} finished job {i * 7} in {i}ms\n" for i in range(20)
)


@st.composite
def code_block(draw: st.DrawFn) -> str:
    language = draw(st.sampled_from([*SIGNIFICANT, "js", "go", "json", "rust", "sql"]))
    body = "\n".join(draw(st.lists(code_line, max_size=10)))
    if draw(st.booleans()):
        body = BIG_FILE if language in ("python", "") else body + "\n" + BIG_LOG
    return f"```{language}\n{body}\n```"


text = st.lists(st.one_of(prose, code_block(), st.just(BIG_LOG)), min_size=1, max_size=4).map("\n".join)


@st.composite
def conversation(draw: st.DrawFn) -> tuple[ChatMessage, ...]:
    messages: list[ChatMessage] = []
    if draw(st.booleans()):
        messages.append(ChatMessage("system", draw(text)))
    for turn in range(draw(st.integers(1, 5))):
        messages.append(ChatMessage("user", draw(text)))
        if draw(st.booleans()):
            calls = tuple(
                ToolCall(f"call_{turn}_{i}", "read_file", '{"path": "a.py"}')
                for i in range(draw(st.integers(1, 2)))
            )
            messages.append(ChatMessage("assistant", None, tool_calls=calls))
            messages += [
                ChatMessage("tool", draw(st.sampled_from([BIG_FILE, BIG_LOG, "ok"])), tool_call_id=c.id)
                for c in calls
            ]
        messages.append(ChatMessage("assistant", draw(text)))
    messages.append(ChatMessage("user", draw(text)))
    return tuple(messages)


def squash(value: str) -> str:
    return re.sub(r"\s+", "", value)


def originals(out: tuple[ChatMessage, ...]) -> list[ChatMessage]:
    """The output without the messages compression adds (the abbreviation legend)."""
    return [m for m in out if not (m.role == "system" and m.text().startswith("Abbreviations relaybox used"))]


def assert_paired(messages: list[ChatMessage] | tuple[ChatMessage, ...]) -> None:
    called = {call.id for m in messages for call in m.tool_calls}
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    assert answered <= called, "a tool result without its call"
    assert called <= answered, "a tool call without its result"


# Text made of what the whitespace patterns and the fence finder look at.
TRICKY_TEXT = st.text(alphabet=" \t\n\r`~ax", max_size=60)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(TRICKY_TEXT, st.booleans())
def test_the_substring_checks_skip_a_pattern_only_where_it_cannot_match(text: str, inner: bool) -> None:
    """`tidy` runs each pattern only when a substring search says it can match: the same result as
    running them all, and `split`'s shortcut for text without fences the same as its full walk."""
    everything = whitespace.TRAILING.sub("", text.replace("\r\n", "\n"))
    everything = whitespace.BLANK_RUNS.sub("\n\n", everything)
    if inner:
        everything = whitespace.INNER_SPACES.sub(" ", everything)
    assert whitespace.tidy(text, inner=inner) == everything
    assert "".join(segment.text for segment in split(text)) == text
    if "```" not in text and "~~~" not in text:
        assert not any(segment.code for segment in split(text))
    block = Segment(f"```js\n{text}\n```\n", code=True, language="js")
    body = code_blocks.BLANK_RUNS.sub("\n\n", whitespace.TRAILING.sub("", f"{text}\n"))
    assert code_blocks.optimise_block(block, aggressive=False) == f"```js\n{body}```\n"


def test_a_split_is_remembered_for_the_next_stage_and_a_huge_text_is_not() -> None:
    """Every stage splits each message again: a text's split is remembered (so an unchanged message
    is walked once), and a text past the size limit is never kept, whatever a client sends."""
    fenced = "Look at this:\n```python\nprint('hi')   \n```\nThanks.\n"
    first = split(fenced)
    assert split(fenced) is first  # remembered: the same segments, not walked again
    assert [s.code for s in first] == [False, True, False]
    huge = fenced * (segments._REMEMBERED_CHARS // len(fenced) + 1)
    kept = segments._remembered_split.cache_info().currsize
    assert "".join(s.text for s in split(huge)) == huge
    assert segments._remembered_split.cache_info().currsize == kept


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conversation(), st.sampled_from(["safe", "aggressive"]))
def test_compression_keeps_the_last_user_message_the_tool_pairs_and_every_message(messages, level) -> None:
    out = originals(compress(ChatRequest(model="m", messages=messages), level).request.messages)
    assert len(out) == len(messages)
    assert [(m.role, m.tool_call_id, m.tool_calls) for m in out] == [
        (m.role, m.tool_call_id, m.tool_calls) for m in messages
    ]
    last = last_user_index(messages)
    assert out[last] == messages[last]
    assert_paired(out)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conversation())
def test_safe_compression_changes_only_whitespace_and_repeats_that_stay_in_full_later(messages) -> None:
    out = compress(ChatRequest(model="m", messages=messages), "safe").request.messages
    for index, (before, after) in enumerate(zip(messages, out, strict=True)):
        kept = after.text()
        removed = before.text()
        for note in NOTE.finditer(kept):
            later = int(note.group(2)) - 1
            assert later > index and NOTE.search(messages[later].text()) is None
            if note.group(1) == "content":
                assert (
                    squash(messages[later].text()) == squash(before.text())
                    and len(before.text()) >= MIN_CHARS
                )
                removed = ""
            else:  # every copy of a block shown again in full later goes
                blocks = {s.text.strip() for s in split(before.text()) if s.code and len(s.text) >= MIN_CHARS}
                shown_later = [b for b in blocks if squash(b) in squash(messages[later].text())]
                assert shown_later, "a note points at a message that does not show the block"
                for block in shown_later:
                    removed = removed.replace(block, "")
        assert squash(NOTE.sub("", kept)) == squash(removed), f"message {index} changed beyond whitespace"
        # Code in whitespace-significant languages, or unnamed, is untouched byte for byte.
        for segment in split(after.text()):
            if segment.code and segment.language in SIGNIFICANT:
                assert segment.text in before.text()


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conversation(), st.sampled_from(["safe", "aggressive"]))
def test_compression_is_idempotent_and_never_adds_tokens(messages, level) -> None:
    request = ChatRequest(model="m", messages=messages)
    once = compress(request, level)
    twice = compress(once.request, level)
    if level == "safe":
        assert twice.request.messages == once.request.messages
    assert once.saved == tokens.count_request(request) - tokens.count_request(once.request)
    assert once.saved >= 0 or (
        level == "aggressive" and once.saved >= -40
    )  # a legend may cost more than it saves


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conversation(), st.integers(50, 3000))
def test_trimming_drops_whole_oldest_turns_and_keeps_the_rest(messages, budget) -> None:
    out = trim(messages, budget, tokens.count_message)
    if out == messages:
        return
    kept = [m for m in out if not m.text().startswith("[relaybox: the ")]
    assert len(kept) == len(out) - 1
    assert sum(tokens.count_message(m) for m in out) <= budget + 40
    assert [m for m in messages if m.role == "system"] == [m for m in kept if m.role == "system"]
    last = last_user_index(messages)
    assert kept[-(len(messages) - last) :] == list(messages[last:]), (
        "the last user message and what follows stay"
    )
    rest = [m for m in messages if m.role != "system"]
    kept_rest = [m for m in kept if m.role != "system"]
    assert rest[len(rest) - len(kept_rest) :] == kept_rest, "what is dropped is the oldest, in order"
    assert_paired(kept)


def test_each_stage_on_an_example() -> None:
    pasted = (
        "```js\nfunction add(a, b) {   \n\n\n\n  // sum\n  return a + b;\n}\n"
        + "// filler line\n" * 40
        + "```\n"
    )
    python = "```python\ndef f():  \n\n\n    return 1\n```"
    messages = (
        ChatMessage("system", "You are a coding agent.   \n\n\n\nBe brief."),
        ChatMessage("user", f"Here is the file:\n{pasted}"),
        ChatMessage("assistant", f"Looks fine.\n{python}"),
        ChatMessage("tool", json.dumps({"rows": list(range(50))}, indent=2), tool_call_id=None),
        ChatMessage("user", f"Again, the same file:\n{pasted}\nWhat does it do?   "),
    )
    safe = compress(ChatRequest(model="m", messages=messages), "safe").request.messages
    assert safe[0].text() == "You are a coding agent.\n\nBe brief."
    assert (
        NOTE.search(safe[1].text()) and "message 5 below" in safe[1].text()
    )  # pasted again later: kept there
    assert python in safe[2].text()  # Python whitespace is meaning
    assert safe[3] == messages[3]  # tool output is left alone at the safe level
    assert safe[4] == messages[4]  # the last user message, exactly
    block = "```json\n" + json.dumps({"a": [1, 2], "b": "x"}, indent=2) + "\n```"
    aggressive = compress(
        ChatRequest(model="m", messages=(ChatMessage("user", block), ChatMessage("user", "ok"))), "aggressive"
    )
    assert '{"a":[1,2],"b":"x"}' in aggressive.request.messages[0].text()
    path = "/home/dev/projects/relaybox/actors/transports/http_api.py"
    repeated = tuple(ChatMessage("user" if i % 2 else "assistant", f"see {path} line {i}") for i in range(6))
    abbreviated = compress(
        ChatRequest(model="m", messages=(*repeated, ChatMessage("user", f"and {path}?"))), "aggressive"
    )
    legend = abbreviated.request.messages[0]
    assert legend.role == "system" and f"§1 = {path}" in legend.text()
    assert all(path not in m.text() for m in abbreviated.request.messages[1:-1])
    assert abbreviated.request.messages[-1].text() == f"and {path}?"
    assert abbreviated.saved > 0


async def test_compression_through_the_api(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    pasted = "```go\nfunc main() {   \n\n\n\n\tfmt.Println(1)\n}\n" + "x := 1\n" * 80 + "```\n"
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": f"Read this:\n{pasted}"},
            {"role": "assistant", "content": "Done.   \n\n\n\nNext?"},
            {"role": "user", "content": f"Same again:\n{pasted}"},
        ],
    }
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        safe = await client.post("/v1/chat/completions", json=body)
        off = await client.post("/v1/chat/completions", json=body, headers={"x-relaybox-compression": "off"})
        bad = await client.post("/v1/chat/completions", json=body, headers={"x-relaybox-compression": "max"})
        await eventually(lambda: relay.system.recorder.written >= 2, within=10)
        rows = (await client.get("/api/requests", params={"limit": 5})).json()["data"]
        stats = (await client.get("/api/stats")).json()
    sent = [r.json()["messages"] for r in fake_openai.chat_requests()]
    saved = int(safe.headers["x-tokens-saved"])
    assert saved > 50 and "x-tokens-saved" not in off.headers
    assert "identical to the one in message 3 below" in sent[0][0]["content"]
    assert sent[0][2]["content"] == body["messages"][2]["content"], "the last user message is sent as written"
    assert sent[0][1]["content"] == "Done.\n\nNext?"
    assert sent[1] == body["messages"], "off: exactly as the client sent it"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-relaybox-compression"
    compressed = next(r for r in rows if r["tokens_before_compression"] is not None)
    assert compressed["tokens_before_compression"] - compressed["tokens_after_compression"] == saved
    assert sum(day["tokens_saved"] for day in stats["volume_by_day"]) == saved


@pytest.mark.parametrize("level", ["safe", "aggressive"])
def test_a_conversation_without_anything_to_compress_is_not_counted(level: str) -> None:
    request = ChatRequest(model="m", messages=(ChatMessage("user", "hi"),))
    compressed = compress(request, level)
    assert compressed.request is request and compressed.saved == 0


async def test_aggressive_compression_trims_the_oldest_turns_to_the_models_window(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    import attrs
    from relaybox.protocol.routing.catalog import ModelEntry

    small = attrs.evolve(
        openai_provider("up", fake_openai.base_url, models=("small",)),
        models=(ModelEntry("small", "economy", 0.15, 0.6, 1500),),
    )
    history = []
    for turn in range(10):
        history += [
            {"role": "user", "content": f"step {turn}: " + "please look at the parser again " * 25},
            {"role": "assistant", "content": f"done with step {turn}: " + "the parser looks fine now " * 25},
        ]
    body = {
        "model": "small",
        "max_tokens": 200,
        "messages": [
            {"role": "system", "content": "You are terse."},
            *history,
            {"role": "user", "content": "Summarise."},
        ],
    }
    async with (
        serve(settings_for(tmp_path, small)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        refused = await client.post("/v1/chat/completions", json=body)
        trimmed = await client.post(
            "/v1/chat/completions", json=body, headers={"x-relaybox-compression": "aggressive"}
        )
        await eventually(lambda: relay.system.recorder.written >= 1, within=10)
        rows = (await client.get("/api/requests", params={"limit": 5})).json()["data"]
    assert refused.status_code == 400 and "context window" in refused.json()["error"]["message"]
    assert trimmed.status_code == 200
    sent = fake_openai.chat_requests()[-1].json()["messages"]
    assert sent[0] == body["messages"][0] and sent[-1] == body["messages"][-1]
    assert (
        sent[1]["role"] == "system"
        and "oldest messages of this conversation were left out" in sent[1]["content"]
    )
    assert 3 <= len(sent) < len(body["messages"])
    latest = body["messages"][-1 - (len(sent) - 3) : -1]
    assert [(m["role"], m["content"]) for m in sent[2:-1]] == [
        (m["role"], m["content"].rstrip()) for m in latest
    ], "the latest turns, as they were (their trailing space aside)"
    row = next(r for r in rows if r["status"] == "success")
    assert row["tokens_after_compression"] == row["tokens_in"]  # what the upstream counted
    assert row["tokens_before_compression"] - row["tokens_after_compression"] > 1000
