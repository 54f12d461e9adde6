"""Every error leaves in the dialect of the endpoint that was called (OpenAI's error object, or
Anthropic's on the Messages API), with the right status, and never as a traceback."""

from __future__ import annotations

import json
import logging

from quart import Response, request
from quart_trio import QuartTrio
from relaybox.protocol.errors import RelayError
from relaybox.protocol.wire import anthropic
from relaybox.storage.contract import StorageError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("relaybox.web")


def error_response(error: RelayError) -> Response:
    messages_api = request.path.startswith("/v1/messages") and not getattr(request, "local_backend", False)
    body = anthropic.error_body(error) if messages_api else error.body()
    response = Response(json.dumps(body), status=error.status, mimetype="application/json")
    if error.retry_after is not None:
        response.headers["retry-after"] = str(max(1, round(error.retry_after)))
    if error.status == 413 or _body_left_unread():
        # The rest of the body is still on its way: on a kept-alive connection the next request
        # would be read as more of it and hang, so this connection ends with the answer.
        response.headers["connection"] = "close"
    return response


def _body_left_unread() -> bool:
    """Was the request's body refused or not read (an error raised before the handler read it)?
    Quart keeps no public flag for it; its body's completion event is the one thing that knows."""
    if not (request.content_length or "chunked" in request.headers.get("transfer-encoding", "")):
        return False
    complete = getattr(getattr(request, "body", None), "_complete", None)
    return complete is not None and not complete.is_set()


def register_error_handlers(app: QuartTrio, max_body_bytes: int) -> None:
    @app.errorhandler(RelayError)
    async def relay_error(error: RelayError) -> Response:
        return error_response(error)

    @app.errorhandler(StorageError)
    async def storage_down(error: StorageError) -> Response:
        # Only the management API lets a storage failure through; the model endpoints catch theirs.
        return error_response(
            RelayError(
                503,
                f"storage is unavailable ({error}); requests are still served and recorded once it is back",
                "service_unavailable",
                code="storage_unavailable",
                retry_after=5,
            )
        )

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        return error_response(_http_error(error, max_body_bytes))

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            RelayError(
                500,
                f"internal error ({type(error).__name__}); see relaybox's log",
                "server_error",
                code="internal_error",
            )
        )


def _http_error(error: HTTPException, max_body_bytes: int) -> RelayError:
    status = error.code or 500
    messages = {
        404: f"no route {request.method} {request.path}; see /v1/chat/completions, /v1/responses, /v1/messages, /v1/embeddings, /v1/images/generations, /v1/models, /health, /actors",
        405: f"method {request.method} is not allowed on {request.path}",
        413: f"request body exceeds the limit of {max_body_bytes} bytes",
    }
    kinds = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}
    return RelayError(
        status,
        messages.get(status, error.description or error.name),
        kinds.get(status, "invalid_request_error"),
        code=error.name.lower().replace(" ", "_"),
    )
