"""End to end: the official OpenAI SDK → relaybox (hypercorn, real socket) → fake OpenAI upstream."""

from __future__ import annotations

from pathlib import Path

import openai
import trio

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import openai_provider, serve, settings_for


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-client", max_retries=0, timeout=20)


async def test_non_streaming_completion_through_the_sdk(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.push(Reply(text="Four.", prompt_tokens=21, completion_tokens=2))
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:
        raw = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                temperature=0,
                max_tokens=5,
                stop=["\n\n"],
                messages=[
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "Let me think."},
                    {"role": "user", "content": "Well?"},
                ],
            )
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Four."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 21
    assert completion.usage.completion_tokens == 2 and completion.usage.total_tokens == 23
    assert raw.headers["x-provider"] == "upstream"
    assert raw.headers["x-model"] == "gpt-4o-mini"
    assert raw.headers["x-fallback-used"] == "false"
    assert raw.headers["x-task-id"] == completion.id
    assert "exact model id" in raw.headers["x-router-reason"]
    assert float(raw.headers["x-overhead-ms"]) >= 0
    sent = fake_openai.chat_requests()[-1]
    body = sent.json()
    assert sent.headers["authorization"] == "Bearer sk-test-upstream"
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["temperature"] == 0 and body["max_tokens"] == 5 and body["stop"] == ["\n\n"]
    assert body["stream"] is False


async def test_streaming_through_the_sdk_with_usage(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.push(Reply(text="one two three four five", pieces=5))
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:

        def consume() -> tuple[list[str], list[object], dict[str, str]]:
            with sdk(relay.base_url).chat.completions.with_streaming_response.create(
                model="gpt-4o-mini",
                stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "count"}],
            ) as response:
                chunks = list(response.parse())
                return (
                    [c.choices[0].delta.content or "" for c in chunks if c.choices],
                    chunks,
                    dict(response.headers),
                )

        texts, chunks, headers = await trio.to_thread.run_sync(consume)
    assert "".join(texts) == "one two three four five"
    assert len([t for t in texts if t]) == 5, "pieces arrive as separate chunks, not buffered"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage_chunks = [c for c in chunks if getattr(c, "usage", None)]
    assert len(usage_chunks) == 1 and usage_chunks[0].usage.total_tokens == 18
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-provider"] == "upstream"
    # relaybox always asks the upstream for usage, whatever the client asked for.
    assert fake_openai.chat_requests()[-1].json()["stream_options"] == {"include_usage": True}


async def test_stream_without_include_usage_has_no_usage_chunk(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                sdk(relay.base_url).chat.completions.create(
                    model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hi"}]
                )
            )
        )
    assert all(getattr(c, "usage", None) is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from the fake upstream."


async def test_tool_call_arguments_survive_streaming(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.push(
        Reply(text="", pieces=1, tool_call=("get_weather", '{"city": "Paris", "unit": "C"}'))
    )
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                sdk(relay.base_url).chat.completions.create(
                    model="gpt-4o-mini",
                    stream=True,
                    messages=[{"role": "user", "content": "weather?"}],
                    tools=[
                        {
                            "type": "function",
                            "function": {"name": "get_weather", "parameters": {"type": "object"}},
                        }
                    ],
                )
            )
        )
    arguments = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or ()
    )
    assert arguments == '{"city": "Paris", "unit": "C"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    assert "tools" in fake_openai.chat_requests()[-1].json()


async def test_open_webui_path_layout(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    provider = openai_provider("webui", fake_openai.server.base_url, host_type="openwebui")
    async with serve(settings_for(tmp_path, provider)) as relay:
        completion = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        )
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert fake_openai.chat_requests()[-1].path == "/api/chat/completions"


async def test_models_lists_every_model_and_the_aliases(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = settings_for(
        tmp_path,
        openai_provider("a", fake_openai.base_url, models=("m1", "m2")),
        openai_provider("b", fake_openai.base_url, models=("m3",)),
        aliases={"fast": "b:m3"},
    )
    async with serve(settings) as relay:
        listed = await trio.to_thread.run_sync(lambda: sdk(relay.base_url).models.list())
    ids = [m.id for m in listed.data]
    assert ids[:3] == ["m1", "m2", "m3"]
    assert {"fast", "auto", "economy", "standard", "premium", "gpt-4", "gpt-3.5-turbo"} <= set(ids)
    assert {"route:planning", "route:coder", "route:chat"} <= set(ids), "every route, with its chain"
    owners = {m.id: m.owned_by for m in listed.data}
    assert owners["m1"] == "a" and owners["m3"] == "b"
