"""The dashboard in a real browser (Debian's Chromium driven by Playwright, `tests/dashboard_browser.py`)
against a relaybox seeded with several days of traffic across several providers."""

from __future__ import annotations

import json
import random
import re
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trio
from relaybox.actors.breaker import BreakerPolicy
from relaybox.protocol.routing.learned_route import LearnedPolicy
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.routing.promise import Comparison, GainSums, kept_estimate
from relaybox.storage.records import AttemptRecord, Budget, Window
from relaybox.web.config import load_settings

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import eventually, openai_provider, serve, settings_for

REPO = Path(__file__).parent.parent
PAGES = ("overview", "providers", "requests", "actors")


def seeded_traffic(now: float) -> list[AttemptRecord]:
    """Five days of attempts over three providers, with failures, fallbacks and savings; a judge's
    verdict on every tenth answer and a shadow answer on every twenty-fifth (background calls)."""
    rng = random.Random(7)
    records = []
    for index in range(300):
        created = now - rng.uniform(0, 5 * 86400)
        provider, model, price = rng.choice(
            [("fast", "gpt-4o-mini", 0.0004), ("dead", "gpt-4o", 0.006), ("spare", "gpt-4o-mini", 0.0004)]
        )
        failed = provider == "dead" and rng.random() < 0.4
        group = str(uuid.uuid4())
        category = rng.choice(["code_generation", "simple_qa", "summarization"])
        records.append(
            AttemptRecord(
                id=str(uuid.uuid4()),
                created_at=created,
                request_group_id=group,
                attempt=1,
                provider=provider,
                model_selected=model,
                model_requested="gpt-4o" if index % 3 == 0 else "auto",
                router_reason="exact model id"
                if index % 3 == 0
                else f"auto: {category}; {provider}/{model}: cheapest economy, 92% of 180 recent answers good for {category}",
                task_category=category,
                status="server_error" if failed else "success",
                tokens_in=rng.randint(100, 3000),
                tokens_out=rng.randint(20, 800),
                cost_usd=0.0 if failed else price,
                baseline_cost_usd=0.006 if index % 3 == 0 and not failed else None,
                latency_ms=rng.randint(200, 3000),
                ttft_ms=rng.randint(80, 900),
                fallback_used=index % 17 == 0,
                cache_hit=index % 11 == 0,
                heuristic_score=None if failed else rng.randint(60, 100),
            )
        )
        for purpose, every in (("judge", 10), ("shadow", 25)):
            if index % every == 0 and not failed:
                records.append(
                    AttemptRecord(
                        id=str(uuid.uuid4()),
                        created_at=created + 5,
                        request_group_id=group,
                        attempt=0,
                        provider="spare",
                        model_selected="gpt-4o-mini",
                        router_reason=f"{purpose} for {provider}/{model}'s answer",
                        task_category=category,
                        status=purpose,
                        cost_usd=0.00004,
                        latency_ms=900,
                    )
                )
    return records


async def test_every_dashboard_page_renders_the_seeded_traffic(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path,
        openai_provider("fast", fake_openai.base_url),
        openai_provider("dead", "http://127.0.0.1:9/v1", models=("gpt-4o",)),
        openai_provider("spare", fake_openai.base_url),
        openai_provider("gone", "http://127.0.0.1:9/v1"),
        breaker=BreakerPolicy(consecutive_failures=3, cooldown=600.0),
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        seeded = seeded_traffic(time.time())
        await relay.system.storage.insert_records(seeded)
        for _ in range(3):  # and some live traffic through the API
            answer = await client.post(
                "/v1/chat/completions",
                json={"model": "fast:gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200
        for _ in range(3):  # "dead" fails until its breaker opens: the offline alert
            failed = await client.post(
                "/v1/chat/completions",
                json={"model": "dead:gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert failed.status_code >= 500
        # 90% of the daily budget spent: the budget alert.
        now = time.time()
        await relay.system.storage.put_budget(Budget("daily", 1.0, True))
        await relay.system.storage.reserve("seeded", 0.9, [Window("daily", now - 86400, 1.0)], now)
        await relay.system.storage.settle("seeded", 0.9)
        await eventually(lambda: relay.system.recorder.written >= 6, within=10)
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url], capture_stdout=True, cwd=REPO
        )
        seen = json.loads(browsed.stdout)
        providers = {p["id"]: p for p in (await client.get("/api/providers")).json()["data"]}

    assert seen["errors"] == []
    assert len(seen["kpis"]) == 7 and seen["kpis"][0].startswith("306\nRequests"), seen["kpis"]
    judged, shadowed = (sum(1 for r in seeded if r.status == purpose) for purpose in ("judge", "shadow"))
    assert seen["kpis"][2] == f"{judged + shadowed}\nBackground calls\n{judged} judge · {shadowed} shadow"
    assert (
        6 <= int(seen["requests_today"].replace(",", "")) < 306
    )  # today: the live requests and a share of the seeded
    assert seen["cost_legend"] == ["dead", "fast", "spare"] and seen["cost_bars"] == 3
    assert seen["model_bars"] >= 3
    assert any("Paid API" in badge for badge in seen["badges"]), seen["badges"]
    assert any("dead is unreachable" in alert and "fall back" in alert for alert in seen["alerts"]), seen[
        "alerts"
    ]
    assert any("daily budget is 90.0% spent" in alert for alert in seen["alerts"]), seen["alerts"]
    assert "❌" in seen["diagnosis"] and "refused" in seen["diagnosis"].lower(), seen["diagnosis"]
    assert seen["matrix_rows"] > 0, seen
    assert seen["spare_enabled_after_reload"] is False and providers["spare"]["enabled"] is False
    assert seen["request_rows"] > 10 and set(seen["filtered_providers"]) <= {"dead", "dead ⚡"}
    assert {"root", "router", "recorder", "fast", "dead", "spare"} <= set(seen["actors"]), seen["actors"]
    assert any("Offline" in line and "failed: 3" in line for line in seen["actor_details"]), seen[
        "actor_details"
    ]
    assert any(line.startswith("storage: sqlite up · written: ") for line in seen["actor_details"])
    assert seen["phone_overflow"] is False
    for page in PAGES:
        assert (REPO / "tests/artifacts" / f"dashboard-{page}.png").stat().st_size > 10_000


async def test_the_dashboard_says_when_the_request_log_cannot_reach_its_database(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path,
        openai_provider("fast", fake_openai.base_url),
        database_url="postgresql://postgres@127.0.0.1:9/unreachable",
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        answer = await client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert answer.status_code == 200  # the request does not wait on the database
        await eventually(lambda: relay.system.recorder.storage_up is False, within=10)
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url, "alerts"],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    assert any("request log cannot reach its postgres database" in alert for alert in seen["alerts"]), seen
    assert "unavailable" in seen["status"] or "database" in seen["status"], seen


async def test_with_client_keys_the_dashboard_asks_for_one(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    from relaybox.protocol.keys import key_hash, new_key, shown_prefix
    from relaybox.storage.records import ApiKey

    key, intern = new_key(), new_key()
    async with serve(settings_for(tmp_path, openai_provider("fast", fake_openai.base_url))) as relay:
        await relay.system.storage.create_key(
            ApiKey("ops", key_hash(key), shown_prefix(key), True, time.time())
        )
        await relay.system.storage.create_key(
            ApiKey(
                "intern",
                key_hash(intern),
                shown_prefix(intern),
                False,
                time.time(),
                tpm=20000,
                budget_usd=5.0,
                budget_period="monthly",
            )
        )
        assert relay.system.keys is not None
        await relay.system.keys.load()
        async with httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client:
            for _ in range(2):
                answer = await client.post(
                    "/v1/chat/completions",
                    json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {intern}", "cache-control": "no-store"},
                )
                assert answer.status_code == 200
        await eventually(lambda: relay.system.recorder.written >= 2, within=10)
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url, "key", key],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    assert seen["asked"] and "API key" in seen["status_before"] and seen["form_hidden_after"]
    assert set(seen["keys"]) == {"intern", "ops"}, "an admin key sees every key's use"
    row = seen["keys"]["intern"].split("\t")
    assert [cell.strip() for cell in row[1:3]] == ["client", "2"], row
    assert "20,000 tok/min" in row[5] and "of $5.00 monthly" in row[6], row


def first_day_traffic(now: float, count: int) -> list[AttemptRecord]:
    """`count` cheap attempts within the last hour: a first day's log (all of it today, UTC, even
    just after midnight)."""
    gap = min(60.0, (now % 86400) / count)
    return [
        AttemptRecord(
            id=str(uuid.uuid4()),
            created_at=now - gap * index,
            request_group_id=str(uuid.uuid4()),
            attempt=1,
            provider="fast",
            model_selected="gpt-4o-mini",
            model_requested="auto",
            router_reason="seeded",
            task_category="simple_qa",
            tokens_in=28,
            tokens_out=7,
            cost_usd=0.0000084,
            latency_ms=640,
            ttft_ms=210,
        )
        for index in range(count)
    ]


@pytest.mark.parametrize("count", [1, 40])
async def test_the_first_day_draws_days_as_days(tmp_path: Path, fake_openai: FakeOpenAI, count: int) -> None:
    """One day of data (or one request): a bar labelled with its date and no wider than a bar
    should be, small costs that are not "$0.0000", budgets without a limit said in words, the
    latency chart in milliseconds."""
    async with serve(settings_for(tmp_path, openai_provider("fast", fake_openai.base_url))) as relay:
        now = time.time()
        await relay.system.storage.insert_records(first_day_traffic(now, count))
        async with httpx.AsyncClient(base_url=relay.base_url) as client:
            assert (await client.post("/v1/respones", json={})).status_code == 404  # a client's typo
        browsed = await trio.run_process(
            [
                sys.executable,
                "-m",
                "tests.dashboard_browser",
                relay.base_url,
                "first-day",
                f"first-day-{count}",
            ],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    assert seen["errors"] == []
    assert seen["cost_ticks"] == [today] and seen["volume_ticks"] == [today], seen
    assert seen["cost_bar_share"] < 0.15 and seen["volume_bar_share"] < 0.15, seen
    assert seen["latency_axis"] == ["milliseconds"] and all(
        t.endswith(" ms") for t in seen["latency_ticks"]
    ), seen
    assert all(cost == "$0.0000084" for cost in seen["request_costs"]) and len(seen["request_costs"]) == count
    assert "no limit set" in seen["budgets_text"] and seen["budget_dials"] == 0, seen
    assert seen["http_errors"] == ["(no route)\t404\tclient error a path relaybox does not serve\t1"], seen[
        "http_errors"
    ]
    total = {1: "$0.0000084", 40: "$0.00034"}[count]  # two significant digits, never an exponent
    assert f"{total}\nCost\nbackground calls included" in seen["kpis"], seen["kpis"]


RED = "rgb(185, 28, 28)"  # dashboard.css --bad: how a failure is drawn
LONG_REASON = (
    "auto: code_generation, complexity 7 (3 code blocks, 412 words); fast/gpt-4o-mini: cheapest economy, "
    "94% of 212 recent answers good for code_generation; spare/gpt-4o-mini next, then dead/gpt-4o (standard)"
)


def counted_traffic(now: float) -> list[AttemptRecord]:
    """Five client requests and five background calls, every kind of status, countable by hand:
    answered (first try, after a fallback, deduplicated), failed after two attempts, cancelled; a
    judge's verdict and a failed shadow answer on the first request, two MCP tool calls, a
    connection test. Costs from $0 to a fiftieth of a millionth of a dollar."""
    groups = [str(uuid.uuid4()) for _ in range(7)]

    def attempt(
        seconds_ago: int, group: int, number: int, provider: str, status: str, **fields: object
    ) -> AttemptRecord:
        values: dict[str, object] = {
            "id": str(uuid.uuid4()),
            "created_at": now - seconds_ago,
            "request_group_id": groups[group],
            "attempt": number,
            "provider": provider,
            "model_selected": "gpt-4o" if provider == "dead" else "gpt-4o-mini",
            "model_requested": "auto",
            "router_reason": "seeded",
            "task_category": "code_generation",
            "status": status,
            "latency_ms": 500,
            **fields,
        }
        return AttemptRecord(**values)  # type: ignore[arg-type]

    return [
        attempt(10, 0, 1, "fast", "success", cost_usd=0.0000072, router_reason=LONG_REASON),
        attempt(
            9, 0, 0, "fast", "judge", cost_usd=0.00000002, router_reason="judge for fast/gpt-4o-mini's answer"
        ),
        attempt(8, 0, 0, "spare", "shadow_failed", router_reason="shadow for fast/gpt-4o-mini's answer"),
        attempt(60, 1, 1, "dead", "server_error"),
        attempt(59, 1, 2, "fast", "success", cost_usd=0.000012, fallback_used=True),
        attempt(120, 2, 1, "dead", "timeout"),
        attempt(119, 2, 2, "spare", "transport", fallback_used=True),
        attempt(180, 3, 1, "fast", "cancelled"),
        attempt(240, 4, 1, "fast", "deduplicated"),
        attempt(300, 5, 0, "mcp:files", "tool", model_selected="read_file", task_category="tool"),
        attempt(299, 5, 0, "mcp:files", "tool_failed", model_selected="write_file", task_category="tool"),
        attempt(360, 6, 1, "fast", "test", cost_usd=0.0000042, router_reason="connection test"),
    ]


async def test_the_dashboard_tells_background_work_from_failures(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Judge, shadow, tool and test rows are labelled for what they are and never counted as
    failures; the cards and charts count the same requests and attempts and say which; one cost
    format; a 404 on an unknown path is a client error; a long reason is shown whole on a click."""
    settings = settings_for(
        tmp_path,
        openai_provider("fast", fake_openai.base_url),
        openai_provider("dead", "http://127.0.0.1:9/v1", models=("gpt-4o",)),
        openai_provider("spare", fake_openai.base_url),
    )
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        await relay.system.storage.insert_records(counted_traffic(time.time()))
        for _ in range(6):  # a client's typo'd path
            assert (await client.post("/v1/respones", json={})).status_code == 404
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url, "statuses"],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    assert seen["errors"] == []
    kpis = seen["kpis"]
    assert (kpis["Requests"]["value"], kpis["Requests"]["detail"]) == ("5", "7 attempts, fallbacks included")
    answered = kpis["Requests answered"]
    assert (answered["value"], answered["detail"]) == ("75.0%", "3 of 4, 1 failed, 1 cancelled"), answered
    assert "after fallbacks" in answered["title"] and "cancelled" in answered["title"]
    assert "never reached a model" in answered["title"] and "per attempt: 50.0%" in answered["title"]
    background = kpis["Background calls"]
    assert (
        background["value"] == "5"
        and background["detail"] == "1 judge · 1 shadow · 2 tool · 1 test; 2 failed"
    )
    assert "Neither requests nor failures" in background["title"]
    assert kpis["Providers active"]["value"] == "3", "an MCP server is not a provider"
    # The cards and the charts count the same things.
    assert seen["chart_sums"]["chart-volume"] == {"requests": 5, "answered": 3, "background calls": 5}
    assert sum(seen["chart_sums"]["chart-models"].values()) == 7, seen["chart_sums"]
    # Per attempt: the 7 less the cancelled one, 3 of them answered (the card's "per attempt: 50.0%").
    assert sorted(seen["success_labels"]) == ["0/1", "0/2", "3/3"], seen["success_labels"]
    # One cost format: two significant digits, "$0" for nothing, never an exponent.
    assert kpis["Cost"]["value"] == "$0.000023" and kpis["Cost"]["detail"] == "background calls included"
    assert "<$0.000001" in seen["learning"], seen["learning"]
    assert sorted(seen["cost_hovers"]) == ["$0", "$0", "$0.000023"], (
        "fast's: its attempts and background calls"
    )
    assert seen["cost_ticks"] and all("e" not in tick and tick.startswith("$") for tick in seen["cost_ticks"])
    assert not re.search(r"\de[-+]?\d", seen["overview_text"]), "no exponent anywhere on the overview"
    costs = {row["status"]: row["cost"] for row in seen["rows"]}
    assert (costs["judge"], costs["test"], costs["deduplicated"]) == ("<$0.000001", "$0.0000042", "$0")
    # A 404 on an unknown path is the client's error, not drawn as a failure.
    assert [row["cells"] for row in seen["http_errors"]] == [
        ["(no route)", "404", "client error a path relaybox does not serve", "6"]
    ]
    assert seen["http_errors"][0]["color"] != RED
    assert seen["http_summary"] == "client error: 6"
    # Each status drawn for what it is.
    shown = {row["status"]: row for row in seen["rows"]}
    labelled = {
        "judge": "judge",
        "shadow_failed": "shadow failed",
        "tool": "tool",
        "tool_failed": "tool failed",
        "test": "test",
    }
    failures, others = ("server_error", "timeout", "transport"), ("success", "deduplicated", "cancelled")
    assert set(shown) == {*labelled, *failures, *others}
    for status, text in labelled.items():
        assert shown[status]["badge"] and shown[status]["shown"] == text, shown[status]
    for status in failures:
        assert shown[status]["color"] == RED and not shown[status]["badge"], shown[status]
    for status in (*labelled, *others):
        assert shown[status]["color"] != RED, shown[status]
    # The long reason: cut with an ellipsis, whole in its tooltip, whole after a click, and still
    # whole once the table is drawn again.
    before, opened, redrawn = seen["reason_before"], seen["reason_open"], seen["reason_after_redraw"]
    assert before["cut"] and before["ellipsis"] == "ellipsis" and before["title"] == LONG_REASON
    assert before["expanded"] == "false" and opened["expanded"] == "true"
    assert not opened["cut"] and opened["shown"] == LONG_REASON
    assert not redrawn["cut"] and redrawn["expanded"] == "true"
    assert seen["detail_hidden_after_reason_click"], "a click on a reason opens the reason, not the request"
    assert seen["judge_only"] == ["judge"]
    assert sorted(seen["detail_statuses"]) == ["judge", "shadow failed", "success"], seen["detail_statuses"]


async def test_the_dashboard_charts_what_the_promise_kept_by_day_beside_what_learning_cost(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Three days of stored blind comparisons (as instances on one database would have made) and of
    judging: the panel states the promise and what the router keeps now, and the chart draws, per
    day, the estimate through that day with its interval, the promise, and learning's share of the
    day's spending."""
    settings = settings_for(
        tmp_path,
        openai_provider("fast", fake_openai.base_url),
        routing=RoutingSettings(learned=LearnedPolicy(quality_kept=0.6, probe_rate=0.0), refresh_seconds=0.5),
    )
    now = time.time()
    rng = random.Random(11)
    days = [
        [
            Comparison(rng.random(), rng.random() < 0.7, rng.random() < 0.55, rng.random() < 0.85)
            for _ in range(50)
        ]
        for _ in range(3)
    ]
    spending = []
    for back, (client_cost, judge_cost) in zip(
        (2, 1, 0), ((0.009, 0.001), (0.018, 0.002), (0.0, 0.0)), strict=True
    ):
        for status, cost in (("success", client_cost), ("judge", judge_cost)):
            if cost:
                spending.append(
                    AttemptRecord(
                        id=str(uuid.uuid4()),
                        created_at=now - back * 86400,
                        request_group_id=str(uuid.uuid4()),
                        attempt=1 if status == "success" else 0,
                        provider="fast",
                        model_selected="gpt-4o-mini",
                        router_reason="seeded",
                        task_category="simple_qa",
                        status=status,
                        cost_usd=cost,
                        latency_ms=100,
                    )
                )
    async with serve(settings) as relay:
        storage = relay.system.storage
        for back, comparisons in zip((2, 1, 0), days, strict=True):
            await storage.add_routing_comparisons(
                comparisons, instance="other", now=now - back * 86400, keep=1000
            )
        await storage.insert_records(spending)
        learning = relay.system.learning
        assert learning is not None
        await eventually(lambda: learning.statistics().comparisons_loaded == 150, within=10)
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url, "promise"],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    assert seen["errors"] == []
    sums = [GainSums.of([c.gain for c in day], [c.served_strong for c in day]) for day in days]
    through = [kept_estimate(0.6, sum(sums[1 : i + 1], sums[0])) for i in range(3)]
    assert all(e.estimate is not None and e.low is not None and e.high is not None for e in through)
    now_kept = through[-1]
    assert "keep 60.0% of what the strongest model adds" in seen["panel"], seen["panel"]
    assert f"{now_kept.estimate:.2f} [{now_kept.low:.2f}, {now_kept.high:.2f}]" in seen["panel"], seen[
        "panel"
    ]
    assert "from 150 blind comparisons" in seen["panel"]
    traces = {trace["name"]: trace for trace in seen["traces"]}
    kept = traces["kept, through the day (95% interval)"]
    assert len(kept["x"]) == 3 and kept["y"] == pytest.approx([e.estimate for e in through])
    assert kept["plus"] == pytest.approx([e.high - e.estimate for e in through])
    assert kept["minus"] == pytest.approx([e.estimate - e.low for e in through])
    assert traces["promised"]["y"] == [0.6, 0.6, 0.6]
    learning_share = traces["learning cost (share of the day's spending)"]
    assert kept["yaxis"] == "y2" and learning_share["yaxis"] == "y", "the estimate drawn over the bars"
    assert learning_share["y"] == pytest.approx([0.1, 0.1, 0.0])
    assert seen["drawn_points"] >= 3


async def test_with_no_provider_the_dashboard_says_what_to_configure(tmp_path: Path) -> None:
    """The advice `relaybox serve` prints at start-up, on every page."""
    discovered = load_settings(
        env={"PATH": str(tmp_path), "HOME": str(tmp_path), "OLLAMA_BASE_URL": "http://127.0.0.1:9"}
    )
    assert discovered.providers == ()
    async with serve(settings_for(tmp_path, notes=discovered.notes)) as relay:
        browsed = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", relay.base_url, "empty"],
            capture_stdout=True,
            cwd=REPO,
        )
    seen = json.loads(browsed.stdout)
    assert seen["errors"] == []
    says = seen["overview"]
    assert says.startswith("No provider is configured yet") and "503" in says, says
    advice = (
        "set OPENAI_API_KEY to enable",
        "set ANTHROPIC_API_KEY to enable",
        "npm install -g @anthropic-ai/claude-code",
        "ollama serve",
        "relaybox serve --config FILE",
        "relaybox.example.toml",
        "relaybox doctor",
    )
    assert all(line in says for line in advice), says
    assert seen["requests_page_says"]
    assert seen["discovery"] == list(discovered.notes)
    # Its own polling of /health is answered 503 (nothing can serve): said as such, not as a failure.
    assert "/health\t503\tnot ready no provider could serve then" in seen["http_errors"][0], seen[
        "http_errors"
    ]
