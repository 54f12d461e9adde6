"""Every bad input and every failure answers in OpenAI's error format with the right status."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from relaybox.protocol.routing.plan import RoutingSettings

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import openai_provider, serve, settings_for

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.text
    return body["error"]


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", "'model' is a required property"),
        ({"model": "gpt-4o-mini"}, "messages", "'messages' is a required property"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages", "at least one message"),
        ({"model": "gpt-4o-mini", "messages": "hi"}, "messages", "must be an array"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model", "must be a string"),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "hi"}]},
            "messages[0].role",
            "must be one of",
        ),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "string or an array",
        ),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0].type",
            "not supported",
        ),
        ({**HELLO, "temperature": 3}, "temperature", "between 0 and 2"),
        ({**HELLO, "temperature": "warm"}, "temperature", "must be a number"),
        ({**HELLO, "max_tokens": 0}, "max_tokens", "at least 1"),
        ({**HELLO, "stream": "yes"}, "stream", "must be a boolean"),
        ({**HELLO, "stop": [1]}, "stop[0]", "must be a string"),
        ({**HELLO, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", "boolean"),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "required",
        ),
    ],
)
async def test_schema_violations_are_400_naming_the_field(
    tmp_path: Path, fake_openai: FakeOpenAI, payload: dict, param: str, fragment: str
) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/chat/completions", json=payload)
    error = assert_openai_error(response, 400)
    assert error["param"] == param
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    assert fake_openai.chat_requests() == []


async def test_malformed_json_is_400(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            content=b'{"model": "gpt-4o-mini", "messages": [',
            headers={"content-type": "application/json"},
        )
        not_an_object = await client.post(
            "/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"}
        )
    error = assert_openai_error(response, 400)
    assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]
    assert "must be a JSON object" in assert_openai_error(not_an_object, 400)["message"]


async def test_unknown_model_is_404_saying_where_the_names_are_when_so_configured(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path,
        openai_provider("up", fake_openai.base_url),
        routing=RoutingSettings(unknown_models="reject"),
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/chat/completions", json={**HELLO, "model": "no-such-model"})
        pinned_unknown_provider = await client.post(
            "/v1/chat/completions", json={**HELLO, "model": "nope:gpt-4o"}
        )
    error = assert_openai_error(response, 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "GET /v1/models" in error["message"]
    assert assert_openai_error(pinned_unknown_provider, 404)["code"] == "model_not_found"


async def test_body_over_the_limit_is_413(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), max_body_bytes=2048)
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]}
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await client.post("/v1/chat/completions", json=big)
        small = await client.post("/v1/chat/completions", json=HELLO)
    error = assert_openai_error(response, 413)
    assert "2048 bytes" in error["message"]
    assert small.status_code == 200


async def test_a_refused_body_does_not_poison_the_kept_alive_connection(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # The body is refused before it is read; had the connection stayed open, the next request on
    # it would have been read as the rest of that body, and hung.
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), max_body_bytes=1024 * 1024)
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 3_000_000}]}
    one_connection = httpx.Limits(max_connections=1)
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, limits=one_connection, timeout=10) as client,
    ):
        statuses = []
        for body in (big, HELLO, big, HELLO):
            with trio.fail_after(10):
                statuses.append((await client.post("/v1/chat/completions", json=body)).status_code)
        refused = await client.post("/v1/chat/completions", json=big)
    assert statuses == [413, 200, 413, 200]
    assert refused.headers["connection"] == "close"


async def test_every_candidate_down_is_503_with_retry_after(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.default = Reply(status=500, error_message="boom")
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        first = await client.post("/v1/chat/completions", json=HELLO)
        for _ in range(3):  # the breaker opens after 3 consecutive failures
            await client.post("/v1/chat/completions", json=HELLO)
        calls_before = len(fake_openai.chat_requests())
        after_trip = await client.post("/v1/chat/completions", json=HELLO)
    error = assert_openai_error(first, 503)
    assert "up/gpt-4o-mini: server_error: HTTP 500: boom" in error["message"]
    assert int(first.headers["retry-after"]) >= 1
    error = assert_openai_error(after_trip, 503)
    assert "provider is down" in error["message"]
    assert int(after_trip.headers["retry-after"]) >= 1
    assert len(fake_openai.chat_requests()) == calls_before, "an open breaker sends nothing upstream"


async def test_upstream_rate_limit_is_429_with_its_retry_after(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(status=429, headers={"retry-after": "42"}, error_message="slow down"))
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/chat/completions", json=HELLO)
        # The breaker stays open for the upstream's Retry-After: no second call goes out.
        again = await client.post("/v1/chat/completions", json=HELLO)
    error = assert_openai_error(response, 429)
    assert error["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "42"
    assert again.status_code == 503 and 40 <= int(again.headers["retry-after"]) <= 42
    assert len(fake_openai.chat_requests()) == 1


async def test_all_candidates_saturated_is_429(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    import trio

    fake_openai.replies.default = Reply(delay=2.0)
    provider = openai_provider("up", fake_openai.base_url, slots=1, mailbox=1)
    async with (
        serve(settings_for(tmp_path, provider)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        statuses: list[int] = []
        rejected: list[httpx.Response] = []

        async def one(i: int) -> None:
            body = {**HELLO, "messages": [{"role": "user", "content": f"request {i}"}]}
            response = await client.post("/v1/chat/completions", json=body)
            statuses.append(response.status_code)
            if response.status_code != 200:
                rejected.append(response)

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
                await trio.sleep(0.05)
    assert sorted(statuses) == [200, 200, 429, 429]  # one running, one queued, two turned away
    for response in rejected:
        error = assert_openai_error(response, 429)
        assert "busy" in error["message"]
        assert int(response.headers["retry-after"]) >= 1


async def test_upstream_4xx_passes_through_as_a_refusal(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.replies.push(Reply(status=400, error_message="context_length_exceeded"))
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/chat/completions", json=HELLO)
    error = assert_openai_error(response, 400)
    assert "context_length_exceeded" in error["message"] and error["code"] == "upstream_rejected"


async def test_unknown_route_and_wrong_method(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        missing = await client.get("/v1/nothing")
        wrong = await client.get("/v1/chat/completions")
        unsupported = {
            path: await client.post(path, json={"model": "auto", "prompt": "x"})
            for path in ("/v1/completions", "/v1/batches", "/v1/assistants", "/v1/audio/speech")
        }
        upload = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")})
    assert_openai_error(missing, 404)
    assert_openai_error(wrong, 405)
    for path, response in unsupported.items():
        assert_openai_error(response, 404)
        assert "/v1/responses" in response.json()["error"]["message"], path  # the hint lists what exists
    assert_openai_error(upload, 415)


async def test_no_provider_configured_is_503(tmp_path: Path) -> None:
    async with serve(settings_for(tmp_path)) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await client.post("/v1/chat/completions", json={**HELLO, "model": "auto"})
        health = await client.get("/health")
    assert_openai_error(response, 503)
    assert health.status_code == 503 and json.loads(health.text)["status"] == "down"
