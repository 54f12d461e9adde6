"""POST /v1/embeddings with the official OpenAI SDK: routed to the providers that embed (OpenAI-
compatible, Gemini, Ollama), strings or token ids, float or base64, usage, cost and the log."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import attrs
import httpx
import openai
import pytest
import trio
from relaybox.protocol.routing.catalog import ModelEntry

from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply, fake_vector
from tests.harness import api_provider, openai_provider, serve, settings_for

SMALL = ModelEntry("text-embedding-3-small", "economy", 0.02, 0.0, 8191)


def embedder(name: str, base_url: str, kind: str = "openai-compatible", model: ModelEntry = SMALL):  # type: ignore[no-untyped-def]
    provider = api_provider(kind, name, base_url, models=("chat-model",))
    return attrs.evolve(provider, embedding_models=(model,))


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0, timeout=20)


async def test_sdk_embeds_strings_and_token_ids_with_cost_and_log(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with serve(settings_for(tmp_path, embedder("openai", fake_openai.base_url))) as relay:
        client = sdk(relay.base_url)
        raw = await trio.to_thread.run_sync(
            lambda: client.embeddings.with_raw_response.create(
                model="text-embedding-3-small", input=["the cat sat", "on the mat today"], dimensions=16
            )
        )
        tokens = await trio.to_thread.run_sync(
            lambda: client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
        )
        with trio.fail_after(10):
            while not await relay.system.storage.recent(provider="openai", limit=5):  # noqa: ASYNC110 - polling the database
                await trio.sleep(0.05)
        logged = await relay.system.storage.recent(limit=5)
    result = raw.parse()
    assert [len(item.embedding) for item in result.data] == [16, 16]
    assert result.data[0].embedding == pytest.approx(fake_vector("the cat sat", 16))
    assert result.data[1].embedding == pytest.approx(fake_vector("on the mat today", 16))
    assert result.usage.prompt_tokens == 7 and result.model == "text-embedding-3-small"
    assert raw.headers["x-provider"] == "openai" and float(raw.headers["x-cost-usd"]) == pytest.approx(
        7 * 0.02 / 1e6
    )
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5
    sent = fake_openai.requests[-1].json()
    assert sent["input"] == [[1, 2, 3], [4, 5]] and sent["encoding_format"] == "float"
    assert {row.task_category for row in logged} == {"embedding"} and all(
        row.status == "success" for row in logged
    )


async def test_base64_is_the_vectors_float32_bytes(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    async with (
        serve(settings_for(tmp_path, embedder("openai", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"})
    encoded = response.json()["data"][0]["embedding"]
    raw = base64.b64decode(encoded)
    assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(fake_vector("hello"), rel=1e-6)


async def test_gemini_and_ollama_embed_and_a_provider_that_cannot_is_passed_over(
    tmp_path: Path, fake_gemini: FakeGemini, fake_ollama: FakeOllama
) -> None:
    gemini = embedder(
        "gemini", fake_gemini.base_url, "gemini", ModelEntry("gemini-embedding-001", "economy", 0.15, 0.0)
    )
    ollama = embedder(
        "ollama", fake_ollama.base_url, "ollama", ModelEntry("nomic-embed-text", "economy", 0.0, 0.0)
    )
    async with serve(settings_for(tmp_path, gemini, ollama)) as relay:
        client = sdk(relay.base_url)
        by_gemini = await trio.to_thread.run_sync(
            lambda: client.embeddings.with_raw_response.create(
                model="gemini-embedding-001", input=["a b c"], dimensions=4
            )
        )
        by_ollama = await trio.to_thread.run_sync(
            lambda: client.embeddings.with_raw_response.create(model="ollama:nomic-embed-text", input="a b c")
        )
        # Token ids are for OpenAI-compatible upstreams only: neither can take them.
        with pytest.raises(openai.APIStatusError) as refused:
            await trio.to_thread.run_sync(lambda: client.embeddings.create(model="auto", input=[[1, 2]]))
    assert by_gemini.parse().data[0].embedding == pytest.approx(fake_vector("a b c", 4))
    assert by_gemini.headers["x-provider"] == "gemini" and float(by_gemini.headers["x-cost-usd"]) > 0
    assert by_ollama.parse().data[0].embedding == pytest.approx(fake_vector("a b c"))
    assert by_ollama.parse().usage.prompt_tokens == 3 and by_ollama.headers["x-provider"] == "ollama"
    assert refused.value.status_code == 400 and "embed" in refused.value.message


async def test_fallback_to_the_next_embedder_and_bad_input(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(status=503))
    first, second = embedder("first", fake_openai.base_url), embedder("second", fake_openai_backup.base_url)
    async with (
        serve(settings_for(tmp_path, first, second)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        fallen = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
        bad = {
            "input": {"model": "auto"},
            "input[1]": {"input": ["ok", 3]},
            "encoding_format": {"input": "x", "encoding_format": "int8"},
            "dimensions": {"input": "x", "dimensions": 0},
        }
        answers = {param: await client.post("/v1/embeddings", json=body) for param, body in bad.items()}
        unknown = await client.post("/v1/embeddings", json={"model": "no-such-embedder", "input": "x"})
        listed = (await client.get("/v1/models")).json()["data"]
    assert fallen.status_code == 200 and fallen.headers["x-provider"] == "second"
    assert fallen.headers["x-fallback-used"] == "true"
    for param, response in answers.items():
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    assert unknown.status_code == 404 and "first:text-embedding-3-small" in unknown.json()["error"]["message"]
    embedders = [entry["relaybox"]["pinned"] for entry in listed if entry["relaybox"]["kind"] == "embedding"]
    assert embedders == ["first:text-embedding-3-small", "second:text-embedding-3-small"]


async def test_no_provider_embeds(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("chat-only", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 404 and "embeds" in response.json()["error"]["message"]
