"""The same client-visible behaviour through every HTTP provider: OpenAI-compatible, Anthropic,
Gemini and Ollama, each behind its own fake upstream, with the OpenAI SDK as the client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
import trio

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import api_provider, serve, settings_for

ARGUMENTS = '{"path": "src/main.py", "line": 42, "patch": "- old\\n+ new", "tags": ["a", "b"]}'
TOOL = {
    "type": "function",
    "function": {
        "name": "apply_patch",
        "description": "Apply a patch",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "line": {"type": "integer"},
                "patch": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
}

PROVIDERS = {
    # kind: (fake upstream, model)
    "openai-compatible": (FakeOpenAI, "gpt-4o-mini"),
    "anthropic": (FakeAnthropic, "claude-sonnet-4-5"),
    "gemini": (FakeGemini, "gemini-2.5-flash"),
    "ollama": (FakeOllama, "llama3.2:3b"),
}


@pytest.fixture(params=sorted(PROVIDERS))
async def upstream(request: pytest.FixtureRequest, nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    fake_class, model = PROVIDERS[request.param]
    fake = await fake_class().start(nursery)
    return request.param, fake, model, fake.base_url


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-client", max_retries=0, timeout=30)


def settings(tmp_path: Path, kind: str, base_url: str, model: str):  # type: ignore[no-untyped-def]
    return settings_for(tmp_path, api_provider(kind, kind, base_url, models=(model,)))


async def test_streaming_and_non_streaming_text(tmp_path: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    kind, fake, model, base_url = upstream
    fake.replies.push(
        Reply(text="The quick brown fox.", pieces=4, prompt_tokens=13, completion_tokens=5),
        Reply(text="Whole answer.", prompt_tokens=13, completion_tokens=3),
    )
    async with serve(settings(tmp_path, kind, base_url, model)) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                sdk(relay.base_url).chat.completions.create(
                    model=model,
                    stream=True,
                    stream_options={"include_usage": True},
                    messages=[
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Fox?"},
                    ],
                )
            )
        )
        whole = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Again"}]
            )
        )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "The quick brown fox." and len(texts) == 4
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [(13, 5)]
    assert whole.choices[0].message.content == "Whole answer."
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (13, 3)


async def test_streamed_tool_call_round_trips_intact(tmp_path: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    kind, fake, model, base_url = upstream
    fake.replies.push(Reply(text="", pieces=1, tool_call=("apply_patch", ARGUMENTS), tool_pieces=11))
    async with serve(settings(tmp_path, kind, base_url, model)) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                sdk(relay.base_url).chat.completions.create(
                    model=model, stream=True, tools=[TOOL], messages=[{"role": "user", "content": "Fix it"}]
                )
            )
        )
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
        call_id = calls[0].id
        await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model=model,
                tools=[TOOL],
                messages=[
                    {"role": "user", "content": "Fix it"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "function": {"name": "apply_patch", "arguments": ARGUMENTS},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": call_id, "content": '{"applied": true}'},
                ],
            )
        )
    assert calls[0].function.name == "apply_patch" and call_id
    assert {call.index for call in calls} == {0}
    assert json.loads("".join(call.function.arguments or "" for call in calls)) == json.loads(ARGUMENTS)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    second = json.dumps(_upstream_bodies(fake)[-1])
    assert "apply_patch" in second and "applied" in second, "the call and its result went back upstream"


async def test_inline_image_reaches_the_upstream(tmp_path: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    kind, fake, model, base_url = upstream
    async with serve(settings(tmp_path, kind, base_url, model)) as relay:
        await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model=model,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Describe"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="},
                            },
                        ],
                    }
                ],
            )
        )
    assert "/9j/4AAQSkZJRg==" in json.dumps(_upstream_bodies(fake)[-1])


def _upstream_bodies(fake) -> list[dict]:  # type: ignore[no-untyped-def]
    for method in ("chat_requests", "message_requests", "generate_requests"):
        if hasattr(fake, method):
            return [r.json() for r in getattr(fake, method)()]
    raise AssertionError("unknown fake")


async def test_cache_and_compression_work_the_same_for_every_provider(tmp_path: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    kind, fake, model, base_url = upstream
    pasted = "```js\n" + "const total = items.reduce((sum, item) => sum + item.price, 0);\n" * 12 + "```"
    body = {
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "user", "content": f"Here is the code:\n{pasted}"},
            {"role": "assistant", "content": "Noted.   \n\n\n\nAnything else?"},
            {"role": "user", "content": f"The same code again:\n{pasted}\nWhat does it compute?"},
        ],
    }
    async with (
        serve(settings(tmp_path, kind, base_url, model)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        calls_before = len(fake.server.requests)
        first = await client.post("/v1/chat/completions", json=body)
        again = await client.post("/v1/chat/completions", json={**body, "stream": True})
        upstream_calls = len(fake.server.requests) - calls_before
    assert first.status_code == 200 and int(first.headers["x-tokens-saved"]) > 100, kind
    assert first.headers["x-cache-hit"] == "false" and again.headers["x-cache-hit"] == "true", kind
    assert upstream_calls == 1, kind
    sent = fake.server.requests[-1].body.decode()
    assert "identical to the one in message 3 below" in sent and "Anything else?" in sent, kind


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


async def test_a_json_schema_reaches_every_upstream_in_its_own_form(tmp_path: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    kind, fake, model, base_url = upstream
    async with serve(settings(tmp_path, kind, base_url, model)) as relay:
        await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "2+2?"}],
                response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA}},
            )
        )
    sent = _upstream_bodies(fake)[-1]
    if kind == "openai-compatible":
        assert sent["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "sum", "schema": SCHEMA},
        }
    elif kind == "anthropic":  # no JSON mode of its own: the schema in the instructions
        assert "conforms to this JSON Schema" in json.dumps(sent["system"]) and '\\"answer\\"' in json.dumps(
            sent["system"]
        )
    elif kind == "gemini":
        config = sent["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"]["properties"]["answer"]["type"] == "INTEGER"
    else:
        assert sent["format"] == SCHEMA
