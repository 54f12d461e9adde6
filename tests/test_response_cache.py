"""The response cache: deterministic requests answered again from memory, through the HTTP API;
and the cache itself (LRU in bytes, TTL) on a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from relaybox.protocol.caching import cache_key, cache_policy
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.events import Answering, ContentDelta, Finished, Usage
from relaybox.web.answer_cache import AnswerCache

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import eventually, openai_provider, serve, settings_for
from tests.test_dedup import TEXT, streamed_text

DETERMINISTIC = {
    "model": "gpt-4o-mini",
    "temperature": 0,
    "messages": [{"role": "user", "content": "list the steps"}],
}


async def post(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=body, headers=headers)


async def test_a_deterministic_request_is_answered_again_from_the_cache(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        first = await post(client, DETERMINISTIC)
        again = await post(client, DETERMINISTIC)
        streamed = await post(client, {**DETERMINISTIC, "stream": True})  # a stream, from the cached answer
        other_user = await post(
            client, {**DETERMINISTIC, "user": "someone-else"}
        )  # who asks is not the question
        await eventually(lambda: relay.system.recorder.written >= 4, within=10)
        rows = (await client.get("/api/requests", params={"limit": 10})).json()["data"]
        stats = (await client.get("/api/stats")).json()
        summary = stats["summary"]
    assert len(fake_openai.chat_requests()) == 1
    assert first.headers["x-cache-hit"] == "false" and float(first.headers["x-cost-usd"]) > 0
    for hit in (again, streamed, other_user):
        assert hit.headers["x-cache-hit"] == "true"
        assert hit.headers["x-cached-from"] == first.headers["x-task-id"]
        assert hit.headers["x-provider"] == "up" and hit.headers["x-model"] == "gpt-4o-mini"
    assert again.json()["choices"][0]["message"]["content"] == TEXT
    assert again.json()["usage"] == first.json()["usage"] and float(again.headers["x-cost-usd"]) == 0
    assert (
        streamed.headers["content-type"].startswith("text/event-stream") and streamed_text(streamed) == TEXT
    )
    hits = [row for row in rows if row["cache_hit"]]
    assert len(hits) == 3 and all(row["cost_usd"] == 0 and row["status"] == "success" for row in hits)
    original = next(row for row in rows if not row["cache_hit"])
    assert all(row["baseline_cost_usd"] == pytest.approx(original["cost_usd"]) for row in hits)
    assert summary["cache_hit_rate"] == pytest.approx(3 / 4)
    assert summary["saved_usd"] == pytest.approx(3 * original["cost_usd"])
    assert stats["response_cache"]["entries"] == 1 and stats["response_cache"]["hits"] == 3


async def test_what_is_cached_and_what_the_client_decides(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    sampled = {**DETERMINISTIC, "temperature": 0.7}
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        not_deterministic = [await post(client, sampled) for _ in range(2)]
        opted_in = [await post(client, sampled, **{"x-relaybox-cache": "on"}) for _ in range(2)]
        refreshed = await post(client, DETERMINISTIC, **{"cache-control": "no-cache"})  # fetched, and kept
        after_refresh = await post(client, DETERMINISTIC)
        other = {**DETERMINISTIC, "messages": [{"role": "user", "content": "something else"}]}
        unstored = [await post(client, other, **{"cache-control": "no-store"}) for _ in range(2)]
        bad_ttl = await post(client, DETERMINISTIC, **{"x-relaybox-cache-ttl": "forever"})
        bad_switch = await post(client, DETERMINISTIC, **{"x-relaybox-cache": "maybe"})
    assert [r.headers.get("x-cache-hit") for r in not_deterministic] == [None, None]
    assert [r.headers["x-cache-hit"] for r in opted_in] == ["false", "true"]
    assert refreshed.headers["x-cache-hit"] == "false"
    assert after_refresh.headers["x-cache-hit"] == "true"
    assert after_refresh.headers["x-cached-from"] == refreshed.headers["x-task-id"]
    assert [r.headers.get("x-cache-hit") for r in unstored] == [None, None]
    # upstream calls: 2 sampled, 1 opted in, 1 refreshed, 2 no-store
    assert len(fake_openai.chat_requests()) == 6
    assert bad_ttl.status_code == 400 and bad_ttl.json()["error"]["param"] == "x-relaybox-cache-ttl"
    assert bad_switch.status_code == 400 and bad_switch.json()["error"]["param"] == "x-relaybox-cache"


async def test_a_failed_answer_is_not_cached_and_the_cache_can_be_switched_off(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    from tests.fakes.scripts import Reply

    fake_openai.replies.push(Reply(status=500))
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        failed = await post(client, DETERMINISTIC)
        answered = await post(client, DETERMINISTIC)
    assert failed.status_code >= 500 and answered.status_code == 200
    assert answered.headers["x-cache-hit"] == "false"
    async with (
        serve(
            settings_for(tmp_path / "off", openai_provider("up", fake_openai.base_url), cache_bytes=0)
        ) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        twice = [await post(client, DETERMINISTIC) for _ in range(2)]
    assert [r.headers.get("x-cache-hit") for r in twice] == [None, None]


def answer(text: str) -> tuple:
    return (
        Answering("up", "m", "test", 1, False, 1.0),
        ContentDelta(text),
        Usage(10, 5, cost_usd=0.01),
        Finished("stop", 1.0),
    )


def test_the_cache_is_an_lru_bounded_in_bytes_whose_entries_expire() -> None:
    now = [1000.0]
    cache = AnswerCache(max_bytes=6000, clock=lambda: now[0])  # an answer here: 500 bytes of text + 4 events
    for key in (b"a", b"b", b"c", b"d"):
        assert cache.put(key, answer("x" * 500), f"req-{key.decode()}", ttl=60)
    assert cache.get(b"a") is not None  # a is now the most recently used
    assert cache.put(b"e", answer("y" * 500), "req-e", ttl=60)
    assert cache.statistics().evictions == 1 and cache.bytes <= 6000
    assert cache.get(b"b") is None and cache.get(b"a") is not None  # the least recently used went
    assert not cache.put(b"huge", answer("h" * 2000), "req-h", ttl=60), (
        "one answer may not crowd out the rest"
    )
    now[0] += 61
    assert cache.get(b"a") is None and cache.get(b"e") is None, "expired"
    assert cache.bytes == 2 * 1300  # c and d are only dropped when asked for


def test_the_key_is_the_request_not_its_delivery() -> None:
    chat = ChatRequest(model="m", messages=(ChatMessage("user", "hi"),), temperature=0)
    same = [
        ChatRequest(
            model="m", messages=(ChatMessage("user", "hi"),), temperature=0, stream=True, include_usage=True
        ),
        ChatRequest(
            model="m", messages=(ChatMessage("user", "hi"),), temperature=0, passthrough={"user": "u1"}
        ),
    ]
    different = [
        ChatRequest(model="m2", messages=(ChatMessage("user", "hi"),), temperature=0),
        ChatRequest(model="m", messages=(ChatMessage("user", "hi!"),), temperature=0),
        ChatRequest(model="m", messages=(ChatMessage("user", "hi"),), temperature=0, max_tokens=5),
        ChatRequest(model="m", messages=(ChatMessage("user", "hi"),), temperature=0, passthrough={"seed": 7}),
    ]
    assert all(cache_key(c, None) == cache_key(chat, None) for c in same)
    assert all(cache_key(c, None) != cache_key(chat, None) for c in different)
    assert cache_key(chat, "coder") != cache_key(chat, None)
    assert cache_policy(chat, {}, 60.0).ttl == 60.0
    assert cache_policy(chat, {"x-relaybox-cache-ttl": "5"}, 60.0).ttl == 5.0
    assert cache_policy(ChatRequest(model="m", messages=chat.messages), {}, 60.0) is None
    assert (
        cache_policy(
            ChatRequest(model="m", messages=chat.messages, temperature=0, passthrough={"n": 3}), {}, 60
        )
        is None
    )


async def test_instances_sharing_a_database_share_answers(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with (
        serve(settings) as one,
        serve(settings) as two,
        httpx.AsyncClient(base_url=one.base_url, timeout=10) as first_client,
        httpx.AsyncClient(base_url=two.base_url, timeout=10) as second_client,
    ):
        first = await post(first_client, DETERMINISTIC)
        await eventually(lambda: one.pipeline.cache.statistics().shared_writes >= 1, within=10)
        elsewhere = await post(second_client, {**DETERMINISTIC, "stream": True})
        again = await post(second_client, DETERMINISTIC)  # now from the second instance's memory
        statistics = two.pipeline.cache.statistics()
    assert len(fake_openai.chat_requests()) == 1
    assert elsewhere.headers["x-cache-hit"] == "true" and streamed_text(elsewhere) == TEXT
    assert elsewhere.headers["x-cached-from"] == first.headers["x-task-id"]
    assert again.headers["x-cache-hit"] == "true"
    assert statistics.shared_hits == 1 and statistics.hits == 1
