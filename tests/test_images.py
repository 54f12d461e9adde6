"""POST /v1/images/generations: routed to the providers that generate images, cost recorded."""

from __future__ import annotations

from pathlib import Path

import attrs
import httpx
import openai
import pytest
import trio
from relaybox.protocol.routing.catalog import ModelEntry

from tests.fakes.openai_upstream import FAKE_PNG, FakeOpenAI
from tests.harness import openai_provider, serve, settings_for

IMAGE_MODELS = (ModelEntry("gpt-image-1"), ModelEntry("dall-e-3", per_image=0.04))


def image_provider(name: str, base_url: str, **changes):  # type: ignore[no-untyped-def]
    return attrs.evolve(openai_provider(name, base_url), image_models=IMAGE_MODELS, **changes)


async def test_openai_sdk_generates_images_through_relaybox(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    async with serve(settings_for(tmp_path, image_provider("openai", fake_openai.base_url))) as relay:
        client = openai.OpenAI(base_url=relay.base_url + "/v1", api_key="k", max_retries=0)
        token_priced = await trio.to_thread.run_sync(
            lambda: client.images.with_raw_response.generate(
                model="gpt-image-1", prompt="a lighthouse at dusk", size="1024x1024"
            )
        )
        per_image = await trio.to_thread.run_sync(
            lambda: client.images.with_raw_response.generate(
                model="dall-e-3", prompt="a fox", n=2, response_format="url"
            )
        )
    first = token_priced.parse()
    assert first.data[0].b64_json == FAKE_PNG
    assert token_priced.headers["x-provider"] == "openai"
    assert float(token_priced.headers["x-cost-usd"]) > 0  # gpt-image-1 tokens, priced by genai-prices
    second = per_image.parse()
    assert [d.url for d in second.data] == ["https://images.invalid/0.png", "https://images.invalid/1.png"]
    assert float(per_image.headers["x-cost-usd"]) == pytest.approx(0.08)
    sent = [r.json() for r in fake_openai.requests if r.path.endswith("/images/generations")]
    assert sent[0] == {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "n": 1, "size": "1024x1024"}


async def test_openrouter_style_image_output_from_chat(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    provider = attrs.evolve(
        openai_provider("openrouter", fake_openai.base_url),
        image_models=(ModelEntry("google/gemini-2.5-flash-image"),),
        image_api="chat",
    )
    async with (
        serve(settings_for(tmp_path, provider)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/images/generations", json={"prompt": "a red square"})
    assert response.status_code == 200
    assert response.json()["data"] == [{"b64_json": FAKE_PNG}]
    assert response.headers["x-model"] == "google/gemini-2.5-flash-image"
    sent = fake_openai.chat_requests()[-1].json()
    assert sent["modalities"] == ["image", "text"] and sent["messages"][0]["content"] == "a red square"


async def test_image_errors(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("chat-only", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        no_maker = await client.post("/v1/images/generations", json={"prompt": "x"})
        no_prompt = await client.post("/v1/images/generations", json={"model": "dall-e-3"})
        bad_n = await client.post("/v1/images/generations", json={"prompt": "x", "n": 50})
    assert no_maker.status_code == 404 and "generates images" in no_maker.json()["error"]["message"]
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"
    assert bad_n.status_code == 400 and bad_n.json()["error"]["param"] == "n"
