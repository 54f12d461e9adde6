"""The Anthropic provider (upstream) and relaybox's own Anthropic Messages API (inbound)."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import openai
import trio
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import api_provider, claude_executable, openai_provider, serve, settings_for

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ARGUMENTS = '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'


def openai_sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-client", max_retries=0, timeout=30)


def anthropic_settings(tmp_path: Path, fake: FakeAnthropic):
    return settings_for(
        tmp_path,
        api_provider(
            "anthropic", "anthropic", fake.base_url, models=("claude-sonnet-4-5",), api_key="sk-ant-upstream"
        ),
    )


# --- upstream: the Anthropic provider -------------------------------------------------------


async def test_openai_client_to_anthropic_upstream(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.replies.push(
        Reply(
            text="Bonjour.",
            prompt_tokens=20,
            cache_read_tokens=100,
            cache_write_tokens=5,
            completion_tokens=3,
        )
    )
    async with serve(anthropic_settings(tmp_path, fake_anthropic)) as relay:
        completion = await trio.to_thread.run_sync(
            lambda: openai_sdk(relay.base_url).chat.completions.create(
                model="claude-sonnet-4-5",
                temperature=1.5,
                stop=["END"],
                messages=[
                    {"role": "system", "content": "Speak French."},
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Salut"},
                    {"role": "user", "content": "Again"},
                ],
            )
        )
    assert completion.choices[0].message.content == "Bonjour."
    assert completion.usage.prompt_tokens == 125 and completion.usage.completion_tokens == 3
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    sent = fake_anthropic.message_requests()[-1]
    body = sent.json()
    assert (
        sent.headers["x-api-key"] == "sk-ant-upstream" and sent.headers["anthropic-version"] == "2023-06-01"
    )
    assert body["system"] == "Speak French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["temperature"] == 1.0 and body["stop_sequences"] == ["END"]
    assert body["max_tokens"] == 32_000, "no limit asked: the model's own, not a cut-off answer"


async def test_streamed_tool_call_round_trips_through_anthropic(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(
        Reply(text="Let me check.", pieces=2, tool_call=("get_weather", ARGUMENTS), tool_pieces=9)
    )
    async with serve(anthropic_settings(tmp_path, fake_anthropic)) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                openai_sdk(relay.base_url).chat.completions.create(
                    model="claude-sonnet-4-5",
                    stream=True,
                    tools=[WEATHER_TOOL],
                    tool_choice="required",
                    messages=[{"role": "user", "content": "Weather in Paris?"}],
                )
            )
        )
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # The second turn carries the call and its result back upstream.
        await trio.to_thread.run_sync(
            lambda: openai_sdk(relay.base_url).chat.completions.create(
                model="claude-sonnet-4-5",
                tools=[WEATHER_TOOL],
                messages=[
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "toolu_fake",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ARGUMENTS},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "toolu_fake", "content": "18 C, sunny"},
                ],
            )
        )
    assert text == "Let me check."
    assert calls[0].id == "toolu_fake" and calls[0].function.name == "get_weather"
    assert {call.index for call in calls} == {0}
    assert "".join(call.function.arguments or "" for call in calls) == ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    first, second = (r.json() for r in fake_anthropic.message_requests())
    assert first["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert first["tool_choice"] == {"type": "any"}
    assert second["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_fake", "name": "get_weather", "input": json.loads(ARGUMENTS)}
    ]
    assert second["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_fake", "content": "18 C, sunny"}
    ]


async def test_images_become_anthropic_image_blocks(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    async with serve(anthropic_settings(tmp_path, fake_anthropic)) as relay:
        await trio.to_thread.run_sync(
            lambda: openai_sdk(relay.base_url).chat.completions.create(
                model="claude-sonnet-4-5",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                            {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.jpg"}},
                        ],
                    }
                ],
            )
        )
    content = fake_anthropic.message_requests()[-1].json()["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.invalid/cat.jpg"}},
    ]


async def test_anthropic_overload_mid_stream_is_an_error_event(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(Reply(status=529))
    async with (
        serve(anthropic_settings(tmp_path, fake_anthropic)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 503 and "529" in response.json()["error"]["message"]


# --- inbound: relaybox's /v1/messages -----------------------------------------------------


def anthropic_sdk(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="sk-client", max_retries=0, timeout=30)


async def test_anthropic_sdk_as_client_answered_by_an_openai_provider(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="Hi from OpenAI."), Reply(text="streamed answer", pieces=3))
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        client = anthropic_sdk(relay.base_url)
        message = await trio.to_thread.run_sync(
            lambda: client.messages.create(
                model="gpt-4o-mini",
                max_tokens=50,
                system="Be brief.",
                messages=[{"role": "user", "content": "Hello"}],
            )
        )

        def stream() -> tuple[str, anthropic.types.Message]:
            with client.messages.stream(
                model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "Hello"}]
            ) as events:
                return "".join(events.text_stream), events.get_final_message()

        text, final = await trio.to_thread.run_sync(stream)
    assert message.content[0].text == "Hi from OpenAI." and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert text == "streamed answer" and final.usage.output_tokens == 7
    upstream = fake_openai.chat_requests()[0].json()
    assert upstream["messages"][0] == {"role": "system", "content": "Be brief."}
    assert upstream["max_tokens"] == 50


async def test_anthropic_sdk_gets_tool_use_blocks_from_an_openai_provider(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="", pieces=1, tool_call=("get_weather", ARGUMENTS), tool_pieces=7))
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        client = anthropic_sdk(relay.base_url)

        def stream() -> anthropic.types.Message:
            with client.messages.stream(
                model="gpt-4o-mini",
                max_tokens=50,
                messages=[{"role": "user", "content": "Weather?"}],
                tools=[{"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}],
            ) as events:
                return events.get_final_message()

        final = await trio.to_thread.run_sync(stream)
    tool_use = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use"
    assert tool_use[0].name == "get_weather" and tool_use[0].input == json.loads(ARGUMENTS)
    assert fake_openai.chat_requests()[0].json()["tools"][0]["function"]["name"] == "get_weather"


async def test_claude_cli_as_client_answered_by_an_openai_provider(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    claude = claude_executable()
    fake_openai.replies.default = Reply(text="Answer routed through relaybox.", pieces=3)
    settings = settings_for(
        tmp_path,
        openai_provider("up", fake_openai.base_url, models=("gpt-4o-mini",)),
        aliases={"claude-sonnet-5": "up:gpt-4o-mini"},
    )
    async with serve(settings) as relay:
        # With client keys in force: the CLI sends its key as x-api-key, as Anthropic's API expects.
        key = new_key()
        await relay.system.storage.create_key(ApiKey("claude-code", key_hash(key), shown_prefix(key)))
        assert relay.system.keys is not None
        await relay.system.keys.load()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "ANTHROPIC_BASE_URL": relay.base_url,
            "ANTHROPIC_API_KEY": key,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        result = await trio.run_process(
            [
                claude,
                "-p",
                "--output-format",
                "json",
                "--model",
                "sonnet",
                "--tools",
                "",
                "--strict-mcp-config",
                "--setting-sources",
                "",
                "--no-session-persistence",
            ],
            stdin=b"What is relaybox?",
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            cwd=str(tmp_path),
            check=False,
        )
    assert result.returncode == 0, result.stdout.decode()[-500:] + result.stderr.decode()[-500:]
    answer = json.loads(result.stdout)
    assert answer["result"] == "Answer routed through relaybox." and answer["is_error"] is False
    assert "What is relaybox?" in json.dumps(fake_openai.chat_requests()[-1].json()["messages"])


async def test_local_backend_shape_and_count_tokens_and_errors(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        local = await client.post(
            "/v1/messages", json={"messages": [{"role": "user", "content": "Write about AI"}]}
        )
        counted = await client.post(
            "/v1/messages/count_tokens",
            headers={"anthropic-version": "2023-06-01"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world"}]},
        )
        missing_max = await client.post(
            "/v1/messages",
            headers={"anthropic-version": "2023-06-01"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        )
        unknown = await client.post(
            "/v1/messages",
            headers={"anthropic-version": "2023-06-01"},
            json={"model": "route:nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
    assert local.status_code == 200 and local.json()["object"] == "chat.completion"
    assert local.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    # o200k: "hello world" is 2 tokens, a message's framing 3 more, the reply's priming 3.
    assert counted.status_code == 200 and counted.json()["input_tokens"] == 2 + 3 + 3
    assert missing_max.status_code == 400
    assert missing_max.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "'max_tokens' is required: a positive integer"},
    }
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
