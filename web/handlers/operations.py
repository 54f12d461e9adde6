"""Operations: `GET /` and `/ping` (liveness), `/health` (readiness), `/actors` (the supervision tree) and
`/metrics` (Prometheus)."""

from __future__ import annotations

import json
import os
from typing import Any

from quart import Blueprint, Response
from relaybox.web import metrics
from relaybox.web.calls import caller_sees_everyone
from relaybox.web.config import is_loopback
from relaybox.web.context import current_access_log, current_guard, current_pipeline, current_system
from relaybox.web.snapshots import actor_tree, failure_kind, without_failure_details
from relaybox.web.system import System

blueprint = Blueprint("operations", __name__)


@blueprint.get("/ping")
async def ping() -> Response:
    return Response(json.dumps({"status": "ok"}), mimetype="application/json")


@blueprint.get("/")
async def root() -> Response:
    """Liveness too: Claude Code checks that its API base answers with `HEAD /` before each run."""
    where = {"status": "ok", "service": "relaybox", "api": "/v1", "dashboard": "/dashboard"}
    return Response(json.dumps(where), mimetype="application/json")


@blueprint.get("/health")
async def health() -> Response:
    """Readiness, for a load balancer. 503 ("down", or "draining") when this instance cannot answer
    a model call: the router is not running, no provider can take a job, the client keys cannot be
    read on an exposed address, or it is shutting down. 200 otherwise; "degraded", with the reasons,
    when it answers with something missing: a provider, storage (records wait in the journal; budgets
    and key limits go unchecked), the budget, key, learning or recorder actor, records at risk. A
    load balancer must pull an instance that cannot answer, and should keep one that can."""
    running = current_system()
    details = caller_sees_everyone(running.keys is not None and running.keys.active)
    providers = _provider_health(running, details)
    usable = sum(provider["usable"] for provider in providers.values())
    down: list[str] = []  # why no model call can be answered here
    degraded: list[str] = []  # what the answers given here go without
    router = running.supervisor.state_of(running.router.name).value
    if not running.router_running():
        down.append(f"the router is {router}: every model call is refused (see /actors)")
    if not providers:
        down.append("no provider is configured")
    elif not usable:
        down.append("no provider can take a request now (each is down, or its breaker open)")
    elif usable < len(providers):
        idle = sorted(name for name, provider in providers.items() if not provider["usable"])
        degraded.append(f"providers that cannot take a request now: {', '.join(idle)}")
    keys = _actor_state(running, running.keys)
    if running.keys is not None:
        if not running.keys.statistics().loaded and not is_loopback(running.settings.host):
            down.append("the client keys cannot be read from storage: every model call is refused")
        elif keys != "running":
            degraded.append(f"the key actor is {keys}: key limits are not counted")
    recorder = running.recorder.statistics()
    if recorder.storage_up is False:
        degraded.append("storage is down: records wait in the journal, budgets and key limits go unchecked")
    if (recorder_state := _actor_state(running, running.recorder)) != "running":
        degraded.append(f"the recorder is {recorder_state}: answers are not being recorded")
    if recorder.journal_failed or recorder.journal_slow:
        degraded.append("the journal is failing or slow: answered requests' records are at risk")
    if recorder.dropped:
        degraded.append(
            f"{recorder.dropped} records were dropped (neither storage nor the journal took them)"
        )
    budget = _actor_state(running, running.budget)
    if budget != "running":
        degraded.append(f"the budget actor is {budget}: budgets are not enforced")
    learning = _actor_state(running, running.learning)
    if learning not in (None, "running"):
        degraded.append(f"the learning actor is {learning}: learned routing stops learning")
    if current_pipeline().drain.draining:
        status = "draining"  # a load balancer moves on before this one stops
        down.insert(0, "draining: relaybox is shutting down")
    else:
        status = "down" if down else "degraded" if degraded else "ok"
    storage = {
        "backend": recorder.storage,
        "up": recorder.storage_up,
        "buffered": recorder.buffered,
        "journaled": recorder.journaled,
        "dropped": recorder.dropped,
        "journal": recorder.journal,
        "journal_slow": recorder.journal_slow,
        "journal_failed": recorder.journal_failed,
        "last_error": recorder.last_error,
    }
    budgets = running.budget.statistics()
    body = {
        "status": status,
        "reasons": down + degraded,
        "router": router,
        "providers": providers,
        "storage": storage,
        "recorder": recorder_state,
        "budget": budget,
        "budget_checks_skipped": budgets.unchecked,  # storage did not answer in time
        "keys": keys,
        "learning": learning,  # None: learned routing is off
        "mcp_servers": _mcp_health(running),
    }
    return Response(json.dumps(body), status=503 if down else 200, mimetype="application/json")


def _provider_health(running: System, details: bool) -> dict[str, dict[str, Any]]:
    providers: dict[str, dict[str, Any]] = {}
    for name, provider in running.providers.items():
        snapshot = provider.statistics()
        providers[name] = {
            "health": snapshot.health.value,
            "actor": running.supervisor.state_of(name).value,
            "breaker": snapshot.breaker.state.value,
            # An open path: with keys in force, no one is known here, so no details.
            "last_failure": snapshot.last_failure if details else failure_kind(snapshot.last_failure),
            "usable": snapshot.accepting,  # would take a job now: running, breaker letting it through
        }
    return providers


def _actor_state(running: System, actor: Any) -> str | None:
    """An actor's state under the supervisor ("running", "restarting", "failed", ...); None: not there."""
    return None if actor is None else running.supervisor.state_of(actor.name).value


@blueprint.get("/actors")
async def actors() -> Response:
    running = current_system()
    tree = {
        "pid": os.getpid(),
        "worker": running.settings.worker,
        "supervisor": actor_tree(running.supervisor.statistics()),
    }
    if not caller_sees_everyone(running.keys is not None and running.keys.active):
        tree["supervisor"] = without_failure_details(tree["supervisor"])
    return Response(json.dumps(tree), mimetype="application/json")


@blueprint.get("/metrics")
async def prometheus() -> Response:
    body = metrics.render(current_system(), current_guard().refused, current_access_log().errors)
    return Response(body, mimetype="text/plain; version=0.0.4")


def _mcp_health(running: System) -> dict[str, Any]:
    """Each MCP server: connected with its tools, or not (a server down degrades only its tools,
    so it does not change the status)."""
    servers = {}
    for name, server in running.mcp_servers.items():
        snapshot = server.statistics()
        servers[name] = {
            "ready": snapshot.ready,
            "actor": running.supervisor.state_of(server.name).value,
            "tools": len(snapshot.tools),
        }
    return servers
