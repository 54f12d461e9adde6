"""The HTTP face of relaybox: a Quart app (trio flavour) over a running actor system.

Handlers parse with `protocol`, hand the request to the router by message, and render what
comes back on the reply channel. Every error leaves in OpenAI's error format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from relaybox.protocol import tokens
from relaybox.protocol.chat import ChatRequest, ImageRequest
from relaybox.protocol.compression.pipeline import LEVELS, compress
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import (
    ContentDelta,
    Event,
    Failed,
    Finished,
    ToolCallDelta,
    Usage,
)
from relaybox.protocol.keys import client_of
from relaybox.protocol.routing.catalog import DEFAULT_ROUTE_NAMES, LEGACY_TIERS, TIERS
from relaybox.protocol.routing.routes import ROUTE_PREFIX
from relaybox.protocol.wire import anthropic as anthropic_wire
from relaybox.protocol.wire import openai as openai_wire
from relaybox.protocol.wire.sse import DONE, KEEPALIVE, encode_data
from relaybox.web import metrics
from relaybox.web.admin_api import register_api
from relaybox.web.answer_cache import cache_key, cache_policy
from relaybox.web.dashboard_routes import register_dashboard
from relaybox.web.dedup import Deduplicator
from relaybox.web.exchange import (
    KEEPALIVE_AFTER,
    REPLY_IDLE_LIMIT,
    Begun,
    Collected,
    EventSource,
    dispatch,
    unexpected,
)
from relaybox.web.feedback import answer_feedback, feedback_command
from relaybox.web.system import System
from werkzeug.exceptions import HTTPException

log = logging.getLogger("relaybox.web")


def error_response(error: RelayError) -> Response:
    """The error in the dialect of the endpoint that was called."""
    anthropic = request.path.startswith("/v1/messages") and not getattr(request, "local_backend", False)
    body = anthropic_wire.error_body(error) if anthropic else error.body()
    response = Response(json.dumps(body), status=error.status, mimetype="application/json")
    if error.retry_after is not None:
        response.headers["retry-after"] = str(max(1, round(error.retry_after)))
    return response


def create_app(system: System) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = system.settings.max_body_bytes
    cache = system.cache
    dedup = Deduplicator(
        system.settings.dedup_seconds, system.recorder if system.settings.record_requests else None, cache
    )
    app.config["RELAYBOX_DEDUP"] = dedup

    async def begin(chat: ChatRequest | ImageRequest, request_id: str) -> Begun:
        """Dispatch, or replay a cached answer, or join an identical request in flight."""
        client = _client()
        key = getattr(request, "api_key", None)
        key_budget = None if key is None else key.budget()
        cached = None
        if isinstance(chat, ChatRequest) and cache.enabled:
            policy = cache_policy(chat, request.headers, system.settings.cache_ttl)
            if policy is not None:
                cached = (cache_key(chat, _route_header()), policy)
        level = _compression_level(system.settings.compression)

        async def start() -> Begun:
            # Compression runs only for a request that goes upstream (not for a replay or a join).
            sent, saved = chat, None
            if isinstance(chat, ChatRequest) and level != "off":
                compressed = compress(chat, level)
                sent, saved = compressed.request, compressed.saved
            return await dispatch(
                system,
                sent,
                request_id,
                client,
                _route_header(),
                tokens_saved=saved,
                compression_level=level,
                key_budget=key_budget,
            )

        return await dedup.begin(_dedup_key(), request_id, client, start, cached)

    @app.errorhandler(RelayError)
    async def relay_error(error: RelayError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        messages = {
            404: f"no route {request.method} {request.path}; see /v1/chat/completions, /v1/models, /health, /actors",
            405: f"method {request.method} is not allowed on {request.path}",
            413: f"request body exceeds the limit of {system.settings.max_body_bytes} bytes",
        }
        kinds = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}
        return error_response(
            RelayError(
                status,
                messages.get(status, error.description or error.name),
                kinds.get(status, "invalid_request_error"),
                code=error.name.lower().replace(" ", "_"),
            )
        )

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

    @app.before_request
    async def authenticate() -> None:
        if system.keys is not None:
            key = system.keys.check(
                request.method,
                request.path,
                request.headers.get("authorization"),
                request.headers.get("x-api-key"),
            )
            request.api_key = key  # type: ignore[attr-defined]
            await system.keys.within_limit(key, request.path, time.time())

    register_api(app, system)
    register_dashboard(app)

    @app.get("/ping")
    async def ping() -> Response:
        return Response(json.dumps({"status": "ok"}), mimetype="application/json")

    @app.get("/health")
    async def health() -> Response:
        now = trio.current_time()
        providers = {}
        for name, provider in system.providers.items():
            record = system.supervisor.record(name)
            providers[name] = {
                "health": provider.health(now).value,
                "actor": record.state.value,
                "breaker": provider.breaker.state.value,
                "last_failure": provider.last_failure,
            }
        usable = [p for p in providers.values() if p["health"] in ("healthy", "degraded")]
        status = "ok" if usable and len(usable) == len(providers) else "degraded" if usable else "down"
        recorder = system.recorder.statistics()
        storage = {
            "backend": recorder["storage"],
            "up": recorder["storage_up"],
            "buffered": recorder["buffered"],
            "journaled": recorder["journaled"],
            "dropped": recorder["dropped"],
            "journal_failed": recorder["journal_failed"],
            "last_error": recorder["last_error"],
        }
        if recorder["journal_failed"] or recorder["dropped"]:
            status = "degraded" if status == "ok" else status  # records at risk: say so loudly
        body = {
            "status": status,
            "router": system.supervisor.record(system.router.name).state.value,
            "providers": providers,
            "storage": storage,
        }
        return Response(json.dumps(body), status=200 if usable else 503, mimetype="application/json")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(system), mimetype="text/plain; version=0.0.4")

    @app.get("/actors")
    async def actors() -> Response:
        tree = {"pid": os.getpid(), "worker": system.settings.worker, "supervisor": system.supervisor.tree()}
        return Response(json.dumps(tree), mimetype="application/json")

    @app.get("/v1/models")
    async def models() -> Response:
        catalog = system.catalog
        data = [
            _listed(
                model.id,
                provider.provider,
                kind="model",
                provider=provider.provider,
                tier=model.tier,
                context_window=model.context_window,
                pinned=f"{provider.provider}:{model.id}",
            )
            for provider in catalog.ordered()
            for model in provider.models
        ]
        data += [
            _listed(alias, kind="alias", target=target) for alias, target in sorted(catalog.aliases.items())
        ]
        if catalog.providers:
            data.append(_listed("auto", kind="smart", target="the cheapest model that fits the task"))
            data += [
                _listed(name, kind="default", target="the default provider's model")
                for name in sorted(DEFAULT_ROUTE_NAMES)
            ]
            names = [(tier, tier) for tier in TIERS] + sorted(LEGACY_TIERS.items())
            data += [
                _listed(name, kind="tier", target=f"cheapest eligible {tier} model") for name, tier in names
            ]
            data += [
                _listed(f"{ROUTE_PREFIX}{route.name}", kind="route", chain=list(route.chain))
                for route in sorted(system.settings.routing.routes.values(), key=lambda r: r.name)
            ]
        return Response(json.dumps({"object": "list", "data": data}), mimetype="application/json")

    async def openai_completion(chat: ChatRequest) -> Response:
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        command = feedback_command(chat)
        if command is not None:
            begun = await answer_feedback(system, command, request_id)
        else:
            begun = await begin(chat, request_id)
        created = int(time.time())
        if chat.stream:
            return _event_stream(_openai_stream(begun, request_id, created, chat.include_usage), begun)
        answer = await begun.collect()
        body = openai_wire.completion_body(
            completion_id=request_id,
            model=begun.answering.model,
            created=created,
            text=answer.text,
            tool_calls=answer.tool_calls,
            finish_reason=answer.finish_reason,
            usage=answer.usage,
        )
        return Response(
            openai_wire.dumps(body), mimetype="application/json", headers=_with_cost(begun.headers, answer)
        )

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        return await openai_completion(openai_wire.parse_chat_request(await _read_json()))

    @app.post("/v1/messages")
    async def messages() -> Response:
        body = await _read_json()
        if _is_local_backend_shape(body):
            # Seed 000's local backend: OpenAI-style messages in, chat.completion out.
            if isinstance(body, dict):
                body.setdefault("model", "auto")
            return await openai_completion(openai_wire.parse_chat_request(body))
        chat = anthropic_wire.parse_messages_request(body)
        message_id = f"msg_{uuid.uuid4().hex}"
        begun = await begin(chat, message_id)
        if chat.stream:
            renderer = anthropic_wire.MessagesStreamRenderer(message_id, begun.answering.model)
            return _event_stream(_anthropic_stream(begun, renderer), begun)
        answer = await begun.collect()
        reply = anthropic_wire.message_body(
            message_id=message_id,
            model=begun.answering.model,
            text=answer.text,
            tool_calls=openai_wire.merge_tool_calls(answer.tool_calls),
            finish_reason=answer.finish_reason,
            usage=answer.usage,
        )
        return Response(
            json.dumps(reply), mimetype="application/json", headers=_with_cost(begun.headers, answer)
        )

    @app.post("/v1/images/generations")
    async def images_generations() -> Response:
        request_id = f"img-{uuid.uuid4().hex}"
        begun = await begin(_image_request(_as_object(await _read_json())), request_id)
        answer = await begun.collect()
        body: dict[str, Any] = {"created": int(time.time()), "data": answer.images}
        if answer.usage is not None and (answer.usage.prompt_tokens or answer.usage.completion_tokens):
            body["usage"] = {
                "input_tokens": answer.usage.prompt_tokens,
                "output_tokens": answer.usage.completion_tokens,
                "total_tokens": answer.usage.total_tokens,
            }
        return Response(
            json.dumps(body), mimetype="application/json", headers=_with_cost(begun.headers, answer)
        )

    @app.post("/v1/messages/count_tokens")
    async def count_tokens() -> Response:
        chat = anthropic_wire.parse_messages_request({"max_tokens": 1, **_as_object(await _read_json())})
        return Response(json.dumps({"input_tokens": tokens.count_request(chat)}), mimetype="application/json")

    return app


def _listed(model_id: str, owned_by: str = "relaybox", **details: Any) -> dict[str, Any]:
    """One /v1/models entry; `relaybox` says what the name is and where it leads."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owned_by, "relaybox": details}


def _client() -> str | None:
    """Who asked, for the log: the key's name when the request carried one, else its user agent."""
    key = getattr(request, "api_key", None)
    if key is not None:
        return client_of(key.name)
    return request.headers.get("user-agent", "")[:200] or None


def _compression_level(default: str) -> str:
    level = request.headers.get("x-relaybox-compression", default).strip().lower()
    if level not in LEVELS:
        raise RelayError(
            400,
            f"x-relaybox-compression must be one of {', '.join(LEVELS)}",
            code="invalid_header",
            param="x-relaybox-compression",
        )
    return level


def _route_header() -> str | None:
    return request.headers.get("x-relaybox-route") or None


def _dedup_key() -> bytes | None:
    """Identical requests: the same body bytes on the same endpoint and route header."""
    digest = getattr(request, "body_digest", None)
    if digest is None or request.headers.get("x-relaybox-dedup", "").lower() == "off":
        return None  # e.g. best-of-n sampling: the client wants each answer of its own
    scope = f"{request.path}\n{request.headers.get('x-relaybox-route', '')}\n".encode()
    return scope + digest


async def _read_json() -> Any:
    raw = await request.get_data(cache=False)
    request.body_digest = hashlib.blake2b(raw, digest_size=16).digest()  # type: ignore[attr-defined]
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise RelayError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None


def _with_cost(headers: dict[str, str], answer: Collected) -> dict[str, str]:
    """Non-streaming answers say what they cost (a stream's headers leave before the usage)."""
    if answer.usage is None or answer.usage.cost_usd is None:
        return headers
    return {**headers, "x-cost-usd": f"{answer.usage.cost_usd:.8f}"}


def _image_request(body: dict[str, Any]) -> ImageRequest:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RelayError(
            400, "'prompt' is required: a non-empty string", code="invalid_request", param="prompt"
        )
    model = body.get("model", "auto")
    if not isinstance(model, str):
        raise RelayError(400, "'model' must be a string", code="invalid_request", param="model")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
        raise RelayError(400, "'n' must be an integer from 1 to 10", code="invalid_request", param="n")
    fields: dict[str, str | None] = {}
    for key in ("size", "quality", "response_format"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise RelayError(400, f"'{key}' must be a string", code="invalid_request", param=key)
        fields[key] = value
    if fields["response_format"] not in (None, "url", "b64_json"):
        raise RelayError(
            400,
            "'response_format' must be 'url' or 'b64_json'",
            code="invalid_request",
            param="response_format",
        )
    known = {"prompt", "model", "n", "size", "quality", "response_format"}
    return ImageRequest(
        model=model,
        prompt=prompt,
        n=n,
        passthrough={k: v for k, v in body.items() if k not in known},
        **fields,
    )


def _as_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RelayError(400, "the request body must be a JSON object", code="invalid_request")
    return body


def _is_local_backend_shape(body: Any) -> bool:
    local = "anthropic-version" not in request.headers and isinstance(body, dict) and "max_tokens" not in body
    request.local_backend = local  # type: ignore[attr-defined]
    return local


def _event_stream(body: AsyncIterator[bytes], begun: Begun) -> Response:
    response = Response(
        body,
        mimetype="text/event-stream",
        headers={**begun.headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )
    response.timeout = None  # Quart would otherwise cut the stream after 60 s
    # A client that hangs up before the body is first read cancels the request before the
    # generator ever runs, so its `finally` never does: release the answer when the response goes.
    weakref.finalize(response, begun.close)
    return response


class _Silence:
    """Keep-alives for a quiet stream, and a last-resort end when it has been quiet far too long."""

    def __init__(self) -> None:
        self.since = trio.current_time()

    def ready(self, receive: EventSource) -> Event:
        """The next event if it is already waiting; raises `trio.WouldBlock` if not."""
        event = receive.receive_nowait()
        self.since = trio.current_time()
        return event

    async def next(self, receive: EventSource) -> Event | None:
        """The next event; None means: send a keep-alive. (One timeout, not `next_event`'s two:
        this runs for most chunks of a stream, and the idle limit is checked here.)"""
        with trio.move_on_after(KEEPALIVE_AFTER):
            try:
                event = await receive.receive()
            except trio.EndOfChannel:
                event = Failed(unexpected(None))
            self.since = trio.current_time()
            return event
        if trio.current_time() - self.since >= REPLY_IDLE_LIMIT:
            return Failed(
                RelayError(
                    504,
                    "no answer from relaybox's providers in time",
                    "upstream_error",
                    code="gateway_timeout",
                )
            )
        return None


# Renders one event (None: a keep-alive is due) as the bytes to send, and says whether it ended the stream.
Render = Callable[[Event | None], tuple[bytes, bool]]


async def _rendered(begun: Begun, opening: bytes, render: Render) -> AsyncIterator[bytes]:
    """An answer's events as SSE bytes. Events that are already waiting leave together in one
    write: when the client side falls behind (a thousand streams on one core), each trip through
    Quart and hypercorn carries several chunks instead of one. A client disconnect surfaces here
    as cancellation or generator close; the cleanup in `finally` is synchronous because nothing may
    be awaited there."""
    try:
        pending = [opening]
        silence = _Silence()
        while True:
            try:
                event: Event | None = silence.ready(begun.receive)
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                # Nothing waiting (or the channel ended, which `next` turns into how the answer broke).
                if pending:
                    yield b"".join(pending)
                    pending.clear()
                event = await silence.next(begun.receive)
            data, ended = render(event)
            if data:
                pending.append(data)
            if ended:
                yield b"".join(pending)
                return
    finally:
        begun.close()


def _openai_stream(begun: Begun, request_id: str, created: int, include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI SSE."""
    model = begun.answering.model
    usage: Usage | None = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return encode_data(
            openai_wire.dumps(
                openai_wire.chunk_body(
                    completion_id=request_id,
                    model=model,
                    created=created,
                    delta=delta,
                    finish_reason=finish_reason,
                )
            )
        )

    def render(event: Event | None) -> tuple[bytes, bool]:
        nonlocal usage
        if event is None:
            return KEEPALIVE, False
        if isinstance(event, ContentDelta):
            return chunk({"content": event.text}), False
        if isinstance(event, ToolCallDelta):
            return chunk({"tool_calls": [openai_wire.tool_call_body(event)]}), False
        if isinstance(event, Usage):
            usage = event
            return b"", False
        if isinstance(event, Finished):
            closing = chunk({}, event.finish_reason)
            if include_usage and usage is not None:
                closing += encode_data(
                    openai_wire.dumps(
                        openai_wire.usage_chunk_body(
                            completion_id=request_id, model=model, created=created, usage=usage
                        )
                    )
                )
            return closing + DONE, True
        if isinstance(event, Failed):
            return encode_data(openai_wire.dumps(event.error.body())), True
        return b"", False

    return _rendered(begun, chunk({"role": "assistant", "content": ""}), render)


def _anthropic_stream(begun: Begun, renderer: anthropic_wire.MessagesStreamRenderer) -> AsyncIterator[bytes]:
    """Messages API SSE."""

    def render(event: Event | None) -> tuple[bytes, bool]:
        if event is None:
            return anthropic_wire.PING, False
        if isinstance(event, ContentDelta):
            return renderer.text(event), False
        if isinstance(event, ToolCallDelta):
            return renderer.tool(event), False
        if isinstance(event, Usage):
            renderer.usage = event
            return b"", False
        if isinstance(event, Finished):
            return renderer.finish(event.finish_reason), True
        if isinstance(event, Failed):
            return renderer.error(event.error), True
        return b"", False

    return _rendered(begun, renderer.start(), render)
