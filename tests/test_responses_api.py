"""End to end: the official OpenAI SDK's Responses API (`responses.create`, `responses.stream`,
stored responses) → relaybox → fake upstreams of other dialects (OpenAI chat completions,
Anthropic Messages)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
import trio
import trio_asyncio

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import api_provider, openai_provider, serve, settings_for
from tests.storage_fixtures import fresh_postgres_database
from tests.test_coding_agent_clients import client_key

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sdk(base_url: str, key: str = "sk-client") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=20)


async def test_create_translates_input_items_and_answers_with_a_response_object(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="Four.", prompt_tokens=21, completion_tokens=2))
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:
        raw = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).responses.with_raw_response.create(
                model="gpt-4o-mini",
                instructions="Be terse.",
                input=[
                    {"role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
                    {"role": "assistant", "content": [{"type": "output_text", "text": "Let me think."}]},
                    {"role": "user", "content": "Well?"},
                ],
                max_output_tokens=5,
                temperature=0,
                metadata={"ticket": "T-1"},
            )
        )
    response = raw.parse()
    assert response.output_text == "Four."
    assert response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_") and raw.headers["x-task-id"] == response.id
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        21,
        2,
        23,
    )
    assert response.metadata == {"ticket": "T-1"} and response.instructions == "Be terse."
    assert response.model == "gpt-4o-mini" and raw.headers["x-provider"] == "upstream"
    sent = fake_openai.chat_requests()[-1].json()
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "Let me think."},
        {"role": "user", "content": "Well?"},
    ]
    assert sent["max_tokens"] == 5 and sent["temperature"] == 0


async def test_a_function_call_and_its_output_round_trip_through_an_anthropic_upstream(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(Reply(text="", tool_call=("get_weather", '{"city": "Paris"}')))
    fake_anthropic.replies.push(Reply(text="Sunny in Paris."))
    provider = api_provider("anthropic", "claude", fake_anthropic.base_url, models=("claude-haiku-4-5",))
    async with serve(settings_for(tmp_path, provider)) as relay:
        client = sdk(relay.base_url)
        first = await trio.to_thread.run_sync(
            lambda: client.responses.create(
                model="claude-haiku-4-5", input="Weather in Paris?", tools=[WEATHER_TOOL]
            )
        )
        [call] = first.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Paris"}
        second = await trio.to_thread.run_sync(
            lambda: client.responses.create(
                model="claude-haiku-4-5",
                previous_response_id=first.id,
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"}],
                tools=[WEATHER_TOOL],
            )
        )
    assert second.output_text == "Sunny in Paris."
    assert second.previous_response_id == first.id
    messages = fake_anthropic.requests[-1].json()["messages"]
    assert messages[0]["role"] == "user" and "Weather in Paris?" in json.dumps(messages[0]["content"])
    tool_use = messages[1]["content"][0]
    assert tool_use["type"] == "tool_use" and tool_use["id"] == call.call_id
    assert tool_use["input"] == {"city": "Paris"}
    result = messages[2]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call.call_id


async def test_stream_events_arrive_in_the_documented_order(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.push(Reply(text="one two three", pieces=3))
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:

        def consume() -> tuple[list[object], object]:
            with sdk(relay.base_url).responses.stream(model="gpt-4o-mini", input="count") as stream:
                events = list(stream)
                return events, stream.get_final_response()

        events, final = await trio.to_thread.run_sync(consume)
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"
    assert final.output_text == "one two three"
    assert final.usage is not None and final.usage.total_tokens == 18


async def test_streamed_function_call_arguments_and_the_stored_response(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="", tool_call=("get_weather", '{"city": "Oslo"}'), tool_pieces=4))
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:
        client = sdk(relay.base_url)

        def consume() -> tuple[list[object], object]:
            with client.responses.stream(model="gpt-4o-mini", input="Oslo?", tools=[WEATHER_TOOL]) as stream:
                return list(stream), stream.get_final_response()

        events, final = await trio.to_thread.run_sync(consume)
        fetched = await trio.to_thread.run_sync(lambda: client.responses.retrieve(final.id))
        deleted = await trio.to_thread.run_sync(lambda: client.responses.delete(final.id))
        with pytest.raises(openai.NotFoundError):
            await trio.to_thread.run_sync(lambda: client.responses.retrieve(final.id))
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) == 4 and "".join(deltas) == '{"city": "Oslo"}'
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == '{"city": "Oslo"}'
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert fetched.id == final.id and fetched.output[0].call_id == call.call_id
    assert deleted is None


async def test_bad_input_is_a_400_in_openai_error_format(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        cases = {
            "input": {"model": "gpt-4o-mini"},
            "input[0].type": {"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": "x"}]},
            "tools[0].type": {"model": "gpt-4o-mini", "input": "hi", "tools": [{"type": "teleport"}]},
            "tool_choice": {"model": "gpt-4o-mini", "input": "hi", "tool_choice": {"type": "web_search"}},
            "previous_response_id": {
                "model": "gpt-4o-mini",
                "input": "hi",
                "previous_response_id": "resp_nope",
            },
            "text.format.type": {"model": "gpt-4o-mini", "input": "hi", "text": {"format": {"type": "xml"}}},
        }
        for param, body in cases.items():
            response = await client.post("/v1/responses", json=body)
            assert response.status_code == 400, (param, response.text)
            assert response.json()["error"]["param"] == param
        missing = await client.get("/v1/responses/resp_missing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"
    assert fake_openai.chat_requests() == []


HOSTED = [
    "web_search",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
]


async def test_hosted_tools_are_left_out_with_a_warning(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    body = {
        "model": "gpt-4o-mini",
        "input": "hi",
        "tools": [*({"type": kind} for kind in HOSTED), WEATHER_TOOL],
        # Accepted and ignored:
        "background": False,
        "truncation": "auto",
        "include": ["reasoning.encrypted_content"],
    }
    async with (
        serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        answered = await client.post("/v1/responses", json=body)
        both = await client.post("/v1/responses", json={**body, "model": "gpt-9-ultra"})
        file_image = await client.post(
            "/v1/responses",
            json={
                "model": "gpt-4o-mini",
                "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}],
            },
        )
    assert answered.status_code == 200, answered.text
    assert all(kind in answered.headers["x-relaybox-warning"] for kind in HOSTED)
    warned = both.headers["x-relaybox-warning"]
    assert (
        warned.startswith("no provider serves the model 'gpt-9-ultra'")
        and "; hosted tools left out" in warned
    )
    sent = fake_openai.chat_requests()[-1].json()
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]
    assert (
        file_image.status_code == 400
        and "file ids are not supported" in file_image.json()["error"]["message"]
    )


async def test_a_conversation_continues_by_id_on_another_instance_sharing_postgresql(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="Noted: your name is Ada."), Reply(text="Your name is Ada."))
    provider = openai_provider("upstream", fake_openai.base_url)
    async with (
        trio_asyncio.open_loop(),
        fresh_postgres_database() as dsn,
        serve(settings_for(tmp_path / "a", provider, database_url=dsn)) as first,
        serve(settings_for(tmp_path / "b", provider, database_url=dsn)) as second,
    ):
        opened = await trio.to_thread.run_sync(
            lambda: sdk(first.base_url).responses.create(model="gpt-4o-mini", input="My name is Ada.")
        )
        continued = await trio.to_thread.run_sync(
            lambda: sdk(second.base_url).responses.create(
                model="gpt-4o-mini", input="What is my name?", previous_response_id=opened.id
            )
        )
        fetched = await trio.to_thread.run_sync(lambda: sdk(second.base_url).responses.retrieve(opened.id))
    assert continued.output_text == "Your name is Ada." and fetched.output_text == "Noted: your name is Ada."
    sent = fake_openai.chat_requests()[-1].json()["messages"]
    assert sent == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Noted: your name is Ada."},
        {"role": "user", "content": "What is my name?"},
    ]


async def test_a_stored_response_belongs_to_the_key_that_made_it(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay:
        alice, bob = await client_key(relay, "alice"), await client_key(relay, "bob")
        made = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url, alice).responses.create(model="gpt-4o-mini", input="secret plans")
        )
        unstored = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url, alice).responses.create(model="gpt-4o-mini", input="x", store=False)
        )
        for attempt in (
            lambda: sdk(relay.base_url, bob).responses.retrieve(made.id),
            lambda: sdk(relay.base_url, bob).responses.delete(made.id),
            lambda: sdk(relay.base_url, alice).responses.retrieve(unstored.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await trio.to_thread.run_sync(attempt)
        with pytest.raises(openai.BadRequestError, match="no stored response"):
            await trio.to_thread.run_sync(
                lambda: sdk(relay.base_url, bob).responses.create(
                    model="gpt-4o-mini", input="and then?", previous_response_id=made.id
                )
            )
        mine = await trio.to_thread.run_sync(lambda: sdk(relay.base_url, alice).responses.retrieve(made.id))
    assert mine.id == made.id


async def test_without_prompts_in_the_log_responses_stay_in_memory(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="Noted."), Reply(text="You said: blue."))
    settings = settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url), log_prompts="none")
    async with serve(settings) as relay:
        client = sdk(relay.base_url)
        first = await trio.to_thread.run_sync(
            lambda: client.responses.create(model="gpt-4o-mini", input="blue")
        )
        second = await trio.to_thread.run_sync(
            lambda: client.responses.create(
                model="gpt-4o-mini", input="what did I say?", previous_response_id=first.id
            )
        )
        stored = await relay.system.storage.response_chain(first.id, limit=5)
    assert relay.system.response_writer is None and stored == [], (
        "nothing of the conversation in the database"
    )
    assert second.output_text == "You said: blue."
    assert [m["content"] for m in fake_openai.chat_requests()[-1].json()["messages"]] == [
        "blue",
        "Noted.",
        "what did I say?",
    ]
