"""The management API under /api: statistics, requests, feedback, budgets, provider settings.

Storage calls here are the only ones a request waits for, and only these requests: the chat
endpoints never touch the database. A database that is down is a 503 here, nothing worse.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import attrs
import trio
from quart import Blueprint, Response, request
from relaybox.actors.budget import PERIOD_SECONDS
from relaybox.actors.messages import SetProviderEnabled
from relaybox.protocol.errors import RelayError
from relaybox.protocol.keys import client_of
from relaybox.protocol.routing.promise import GainSums, kept_estimate
from relaybox.protocol.routing.selection import ABTest, ab_verdict
from relaybox.storage.records import PERIODS, Budget, ProviderSetting, group_id
from relaybox.web.calls import caller_sees_everyone, parse_json
from relaybox.web.config import ProviderConfig
from relaybox.web.config.catalogue import EXAMPLE_CONFIG
from relaybox.web.connection_check import check_connection
from relaybox.web.context import current_access_log, current_pipeline, current_system
from relaybox.web.snapshots import failure_kind, to_json
from relaybox.web.system import System

blueprint = Blueprint("admin", __name__)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _bad(message: str, param: str | None = None) -> RelayError:
    return RelayError(400, message, "invalid_request_error", code="invalid_request", param=param)


async def _body() -> dict[str, Any]:
    body = parse_json(await request.get_data(cache=False) or b"{}")
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"'{name}' must be an integer", name) from None
    if not low <= value <= high:
        raise _bad(f"'{name}' must be between {low} and {high}", name)
    return value


def _provider_config(running: System, provider_id: str) -> ProviderConfig:
    config = next((p for p in running.settings.providers if p.name == provider_id), None)
    if config is None:
        raise RelayError(
            404,
            f"no provider {provider_id!r}; GET /api/providers lists them",
            "not_found_error",
            code="provider_not_found",
        )
    return config


@blueprint.get("/api/stats")
async def stats() -> Response:
    running = current_system()
    days = _int_arg("days", 7, 1, 3650)
    body = await running.storage.stats(days=days, now=time.time())
    totals = body["totals"][0] if body["totals"] else {}
    reference = running.savings_reference
    body["summary"] = {
        "days": days,
        **_outcomes(totals, body["outcomes"]),
        "background_calls": sum(int(row["attempts"] or 0) for row in body["background"]),
        "background_failed": sum(
            int(row["attempts"] or 0) for row in body["background"] if row["status"].endswith("_failed")
        ),
        "cost_usd": totals.get("cost_usd") or 0.0,
        "saved_usd": totals.get("saved_usd") or 0.0,
        "providers_active": totals.get("providers_active") or 0,
        "savings_baseline": None if reference is None else f"{reference.provider}:{reference.model}",
    }
    since = time.time() - days * 86400
    body["ab_tests"] = _ab_report(
        running.settings.routing.ab_tests, await running.storage.ab_results(since=since)
    )
    body["learned_routing"] = _learning_report(running)
    body["promise_by_day"] = _promise_by_day(running, body["promise_by_day"])
    body["recorder"] = to_json(running.recorder.statistics())
    body["response_cache"] = to_json(
        current_pipeline().cache.statistics()
    )  # this process's, since it started
    body["keys"] = await _key_report(running, body["keys"])
    # Every 4xx and 5xx this process answered since it started, model calls or not (a client's
    # typo'd path, a bad body, a missing key): the errors the request log cannot show.
    errors = current_access_log().errors
    body["http_errors"] = [
        {"route": route, "status": status, "count": count}
        for (route, status), count in sorted(errors.items())
    ]
    return _json(body)


def _outcomes(totals: dict[str, Any], outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """What became of clients' requests over the period, counted as the dashboard's cards say.

    A request is answered when its last attempt is (so a failed attempt before a fallback is no
    failed request); one the client cancelled is neither answered nor failed. `answered_rate` is
    per request, `success_rate` per attempt (as the success-rate chart), both without cancelled
    ones. Background calls are neither requests nor attempts."""
    requests, answered, cancelled = (
        sum(int(row[column] or 0) for row in outcomes) for column in ("requests", "answered", "cancelled")
    )
    failed = requests - answered - cancelled
    attempts = int(totals.get("attempts") or 0)
    finished_attempts = attempts - int(totals.get("cancelled_attempts") or 0)
    return {
        "requests": requests,
        "attempts": attempts,
        "answered": answered,
        "failed": failed,
        "cancelled": cancelled,
        "answered_rate": answered / (answered + failed) if answered + failed else None,
        "success_rate": int(totals.get("successes") or 0) / finished_attempts
        if finished_attempts > 0
        else None,
        "cache_hit_rate": int(totals.get("cache_hits") or 0) / requests if requests else None,
    }


def _learning_report(running: System) -> dict[str, Any]:
    """What the learned router taught itself in this process (labels learned per model, its own
    and other instances'; the judge's verdicts), beside `learning_spend`: what that cost."""
    learned = running.router.statistics().learned
    learning = None if running.learning is None else running.learning.statistics()
    kept = learned.quality_kept
    return {
        "enabled": learned.enabled,
        # The quality promise, when one is made: what it promised, and what it kept by its own
        # blind comparisons (an estimate with a 95% interval, None until there is evidence).
        "quality_kept": None if kept is None else to_json(kept),
        "labels": learned.labels,
        "verdicts": {} if learning is None else learning.verdicts,
        "comparisons": {} if learning is None else learning.comparisons,
        "labels_loaded": 0 if learning is None else learning.labels_loaded,
    }


def _promise_by_day(running: System, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the quality promise kept, by day, from the blind comparisons storage holds (every
    instance's): the day's own estimate, and the estimate over the period through that day (a
    day alone rarely has enough comparisons for a useful interval)."""
    promised = running.settings.routing.learned.quality_kept
    if promised is None:
        return []
    days = []
    through = GainSums(0, 0, 0, 0, 0)
    for row in rows:
        day = GainSums(*(int(row[name] or 0) for name in attrs.fields_dict(GainSums)))
        through += day
        days.append(
            {
                "day": row["day"],
                "day_estimate": to_json(kept_estimate(promised, day)),
                "through_day": to_json(kept_estimate(promised, through)),
            }
        )
    return days


async def _key_report(running: System, usage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each client key in force, with its limits, its budget's spending and its use over the
    period; a key that is not an admin key sees only its own."""
    asker = getattr(request, "api_key", None)
    keys = [] if running.keys is None else running.keys.in_force()
    if asker is not None and not asker.admin:
        keys = [k for k in keys if k.name == asker.name]
    used = {row["key"]: row for row in usage}
    now = time.time()
    report = []
    for key in keys:
        budget = None
        if key.budget_usd is not None and key.budget_period is not None:
            since = now - PERIOD_SECONDS[key.budget_period]
            spent = await running.storage.budget_spent(since, now, key.name)
            budget = {
                "period": key.budget_period,
                "limit_usd": key.budget_usd,
                "spent_usd": spent,
                "used": spent / key.budget_usd,
            }
        row = used.get(key.name, {})
        report.append(
            {
                "key": key.name,
                "prefix": key.prefix,
                "admin": key.admin,
                "rpm": key.rpm,
                "tpm": key.tpm,
                "budget": budget,
                **{
                    field: row.get(field) or 0
                    for field in ("requests", "attempts", "tokens_in", "tokens_out", "cost_usd")
                },
            }
        )
    return report


def _own_client() -> str | None:
    """Whose requests the caller may see and rate: a member key its own; an admin key (or anyone,
    when no key is in force) everyone's (None)."""
    key = getattr(request, "api_key", None)
    return None if key is None or key.admin else client_of(key.name)


@blueprint.get("/api/requests")
async def requests() -> Response:
    """The latest attempts (a request's detail: `group`), a member key's own only."""
    records = await current_system().storage.recent(
        limit=_int_arg("limit", 50, 1, 1000),
        provider=request.args.get("provider"),
        model=request.args.get("model"),
        category=request.args.get("category"),
        status=request.args.get("status"),
        group=request.args.get("group"),
        client=_own_client(),
    )
    return _json({"data": [r.to_json() for r in records]})


@blueprint.post("/api/feedback")
async def feedback() -> Response:
    body = await _body()
    task_id, rating = body.get("taskId"), body.get("rating")
    if not isinstance(task_id, str) or not task_id:
        raise _bad("'taskId' is required: the x-task-id of the answer", "taskId")
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise _bad("'rating' must be an integer from 1 to 5", "rating")
    # The record may still be on its way to storage: wait a moment for the recorder.
    for _ in range(20):
        if await current_system().storage.set_rating(group_id(task_id), rating, _own_client()):
            current_system().rated(group_id(task_id), rating)
            return _json({"ok": True, "taskId": task_id, "rating": rating})
        await trio.sleep(0.1)
    raise RelayError(
        404, f"no request with task id {task_id}", "not_found_error", code="task_not_found", param="taskId"
    )


@blueprint.get("/api/budget")
async def get_budget() -> Response:
    storage = current_system().storage
    budgets = {b.period: b for b in await storage.budgets()}
    now = time.time()
    data = []
    for period in PERIODS:
        budget = budgets.get(period, Budget(period, 0.0, False))
        spent = await storage.budget_spent(now - PERIOD_SECONDS[period], now)
        data.append(
            {
                "period": period,
                "limit_usd": budget.limit_usd,
                "enabled": budget.enabled,
                "spent_usd": spent,
                "used": spent / budget.limit_usd if budget.enabled and budget.limit_usd else None,
                "warning": bool(budget.enabled and budget.limit_usd and spent >= 0.8 * budget.limit_usd),
            }
        )
    return _json({"data": data})


@blueprint.put("/api/budget")
async def put_budget() -> Response:
    body = await _body()
    period = body.get("period")
    if period not in PERIODS:
        raise _bad(f"'period' must be one of {', '.join(PERIODS)}", "period")
    limit = body.get("limit_usd", body.get("limitUsd"))
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
        raise _bad("'limit_usd' must be a number >= 0", "limit_usd")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _bad("'enabled' must be a boolean", "enabled")
    await current_system().storage.put_budget(Budget(period, float(limit), enabled))
    return _json({"period": period, "limit_usd": float(limit), "enabled": enabled})


@blueprint.get("/api/providers")
async def providers() -> Response:
    running = current_system()
    disabled = running.router.statistics().disabled
    details = caller_sees_everyone(running.keys is not None and running.keys.active)
    data = []
    for config in running.settings.providers:
        actor = running.providers[config.name].statistics()
        data.append(
            {
                "id": config.name,
                "display_name": config.display_name,
                "kind": config.kind,
                "enabled": config.name not in disabled,
                "priority": config.priority,
                "health": actor.health.value,
                "breaker": to_json(actor.breaker),
                "actor": running.supervisor.state_of(config.name).value,
                **_billing(running, config.name, config.kind),
                "model_count": len(config.models),
                "models": [m.id for m in config.models],
                "in_flight": actor.in_flight,
                "last_failure": actor.last_failure if details else failure_kind(actor.last_failure),
            }
        )
    return _json({"data": data, "discovery": _discovery(running)})


# A URL's user (`https://user:token@host`) and query values (`?key=...`): where a credential may hide.
_URL_SECRETS = re.compile(r"(?<=://)[^/\s@]+@|(?<=[?&])([^=&\s#]+)=[^&\s#)]+")


def _discovery(running: System) -> dict[str, Any]:
    """What start-up found and missed, as `relaybox serve` printed it (each provider active, or what
    would enable it): the dashboard says it, above all when no provider is active. The notes name
    environment variables, never their values; URLs in them are shown without user or query values."""
    return {
        "notes": [
            _URL_SECRETS.sub(lambda m: f"{m[1]}=…" if m[1] else "…@", note) for note in running.settings.notes
        ],
        "example_config": str(EXAMPLE_CONFIG),
    }


@blueprint.post("/api/providers/<provider_id>/test")
async def test_provider(provider_id: str) -> Response:
    """A live request through the provider (pinned, no fallback), with a diagnosis when it fails."""
    running = current_system()
    config = _provider_config(running, provider_id)
    result = await check_connection(running, config, "relaybox connection test", 90)
    body = {"ok": result.ok, "provider": provider_id, "diagnosis": result.diagnosis}
    if result.ok:
        body |= {"answer": result.answer, "latency_ms": result.latency_ms}
    else:
        body["detail"] = result.detail
    return _json(body)


@blueprint.put("/api/providers/<provider_id>")
async def put_provider(provider_id: str) -> Response:
    running = current_system()
    config = _provider_config(running, provider_id)
    body = await _body()
    enabled = body.get("enabled", provider_id not in running.router.statistics().disabled)
    priority = body.get("priority", config.priority)
    overrides = body.get("config", {})
    if not isinstance(enabled, bool):
        raise _bad("'enabled' must be a boolean", "enabled")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _bad("'priority' must be an integer", "priority")
    if not isinstance(overrides, dict):
        raise _bad("'config' must be an object", "config")
    await running.storage.put_provider_setting(
        ProviderSetting(provider_id, config.display_name, enabled, priority, overrides)
    )
    running.router.mailbox.tell(SetProviderEnabled(provider_id, enabled, priority))
    return _json({"id": provider_id, "enabled": enabled, "priority": priority, "config": overrides})


def _billing(running: System, provider: str, kind: str) -> dict[str, Any]:
    """Seed 000's badge: local and free, a subscription CLI, or a paid API with what it costs."""
    costs = [cost for (name, _), cost in running.catalog.costs.items() if name == provider]
    models = running.catalog.provider(provider)
    if kind in ("claude-cli", "gemini-cli"):
        billing = "subscription"
    elif (costs and max(costs) == 0) or (not costs and models is not None and models.local):
        billing = "local"
    else:
        billing = "paid"
    return {"billing": billing, "reference_cost_usd": min(costs) if costs else None}


def _ab_report(tests: tuple[ABTest, ...], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configured A/B test, each variant's results and whether to promote the challenger."""
    report = []
    for test in tests:
        variants: dict[str, dict[str, Any]] = {}
        for name in ("baseline", "challenger"):
            # Only the variant's own model: a fallback or cascade attempt in its requests is not it.
            candidate = test.baseline if name == "baseline" else test.challenger
            mine = [
                r
                for r in rows
                if r["test"] == test.name
                and r["variant"] == name
                and (r["provider"], r["model"]) == (candidate.provider, candidate.model)
            ]
            attempts = sum(r["attempts"] for r in mine)
            successes = sum(r["successes"] for r in mine)
            heuristic = [r["avg_heuristic"] for r in mine if r["avg_heuristic"] is not None]
            average_heuristic = sum(heuristic) / len(heuristic) if heuristic else None
            variants[name] = {
                "attempts": attempts,
                "successes": successes,
                "success_rate": successes / attempts if attempts else None,
                "avg_heuristic": average_heuristic,
                "cost_usd": sum(float(r["cost_usd"] or 0) for r in mine),
                "avg_latency_ms": (
                    sum(float(r["avg_latency_ms"] or 0) * r["attempts"] for r in mine) / attempts
                    if attempts
                    else None
                ),
                "ratings": sum(r["ratings"] for r in mine),
                "good": successes * (average_heuristic if average_heuristic is not None else 100) / 100,
            }
        verdict = ab_verdict(variants["baseline"], variants["challenger"])
        report.append(
            {
                "name": test.name,
                "baseline": f"{test.baseline.provider}:{test.baseline.model}",
                "challenger": f"{test.challenger.provider}:{test.challenger.model}",
                "split": test.split,
                "categories": sorted(test.categories),
                "variants": variants,
                "verdict": verdict,
            }
        )
    return report
