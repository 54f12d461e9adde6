"""The fake upstreams speak their wire formats well enough for the official SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest
import trio

from tests.fakes.anthropic_upstream import FakeAnthropic
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
