"""The HTTP face of relaybox: a Quart app (trio flavour) over a running actor system.

`create_app` only assembles: the access log around everything (`web/access_log.py`), the guard that keeps strangers out (`web/guard.py`) and the client-key
check, both before every handler; the request pipeline every model call goes through
(`web/pipeline.py`); the handlers grouped by API (`web/handlers/`); and the error handlers that keep
every error in the endpoint's own format.
"""

from __future__ import annotations

import logging

import trio
from quart import Response, request
from quart_trio import QuartTrio
from relaybox.web.access_log import AccessLog, ASGIApp, Message, Receive, Scope, Send, note
from relaybox.web.context import ACCESS_LOG, GUARD, PIPELINE, current_guard, current_pipeline
from relaybox.web.errors import register_error_handlers
from relaybox.web.guard import EXPOSED_HEADERS, Asked, Guard
from relaybox.web.handlers import admin_api, anthropic_api, dashboard, openai_api, operations, responses_api
from relaybox.web.pipeline import RequestPipeline
from relaybox.web.system import System

log = logging.getLogger("relaybox.web")

# The longest an answer's last message may take to reach the server (see EndsItsAnswer).
LAST_SEND_SECONDS = 10.0

BLUEPRINTS = (
    openai_api.blueprint,
    anthropic_api.blueprint,
    responses_api.blueprint,
    admin_api.blueprint,
    dashboard.blueprint,
    operations.blueprint,
)


class EndsItsAnswer:
    """An answer's last message reaches the server whole, so that the connection is closed when the
    answer says `Connection: close` (or the request asked for it), and is kept alive otherwise.

    The server (hypercorn) handles the end of an answer inside the app's last `send`: it tells the app
    the exchange is over (`http.disconnect`), then closes the connection or readies it for the next
    request. quart-trio cancels the request's tasks as soon as it hears that, which cancelled the
    rest of the server's work mid-way: the connection stayed open, with no idle timeout, until the
    client gave up. Shielded, that work finishes (no bytes wait on it: the body is already sent);
    the cancellation lands after it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.move_on_after(LAST_SEND_SECONDS, shield=True):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, sending)


def create_app(system: System) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = system.settings.max_body_bytes
    app.extensions[PIPELINE] = RequestPipeline(system)
    app.extensions[GUARD] = Guard.for_settings(system.settings)
    register_error_handlers(app, system.settings.max_body_bytes)
    access_log = AccessLog(app.asgi_app, system.tracing)
    app.extensions[ACCESS_LOG] = access_log
    app.asgi_app = EndsItsAnswer(access_log)  # type: ignore[method-assign]
    app.before_request(name_the_route)
    app.before_request(keep_strangers_out)
    app.before_request(admit)
    app.after_request(share_with_allowed_origins)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


async def name_the_route() -> None:
    """For the access log and the error counts: the rule this request matched (bounded, unlike paths)."""
    if request.url_rule is not None:
        note(request.scope, route=request.url_rule.rule)


async def keep_strangers_out() -> Response | None:
    """Before anything else: a foreign host, a foreign web page or a body that is not JSON is refused;
    an allowed origin's preflight is answered here."""
    headers = request.headers
    asked = Asked(
        method=request.method,
        path=request.path,
        hosts=tuple(headers.getlist("host")),
        origins=tuple(headers.getlist("origin")),
        content_type=headers.get("content-type"),
        fetch_site=headers.get("sec-fetch-site"),
        fetch_mode=headers.get("sec-fetch-mode"),
        has_body=headers.get("content-length", "0") != "0" or "transfer-encoding" in headers,
    )
    refusal = current_guard().refusal(asked)
    if refusal is not None:
        origin = ", ".join(asked.origins) or asked.fetch_site or "-"
        log.warning("refused %s %s from %s: %s", request.method, request.path, origin, refusal.code)
        raise refusal
    origin = headers.get("origin")
    if request.method == "OPTIONS" and origin is not None and current_guard().may_use(origin, request.path):
        return Response(
            "",
            status=204,
            headers={
                "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
                "access-control-allow-headers": request.headers.get("access-control-request-headers", ""),
                "access-control-max-age": "600",
            },
        )
    return None


async def admit() -> None:
    """The request pipeline's first stage, before every handler: the client key and its limits."""
    key = await current_pipeline().admit(
        request.method, request.path, request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    request.api_key = key  # type: ignore[attr-defined]
    if key is not None:
        note(request.scope, key=key.name)


async def share_with_allowed_origins(response: Response) -> Response:
    """CORS headers for the web origins the operator allowed (and no others); and no page of another
    site may frame relaybox's pages (a click on the dashboard there would be the user's) or embed its
    answers."""
    response.headers["x-frame-options"] = "DENY"
    response.headers["content-security-policy"] = "frame-ancestors 'none'"
    response.headers["cross-origin-resource-policy"] = "same-origin"
    origin = request.headers.get("origin")
    if origin is not None and current_guard().may_use(origin, request.path):
        response.headers["access-control-allow-origin"] = origin
        response.headers["access-control-expose-headers"] = EXPOSED_HEADERS
        response.headers.add("vary", "Origin")
    return response
