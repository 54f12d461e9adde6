"""The access log: one line per HTTP request, written when its response has been sent in full (a
stream when it ends), and the count of every 4xx and 5xx by route and status for `/metrics`,
including paths relaybox does not serve.

It wraps the app at the ASGI edge, so it sees every response, the guard's refusals and the error
handlers' answers included. What a handler knows (the client key's name, the matched route) it
leaves in the ASGI scope under `relaybox`; what the answer says about itself (provider, model, task
id, cache, dedup) it reads from the response headers relaybox already sends.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from relaybox.web.tracing import Tracing

log = logging.getLogger("relaybox.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Response headers the line repeats, by the field they fill.
FROM_HEADERS = {
    b"x-provider": "provider",
    b"x-model": "model",
    b"x-task-id": "task_id",
    b"x-cache-hit": "cache_hit",
    b"x-deduplicated-from": "deduplicated_from",
}
# Routes a 404 can name are bounded by the app's rules; any other path is counted as this.
UNMATCHED = "(no route)"
SCOPE_KEY = "relaybox"


def note(scope: Scope, **facts: str) -> None:
    """For handlers and hooks: facts about this request for its access-log line."""
    scope.setdefault(SCOPE_KEY, {}).update(facts)


class AccessLog:
    """ASGI middleware: times each HTTP request to its last byte, then logs it and counts errors."""

    def __init__(self, app: ASGIApp, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing  # a span per request, when traces are on
        self.errors: collections.Counter[tuple[str, int]] = collections.Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        status = 0
        span = None
        if self.tracing is not None:
            headers = {
                bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1")
                for k, v in scope.get("headers", ())
            }
            span = self.tracing.request_began(scope.get("method", ""), scope.get("path", ""), headers)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    field = FROM_HEADERS.get(bytes(name).lower())
                    if field is not None:
                        fields[field] = bytes(value).decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._log(scope, status, time.perf_counter() - started, fields)
            if span is not None and self.tracing is not None:
                self.tracing.request_ended(span, status, scope.get(SCOPE_KEY, {}), fields)

    def _log(self, scope: Scope, status: int, seconds: float, fields: dict[str, Any]) -> None:
        facts = scope.get(SCOPE_KEY, {})
        route = facts.get("route", UNMATCHED)
        if status >= 400 or status == 0:
            self.errors[(route, status or 499)] += 1  # 0: the client left before any answer
        entry = {
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "status": status or 499,
            "ms": round(seconds * 1000, 1),
            "key": facts.get("key"),
            **fields,
        }
        log.info(_line(entry), extra={"access": entry})


def _line(entry: dict[str, Any]) -> str:
    """The entry for a person at a terminal: `POST /v1/chat/completions 200 812.3 ms openai/gpt-4o-mini ...`."""
    parts = [entry["method"], entry["path"], str(entry["status"]), f"{entry['ms']:.1f} ms"]
    if entry.get("provider"):
        parts.append(f"{entry['provider']}/{entry.get('model', '?')}")
    if entry.get("key"):
        parts.append(f"key={entry['key']}")
    if entry.get("cache_hit") == "true":
        parts.append("cache=hit")
    if entry.get("deduplicated_from"):
        parts.append(f"dedup={entry['deduplicated_from']}")
    if entry.get("task_id"):
        parts.append(entry["task_id"])
    return " ".join(parts)
