"""The HTTP face of relaybox: a Quart app (trio flavour) over a running actor system.

`create_app` only assembles: the request pipeline every model call goes through
(`web/pipeline.py`), the client-key check before every handler, the handlers grouped by API
(`web/handlers/`), and the error handlers that keep every error in the endpoint's own format.
"""

from __future__ import annotations

from quart import request
from quart_trio import QuartTrio
from relaybox.web.context import PIPELINE, current_pipeline
from relaybox.web.errors import register_error_handlers
from relaybox.web.handlers import admin_api, anthropic_api, dashboard, openai_api, operations
from relaybox.web.pipeline import RequestPipeline
from relaybox.web.system import System

BLUEPRINTS = (
    openai_api.blueprint,
    anthropic_api.blueprint,
    admin_api.blueprint,
    dashboard.blueprint,
    operations.blueprint,
)


def create_app(system: System) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = system.settings.max_body_bytes
    app.extensions[PIPELINE] = RequestPipeline(system)
    register_error_handlers(app, system.settings.max_body_bytes)
    app.before_request(admit)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


async def admit() -> None:
    """The request pipeline's first stage, before every handler: the client key and its limits."""
    request.api_key = await current_pipeline().admit(  # type: ignore[attr-defined]
        request.method, request.path, request.headers.get("authorization"), request.headers.get("x-api-key")
    )
