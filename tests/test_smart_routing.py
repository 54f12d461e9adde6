"""Smart routing through the HTTP API: auto and unknown names, named routes and their fallback,
the provider mode, priorities, evidence from storage, A/B tests; and, on the mock clock, the
consecutive-failure exclusion with its probe."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from relaybox.actors.breaker import BreakerPolicy
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, Finished
from relaybox.protocol.routing.catalog import Candidate, ModelEntry
from relaybox.protocol.routing.learned_route import LearnedPolicy
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.routing.routes import NamedRoute
from relaybox.protocol.routing.selection import ABTest, SelectionPolicy
from relaybox.storage.records import AttemptRecord, Budget, Window
from relaybox.storage.sqlite import SQLiteStorage
from relaybox.web.config import ProviderConfig, Settings
from relaybox.web.system import running_system

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, settings_for
from tests.scripted import Answer, ScriptedTransport, chat, complete

SIMPLE = [{"role": "user", "content": "What is the capital of France?"}]
CODING = [{"role": "user", "content": "Write a Python function that merges two sorted lists."}]
TOOLS = [{"type": "function", "function": {"name": "run_tests", "parameters": {"type": "object"}}}]


def provider(name: str, base_url: str, model: str, tier: str, price: float, **extra: Any) -> ProviderConfig:
    return attrs.evolve(
        openai_provider(name, base_url, models=(model,)),
        models=(ModelEntry(model, tier, price, price * 4, 128_000),),
        **extra,
    )


def cheap_and_strong(tmp_path: Path, cheap: FakeOpenAI, strong: FakeOpenAI, **changes: Any) -> Settings:
    """Two models, one economy and one standard, and the classifier's tiers deciding `auto` (the
    learned router, which decides by default, has its own tests in test_learned_routing_live.py)."""
    routing = changes.pop("routing", RoutingSettings())
    changes["routing"] = attrs.evolve(routing, learned=attrs.evolve(routing.learned, enabled=False))
    return settings_for(
        tmp_path,
        provider("cheap", cheap.base_url, "small", "economy", 0.1, local_setting=True),
        provider("strong", strong.base_url, "big", "standard", 3.0, local_setting=False),
        **changes,
    )


async def ask(client: httpx.AsyncClient, model: str, messages: list[dict], **extra: Any) -> httpx.Response:
    headers = extra.pop("headers", {})
    return await client.post(
        "/v1/chat/completions", json={"model": model, "messages": messages, **extra}, headers=headers
    )


async def test_auto_and_unknown_names_pick_the_cheapest_model_that_fits_the_task(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="relaybox.routing")
    async with (
        serve(cheap_and_strong(tmp_path, fake_openai, fake_openai_backup)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        simple = await ask(client, "auto", SIMPLE)
        agentic = await ask(client, "auto", CODING, tools=TOOLS)
        unknown = await ask(client, "gpt-9-ultra", SIMPLE)
        await ask(client, "gpt-9-ultra", SIMPLE)  # logged once
        listed = (await client.get("/v1/models")).json()["data"]

        await eventually(lambda: relay.system.recorder.written >= 3, within=10)
        rows = (await client.get("/api/requests", params={"limit": 10})).json()["data"]
    assert simple.status_code == 200 and simple.headers["x-model"] == "small"
    assert simple.headers["x-router-reason"].startswith("auto: simple_qa, complexity ")
    assert "cheap/small: cheapest economy" in simple.headers["x-router-reason"]
    # Tools offered: an agentic client, so at least the standard tier.
    assert agentic.headers["x-model"] == "big" and "(agentic)" in agentic.headers["x-router-reason"]
    assert unknown.status_code == 200 and unknown.headers["x-model"] == "small"
    assert unknown.headers["x-router-reason"].startswith("unknown model 'gpt-9-ultra' -> auto: simple_qa")
    assert unknown.headers["x-relaybox-warning"] == (
        "no provider serves the model 'gpt-9-ultra': cheap/small answered (smart routing)"
    )
    assert "x-relaybox-warning" not in simple.headers
    warned = [r.getMessage() for r in caplog.records if r.name == "relaybox.routing"]
    assert warned == [
        "no provider serves the model 'gpt-9-ultra': smart routing answered with cheap/small (said once per name)"
    ]
    by_model = {row["model_selected"]: row for row in rows}
    assert by_model["big"]["task_category"] == "code_gen" and by_model["big"]["complexity_score"] > 0
    names = {entry["id"]: entry["relaybox"] for entry in listed}
    assert names["auto"]["kind"] == "smart" and names["route:planning"]["kind"] == "route"
    # What routing saved: `auto` answered by the cheap model is compared with the costliest paid one.
    small = by_model["small"]
    tokens_in, tokens_out = small["tokens_in"], small["tokens_out"]
    assert small["cost_usd"] == pytest.approx((tokens_in * 0.1 + tokens_out * 0.4) / 1e6)
    assert small["baseline_cost_usd"] == pytest.approx((tokens_in * 3.0 + tokens_out * 12.0) / 1e6)
    assert by_model["big"]["baseline_cost_usd"] == pytest.approx(by_model["big"]["cost_usd"])


async def test_named_routes_walk_their_chain_and_do_not_retry_a_bad_request(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    routes = {"planning": NamedRoute("planning", ("strong", "cheap:small"))}
    settings = cheap_and_strong(
        tmp_path, fake_openai, fake_openai_backup, routing=RoutingSettings(routes=routes)
    )
    fake_openai_backup.replies.push(Reply(status=503), Reply(status=400, error_message="bad tool schema"))
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        fell_back = await ask(client, "route:planning", SIMPLE)
        bad = await ask(client, "planning", SIMPLE)
        by_header = await ask(client, "small", SIMPLE, headers={"x-relaybox-route": "planning"})
        missing = await ask(client, "route:nothing", SIMPLE)
    assert fell_back.status_code == 200 and fell_back.headers["x-provider"] == "cheap"
    assert fell_back.headers["x-fallback-used"] == "true"
    assert (
        "route planning: primary strong -> strong/big, backup_1 cheap:small -> cheap/small"
        in (fell_back.headers["x-router-reason"])
    )
    assert bad.status_code == 400 and "bad tool schema" in bad.json()["error"]["message"]
    assert len(fake_openai.chat_requests()) == 1, "a rejected request is not retried elsewhere"
    assert by_header.status_code == 200 and by_header.headers["x-provider"] == "strong"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "route_not_found"


async def test_provider_mode_local_and_cloud(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    local = cheap_and_strong(tmp_path, fake_openai, fake_openai_backup, routing=RoutingSettings(mode="local"))
    async with (
        serve(local) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        coding = await ask(client, "auto", CODING, tools=TOOLS)  # wants standard; only local remains
        pinned_cloud = await ask(client, "strong:big", SIMPLE)
    assert coding.status_code == 200 and coding.headers["x-provider"] == "cheap"
    assert "no standard model or above" in coding.headers["x-router-reason"]
    assert pinned_cloud.status_code == 400 and pinned_cloud.json()["error"]["code"] == "provider_mode"
    cloud = cheap_and_strong(tmp_path, fake_openai, fake_openai_backup, routing=RoutingSettings(mode="cloud"))
    async with (
        serve(cloud) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        simple = await ask(client, "auto", SIMPLE)
    assert simple.status_code == 200 and simple.headers["x-provider"] == "strong"


async def test_priority_from_the_settings_api_breaks_ties_between_free_models(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path,
        provider("a", fake_openai.base_url, "free-a", "economy", 0.0),
        provider("b", fake_openai_backup.base_url, "free-b", "economy", 0.0),
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        put = await client.put("/api/providers/b", json={"priority": 10})
        answers = [await ask(client, "auto", SIMPLE) for _ in range(8)]
    assert put.status_code == 200
    assert {a.headers["x-provider"] for a in answers} == {"b"}


async def test_evidence_in_storage_steers_routing_from_the_start(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    no_exploring = RoutingSettings(selection=SelectionPolicy(explore_share=0.0))
    settings = cheap_and_strong(tmp_path, fake_openai, fake_openai_backup, routing=no_exploring)
    await trio.Path(settings.data_dir).mkdir(parents=True)
    storage = SQLiteStorage(str(Path(settings.data_dir) / "relaybox.db"))
    await storage.migrate()
    group = str(uuid.uuid4())
    poor = [
        AttemptRecord(
            id=str(uuid.uuid4()),
            created_at=time.time() - 3600,
            request_group_id=group,
            attempt=1,
            provider="cheap",
            model_selected="small",
            task_category="simple_qa",
            status="success",
            heuristic_score=20,  # refusals and empty answers, say
        )
        for _ in range(60)
    ]
    await storage.insert_records(poor)
    await storage.aclose()
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        await eventually(lambda: relay.system.router.statistics().evidence_loaded_at is not None, within=10)
        simple = await ask(client, "auto", SIMPLE)
        code = await ask(client, "auto", CODING)  # another category: no evidence against cheap
    assert simple.headers["x-provider"] == "strong"
    assert "no eligible economy model; escalated" in simple.headers["x-router-reason"]
    assert code.headers["x-provider"] in ("cheap", "strong")
    assert code.headers["x-router-reason"].startswith("auto: code_gen")


async def test_budget_pressure_makes_auto_ask_for_a_cheaper_tier(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    async with (
        serve(cheap_and_strong(tmp_path, fake_openai, fake_openai_backup)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        relaxed = await ask(client, "auto", CODING, tools=TOOLS)
        storage = relay.system.storage
        await storage.put_budget(Budget("daily", 1.0, True))
        now, spent = time.time(), str(uuid.uuid4())
        await storage.reserve(spent, 0.9, [Window("daily", now - 86400, 1.0)], now)
        await storage.settle(spent, 0.9)
        await eventually(lambda: (relay.system.budget.pressure or 0) >= 0.8, within=10)
        pressed = await ask(client, "auto", CODING, tools=TOOLS)
    assert relaxed.headers["x-provider"] == "strong"
    assert pressed.headers["x-provider"] == "cheap"
    assert "budget 90% spent: standard -> economy" in pressed.headers["x-router-reason"]


async def test_ab_test_splits_traffic_and_reports_each_variant(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    test = ABTest("small-vs-big", Candidate("cheap", "small"), Candidate("strong", "big"), 0.5)
    settings = cheap_and_strong(
        tmp_path, fake_openai, fake_openai_backup, routing=RoutingSettings(ab_tests=(test,), seed=3)
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        answers = [await ask(client, "auto", SIMPLE) for _ in range(20)]
        pinned = await ask(client, "cheap:small", SIMPLE)  # pinned: never part of a test

        await eventually(lambda: relay.system.recorder.written >= 21, within=10)
        ab = (await client.get("/api/stats")).json()["ab_tests"][0]
    served = {a.headers["x-provider"] for a in answers}
    assert served == {"cheap", "strong"}
    assert "A/B small-vs-big: " in answers[0].headers["x-router-reason"]
    assert "A/B" not in pinned.headers["x-router-reason"]
    baseline, challenger = ab["variants"]["baseline"], ab["variants"]["challenger"]
    assert baseline["attempts"] + challenger["attempts"] == 20
    assert baseline["attempts"] == sum(a.headers["x-provider"] == "cheap" for a in answers)
    assert baseline["success_rate"] == 1.0 and challenger["cost_usd"] > baseline["cost_usd"]
    assert ab["verdict"].startswith("collecting")


async def test_cascade_a_poor_held_answer_gives_way_to_a_stronger_model(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.replies.push(
        Reply(text="I'm sorry, but I can't help with that."),
        Reply(text="Each box holds 12 + 7 = 21 pens, so 4 boxes hold 4 * 21 = 74 pens.\n#### 74"),
        Reply(text="I'm sorry, but I can't help with that."),  # streamed: already on its way
    )
    async with (
        serve(cheap_and_strong(tmp_path, fake_openai, fake_openai_backup)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        refused = await ask(client, "auto", SIMPLE)
        maths = [
            {"role": "user", "content": "A box holds 12 red and 7 blue pens. How many pens are in 4 boxes?"}
        ]
        miscalculated = await ask(client, "auto", maths)
        streamed = await ask(client, "auto", SIMPLE, stream=True)
        await eventually(lambda: relay.system.recorder.written >= 5, within=10)
        rows = (await client.get("/api/requests", params={"provider": "cheap"})).json()["data"]
    for answer in (refused, miscalculated):
        assert answer.headers["x-provider"] == "strong" and answer.headers["x-fallback-used"] == "true"
        assert "cheap/small failed (poor_answer)" in answer.headers["x-router-reason"]
        assert answer.json()["choices"][0]["message"]["content"] == "Answer from the backup upstream."
    assert streamed.headers["x-provider"] == "cheap" and "I'm sorry" in streamed.text
    poor = [r for r in rows if r["status"] == "poor_answer"]
    assert len(poor) == 2 and all(r["cost_usd"] > 0 and r["heuristic_score"] < 50 for r in poor)


async def test_cascade_keeps_the_held_answer_when_no_stronger_model_answers(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="I'm sorry, but I can't help with that."))
    fake_openai_backup.replies.push(Reply(status=503))
    async with (
        serve(cheap_and_strong(tmp_path, fake_openai, fake_openai_backup)) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        kept = await ask(client, "auto", SIMPLE)
    assert kept.status_code == 200 and kept.headers["x-provider"] == "cheap"
    assert kept.json()["choices"][0]["message"]["content"] == "I'm sorry, but I can't help with that."
    assert "kept: no stronger model answered (strong/big: server_error)" in kept.headers["x-router-reason"]


async def test_cascade_climbs_past_peers_of_the_same_tier(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    refusal = Answer("I'm sorry, but I can't help with that.")
    transports = {
        "a": ScriptedTransport(refusal, default=Answer("a")),
        "b": ScriptedTransport(default=Answer("b")),
        "c": ScriptedTransport(default=Answer("c answers")),
    }
    settings = settings_for(
        tmp_path,
        provider("a", "http://unused", "a1", "economy", 0.1),
        provider("b", "http://unused", "b1", "economy", 0.2),
        provider("c", "http://unused", "c1", "standard", 1.0),
    )
    async with running_system(settings, lambda config, _: transports[config.name]) as system:
        events = await complete(system, chat("economy"))
    assert [e.text for e in events if isinstance(e, ContentDelta)] == ["c answers"]
    assert [t.calls for t in transports.values()] == [1, 0, 1]


async def test_the_optional_llm_classifier_asks_the_cheapest_model_and_its_call_is_logged(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI
) -> None:
    settings = cheap_and_strong(
        tmp_path, fake_openai, fake_openai_backup, routing=RoutingSettings(llm_classifier=True)
    )
    fake_openai.replies.push(
        Reply(text='{"category": "debug", "complexity": 55}'),  # the classifier's verdict
        Reply(text="Sure, here you go."),  # not a verdict: the built-in classification stands
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        judged = await ask(client, "auto", SIMPLE)
        unjudged = await ask(client, "auto", SIMPLE)
        pinned = await ask(client, "cheap:small", SIMPLE)  # not smart-routed: no classifier call
        await eventually(lambda: relay.system.recorder.written >= 5, within=10)
        rows = (await client.get("/api/requests", params={"limit": 10})).json()["data"]
    assert judged.headers["x-provider"] == "strong"
    assert judged.headers["x-router-reason"].startswith("auto: debug, complexity 55 -> standard")
    assert unjudged.headers["x-provider"] == "cheap"
    assert unjudged.headers["x-router-reason"].startswith("auto: simple_qa")
    assert pinned.status_code == 200
    questions = [r for r in fake_openai.chat_requests() if "You classify requests" in r.body.decode()]
    assert len(questions) == 2 and len(fake_openai.chat_requests()) == 4
    classifier_rows = [r for r in rows if r["client"] == "relaybox-classifier"]
    assert len(classifier_rows) == 2 and all(r["cost_usd"] > 0 for r in classifier_rows)


async def test_an_llm_classifier_that_gives_no_verdict_in_time_leaves_the_built_in_one(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    cheap = ScriptedTransport(
        Answer('{"category": "debug", "complexity": 90}', delay=60), default=Answer("cheap")
    )
    strong = ScriptedTransport(default=Answer("strong"))
    settings = settings_for(
        tmp_path,
        provider("cheap", "http://unused", "small", "economy", 0.1),
        provider("strong", "http://unused", "big", "standard", 3.0),
        routing=RoutingSettings(
            llm_classifier=True, classifier_timeout=10, learned=LearnedPolicy(enabled=False)
        ),
    )
    transports = {"cheap": cheap, "strong": strong}
    async with running_system(settings, lambda config, _: transports[config.name]) as system:
        started = trio.current_time()
        events = await complete(system, chat("auto"))
        waited = trio.current_time() - started
    assert isinstance(events[-1], Finished), events
    assert events[0].provider == "cheap"  # type: ignore[union-attr]
    assert events[0].reason.startswith("auto: other")  # type: ignore[union-attr]
    assert 10 <= waited < 60, "the answer waited for the classifier's timeout, not for its verdict"
    assert cheap.calls == 2 and strong.calls == 0


async def test_consecutive_failures_exclude_a_model_for_a_while_then_a_probe_decides(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    down = ProviderFailure(FailureKind.SERVER_ERROR, "500 from upstream", upstream_status=500)
    cheap = ScriptedTransport(down, down, down, down, default=Answer("cheap again"))
    pricey = ScriptedTransport(default=Answer("pricey"))
    settings = settings_for(
        tmp_path,
        provider("cheap", "http://unused", "small", "economy", 0.1),
        provider("pricey", "http://unused", "large", "economy", 1.0),
        # A breaker that stays out of the way: this is about the routing evidence.
        breaker=BreakerPolicy(consecutive_failures=100, minimum_volume=1000),
    )
    transports = {"cheap": cheap, "pricey": pricey}
    async with running_system(settings, lambda config, _: transports[config.name]) as system:

        async def served_by() -> str:
            events = await complete(system, chat("auto"))
            assert isinstance(events[-1], Finished)
            return events[0].provider  # type: ignore[union-attr]

        assert [await served_by() for _ in range(3)] == ["pricey"] * 3  # cheap failed first each time
        assert cheap.calls == 3
        assert await served_by() == "pricey" and cheap.calls == 3, "excluded: not even tried"
        await trio.sleep(60)
        assert await served_by() == "pricey" and cheap.calls == 4, "the probe went to cheap and failed"
        await trio.sleep(60)
        assert await served_by() == "pricey" and cheap.calls == 4, "excluded twice as long now"
        await trio.sleep(60)
        assert await served_by() == "cheap" and cheap.calls == 5
        await trio.testing.wait_all_tasks_blocked()  # the router has heard how the attempt ended
        evidence = {row.provider: row for row in system.router.statistics().evidence}
        assert evidence["cheap"].consecutive_failures == 0 and evidence["cheap"].eligible
