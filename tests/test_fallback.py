"""Fallback: failures before the first delta are invisible; after it, the stream ends with an error."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import trio

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import openai_provider, serve, settings_for

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def two_providers(tmp_path: Path, primary: FakeOpenAI, backup: FakeOpenAI, **limits: float):
    return settings_for(
        tmp_path,
        openai_provider("primary", primary.base_url, **limits),  # type: ignore[arg-type]
        openai_provider("backup", backup.base_url),
        default_provider="primary",
    )


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-client", max_retries=0, timeout=20)


@pytest.mark.parametrize(
    "failure",
    [
        Reply(status=429, headers={"retry-after": "30"}),
        Reply(status=503),
        Reply(status=401, error_message="invalid api key"),
        Reply(reset_after=0),  # connection reset before any content
        Reply(garbage_after=0),  # malformed SSE before any content
    ],
    ids=["429", "503", "401", "reset", "malformed"],
)
async def test_stream_failure_before_first_delta_is_invisible(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI, failure: Reply
) -> None:
    fake_openai.replies.push(failure)
    async with serve(two_providers(tmp_path, fake_openai, fake_openai_backup)) as relay:

        def consume() -> tuple[str, dict[str, str]]:
            with sdk(relay.base_url).chat.completions.with_streaming_response.create(
                stream=True, **HELLO
            ) as response:
                text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
                return text, dict(response.headers)

        text, headers = await trio.to_thread.run_sync(consume)
    assert text == "Answer from the backup upstream."
    assert headers["x-provider"] == "backup"
    assert headers["x-fallback-used"] == "true"
    assert "fallback after primary/gpt-4o-mini failed" in headers["x-router-reason"]
    assert len(fake_openai.chat_requests()) == 1 and len(fake_openai_backup.chat_requests()) == 1


async def test_non_streaming_fallback_covers_failures_mid_answer(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    # The upstream is asked to stream only when the client streams; a non-streaming answer
    # is held until complete, so a timeout anywhere in it still falls back.
    fake_openai.replies.push(Reply(stall=True))
    settings = two_providers(tmp_path, fake_openai, fake_openai_backup, idle_timeout=0.5)
    async with serve(settings) as relay:
        raw = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.with_raw_response.create(**HELLO)
        )
    assert raw.parse().choices[0].message.content == "Answer from the backup upstream."
    assert raw.headers["x-provider"] == "backup" and raw.headers["x-fallback-used"] == "true"
    assert "timeout" in raw.headers["x-router-reason"]
    # The time spent waiting on the stalled upstream is not counted as relaybox's overhead.
    assert float(raw.headers["x-overhead-ms"]) < 400


@pytest.mark.parametrize(
    "failure",
    [Reply(text="a b c d", pieces=4, reset_after=2), Reply(text="a b c d", pieces=4, garbage_after=2)],
    ids=["reset", "malformed"],
)
async def test_stream_failure_after_first_delta_ends_with_an_error_event(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI, failure: Reply
) -> None:
    fake_openai.replies.push(failure, failure)
    async with serve(two_providers(tmp_path, fake_openai, fake_openai_backup)) as relay:

        def consume() -> tuple[list[str], Exception | None]:
            texts: list[str] = []
            try:
                for chunk in sdk(relay.base_url).chat.completions.create(stream=True, **HELLO):
                    if chunk.choices:
                        texts.append(chunk.choices[0].delta.content or "")
            except openai.APIError as error:
                return texts, error
            return texts, None

        texts, error = await trio.to_thread.run_sync(consume)
        async with httpx.AsyncClient(base_url=relay.base_url) as client:
            raw = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
    assert "".join(texts) == "a b "
    assert error is not None and "failed mid-answer" in str(error)
    assert fake_openai_backup.chat_requests() == [], "no fallback once the client has seen output"
    # On the wire: an OpenAI-style error frame, and no [DONE] after it.
    frames = [line for line in raw.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] != "data: [DONE]"


async def test_upstream_that_stalls_mid_stream_times_out_with_an_error_event(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="a b c d", pieces=4, stall_after=1))
    settings = two_providers(tmp_path, fake_openai, fake_openai_backup, idle_timeout=0.5)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        raw = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
    frames = [line.removeprefix("data: ") for line in raw.text.splitlines() if line.startswith("data: ")]
    assert '"error"' in frames[-1] and "no progress from the upstream" in frames[-1]


async def test_pinned_provider_does_not_fall_back(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(status=503))
    async with (
        serve(two_providers(tmp_path, fake_openai, fake_openai_backup)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/chat/completions", json={**HELLO, "model": "primary:gpt-4o-mini"})
    assert response.status_code == 503
    assert fake_openai_backup.chat_requests() == []


async def test_router_counts_outcomes_per_provider_and_model(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(status=503))
    async with (
        serve(two_providers(tmp_path, fake_openai, fake_openai_backup)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        await client.post("/v1/chat/completions", json=HELLO)
        await client.post("/v1/chat/completions", json=HELLO)
        actors = (await client.get("/actors")).json()
    router = next(c for c in actors["supervisor"]["children"] if c["kind"] == "router")
    assert router["outcomes"]["primary/gpt-4o-mini"] == {
        "successes": 1,
        "failures": {"server_error": 1},
        "cancelled": 0,
        "served_as_fallback": 0,
    }
    assert router["outcomes"]["backup/gpt-4o-mini"]["served_as_fallback"] == 1


async def test_a_prompt_beyond_a_models_window_goes_to_a_bigger_one(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    import attrs
    from relaybox.protocol.routing.catalog import ModelEntry

    small = attrs.evolve(
        openai_provider("small", fake_openai.base_url),
        models=(ModelEntry("gpt-4o-mini", context_window=1000),),
    )
    big = openai_provider("big", fake_openai_backup.base_url)  # 128k window
    long_prompt = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "word " * 2000}]}
    async with (
        serve(settings_for(tmp_path, small, big, default_provider="small")) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        routed = await client.post("/v1/chat/completions", json=long_prompt)
    async with (
        serve(settings_for(tmp_path, small)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        refused = await client.post("/v1/chat/completions", json=long_prompt)
    assert routed.status_code == 200 and routed.headers["x-provider"] == "big"
    assert fake_openai.chat_requests() == []
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "capability_missing"
    assert "context window is 1000" in refused.json()["error"]["message"]


async def test_tier_names_route_to_the_cheapest_model_of_the_tier(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    import attrs
    from relaybox.protocol.routing.catalog import ModelEntry

    pricey = attrs.evolve(
        openai_provider("pricey", fake_openai.base_url),
        models=(ModelEntry("big-economy", "economy", 1.0, 4.0),),
    )
    cheap = attrs.evolve(
        openai_provider("cheap", fake_openai_backup.base_url),
        models=(ModelEntry("small-economy", "economy", 0.1, 0.4),),
    )
    async with (
        serve(settings_for(tmp_path, pricey, cheap, default_provider="pricey")) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        economy = await client.post("/v1/chat/completions", json={**HELLO, "model": "economy"})
        legacy = await client.post("/v1/chat/completions", json={**HELLO, "model": "gpt-3.5-turbo"})
    assert economy.headers["x-provider"] == "cheap" and economy.headers["x-model"] == "small-economy"
    reason = economy.headers["x-router-reason"]
    assert reason.startswith("tier economy: ") and "cheap/small-economy: cheapest economy" in reason
    assert legacy.headers["x-model"] == "small-economy"
