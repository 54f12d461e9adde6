"""Operations: `GET /` and `/ping` (liveness), `/health` (readiness), `/actors` (the supervision tree) and
`/metrics` (Prometheus)."""

from __future__ import annotations

import json
import os
from typing import Any

from quart import Blueprint, Response
from relaybox.web import metrics
from relaybox.web.calls import caller_sees_everyone
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
    """Each provider's health and the recorder's storage; 503 when no provider can serve."""
    running = current_system()
    details = caller_sees_everyone(running.keys is not None and running.keys.active)
    providers: dict[str, Any] = {}
    usable = 0
    for name, provider in running.providers.items():
        snapshot = provider.statistics()
        usable += snapshot.accepting  # would take a job now: running, breaker letting it through
        providers[name] = {
            "health": snapshot.health.value,
            "actor": running.supervisor.state_of(name).value,
            "breaker": snapshot.breaker.state.value,
            # An open path: with keys in force, no one is known here, so no details.
            "last_failure": snapshot.last_failure if details else failure_kind(snapshot.last_failure),
        }
    status = "ok" if usable and usable == len(providers) else "degraded" if usable else "down"
    draining = current_pipeline().drain.draining
    if draining:
        status, usable = "draining", 0  # a load balancer moves on before this one stops
    recorder = running.recorder.statistics()
    if recorder.journal_failed or recorder.dropped or recorder.journal_slow:
        status = "degraded" if status == "ok" else status  # records at risk: say so loudly
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
    body = {
        "status": status,
        "router": running.supervisor.state_of(running.router.name).value,
        "providers": providers,
        "storage": storage,
        "mcp_servers": _mcp_health(running),
    }
    return Response(json.dumps(body), status=200 if usable else 503, mimetype="application/json")


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
