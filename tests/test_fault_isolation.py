"""Faults stay where they start: no upstream, client or crash wedges a provider, takes down its
other streams, or loses a record. Each test here failed before the fix it checks."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio
from relaybox.actors.breaker import BreakerPolicy
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import Failed, Finished
from relaybox.web.system import running_system

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, settings_for
from tests.scripted import Answer, Crash, ScriptedTransport, chat, complete

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def streamed_text(response: httpx.Response) -> str:
    parts = []
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            parts += [c["delta"].get("content") or "" for c in chunk.get("choices", [])]
    return "".join(parts)


async def test_a_crash_during_the_half_open_probe_does_not_wedge_the_provider(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    down = ProviderFailure(FailureKind.SERVER_ERROR, "500 from upstream", upstream_status=500)
    solo = ScriptedTransport(down, down, down, Crash(), default=Answer("healed"))
    settings = settings_for(
        tmp_path,
        openai_provider("solo", "http://unused", models=("m",)),
        breaker=BreakerPolicy(consecutive_failures=3, cooldown=5.0),
    )
    async with running_system(settings, lambda config, _: solo) as system:
        for _ in range(3):
            assert isinstance((await complete(system, chat()))[-1], Failed)
        await trio.sleep(6)  # the cooldown: the next request is the probe, and its handling crashes
        probe = await complete(system, chat())
        assert isinstance(probe[-1], Failed) and "crash" in probe[-1].error.message
        after = await complete(system, chat())
        statistics = system.providers["solo"].statistics()
    assert isinstance(after[-1], Finished), after
    assert solo.calls == 5, "the upstream was asked again after the crashed probe"
    assert statistics.accepting and statistics.breaker.state.value == "closed"


async def test_one_malformed_chunk_fails_its_own_stream_only(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    # A breaker that stays out of the way: malformed streams would rightly open it; this is about
    # the actor and the sibling stream.
    breaker = BreakerPolicy(consecutive_failures=100, minimum_volume=1000)
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), breaker=breaker)
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        answers: dict[str, httpx.Response] = {}

        async def ask(name: str, reply: Reply) -> None:
            fake_openai.replies.push(reply)
            body = {**HELLO, "stream": True, "messages": [{"role": "user", "content": name}]}
            answers[name] = await client.post("/v1/chat/completions", json=body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "healthy", Reply(text="abcdefgh", pieces=8, chunk_delay=0.2))
            await trio.sleep(0.3)  # it is streaming (the fake has taken its reply)
            for i in range(6):  # six in a minute used to leave the provider failed for good
                await ask(f"malformed {i}", Reply(pieces=4, wrong_shape_after=1))
        after = await client.post("/v1/chat/completions", json=HELLO)
        await eventually(lambda: relay.system.recorder.statistics().written >= 8, within=10)
        tree = (await client.get("/actors")).json()
        rows = (await client.get("/api/requests")).json()["data"]
    assert streamed_text(answers["healthy"]) == "abcdefgh", "the sibling stream went on"
    for i in range(6):
        frames = answers[f"malformed {i}"].text
        assert "malformed upstream stream" in frames and frames.rstrip().endswith("}"), frames
    up = next(c for c in tree["supervisor"]["children"] if c["name"] == "up")
    assert up["state"] == "running" and up["restarts"] == 0
    assert after.status_code == 200
    assert sorted(r["status"] for r in rows).count("transport") == 6, "each failed attempt is in the log"
