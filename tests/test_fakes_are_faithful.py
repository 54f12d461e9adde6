"""The fake upstreams speak their wire formats well enough for the official SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest
import trio

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply


async def test_openai_sdk_against_the_fake(fake_openai: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0)
    fake_openai.replies.push(
        Reply(text="abc"), Reply(text="a b c", pieces=3), Reply(status=429, headers={"retry-after": "3"})
    )
    completion = await trio.to_thread.run_sync(
        lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    )
    assert completion.choices[0].message.content == "abc" and completion.usage.total_tokens == 18
    chunks = await trio.to_thread.run_sync(
        lambda: list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c"
    assert chunks[-1].usage.completion_tokens == 7
    with pytest.raises(openai.RateLimitError):
        await trio.to_thread.run_sync(
            lambda: client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
        )


async def test_anthropic_sdk_against_the_fake(fake_anthropic: FakeAnthropic) -> None:
    client = anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="k", max_retries=0)
    fake_anthropic.replies.push(Reply(text="abc"), Reply(text="a b c", pieces=3), Reply(status=529))
    message = await trio.to_thread.run_sync(
        lambda: client.messages.create(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    )
    assert message.content[0].text == "abc" and message.usage.output_tokens == 7

    def stream() -> tuple[str, int]:
        with client.messages.stream(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as events:
            text = "".join(events.text_stream)
            return text, events.get_final_message().usage.output_tokens

    assert await trio.to_thread.run_sync(stream) == ("a b c", 7)
    with pytest.raises(anthropic.APIStatusError) as caught:
        await trio.to_thread.run_sync(
            lambda: client.messages.create(
                model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        )
    assert caught.value.status_code == 529


async def test_google_genai_sdk_against_the_fake(fake_gemini: FakeGemini) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake_gemini.base_url))
    fake_gemini.replies.push(
        Reply(text="abc"),
        Reply(text="a b c", pieces=3),
        Reply(text="", tool_call=("get_weather", '{"city": "Oslo"}')),
    )
    response = await trio.to_thread.run_sync(
        lambda: client.models.generate_content(model="gemini-2.5-flash", contents="x")
    )
    assert response.text == "abc" and response.usage_metadata.candidates_token_count == 7
    chunks = await trio.to_thread.run_sync(
        lambda: list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="x"))
    )
    assert "".join(c.text or "" for c in chunks) == "a b c"
    called = await trio.to_thread.run_sync(
        lambda: client.models.generate_content(model="gemini-2.5-flash", contents="x")
    )
    assert called.function_calls[0].name == "get_weather" and called.function_calls[0].args == {
        "city": "Oslo"
    }


async def test_ollama_sdk_against_the_fake(fake_ollama: FakeOllama) -> None:
    import ollama

    client = ollama.Client(host=fake_ollama.base_url)
    fake_ollama.replies.push(Reply(text="abc"), Reply(text="a b c", pieces=3))
    listed = await trio.to_thread.run_sync(client.list)
    assert [m.model for m in listed.models] == ["llama3.2:3b", "qwen2.5-coder:7b"]
    response = await trio.to_thread.run_sync(
        lambda: client.chat(model="llama3.2:3b", messages=[{"role": "user", "content": "x"}])
    )
    assert response.message.content == "abc" and response.eval_count == 7
    parts = await trio.to_thread.run_sync(
        lambda: [
            p.message.content
            for p in client.chat(
                model="llama3.2:3b", messages=[{"role": "user", "content": "x"}], stream=True
            )
        ]
    )
    assert "".join(parts) == "a b c"
