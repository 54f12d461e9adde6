"""The OpenAI API: `POST /v1/chat/completions`, `GET /v1/models`, `POST /v1/images/generations`,
`POST /v1/embeddings`."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from quart import Blueprint, Response
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.errors import RelayError
from relaybox.protocol.routing.catalog import DEFAULT_ROUTE_NAMES, LEGACY_TIERS, TIERS
from relaybox.protocol.routing.routes import ROUTE_PREFIX
from relaybox.protocol.wire import openai
from relaybox.web.calls import caller_key, model_call, read_json
from relaybox.web.context import current_pipeline, current_system
from relaybox.web.feedback import feedback_command
from relaybox.web.headers import with_cost
from relaybox.web.streaming import event_stream, openai_stream

blueprint = Blueprint("openai", __name__)


@blueprint.post("/v1/chat/completions")
async def chat_completions() -> Response:
    return await openai_completion(openai.parse_chat_request(await read_json()))


async def openai_completion(chat: ChatRequest) -> Response:
    """A chat completion, streamed or whole; also the answer to `/v1/messages` in its local-backend shape."""
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    command = feedback_command(chat)
    if command is not None:
        begun = await current_pipeline().answer_feedback(request_id, command, caller_key())
    else:
        begun = await current_pipeline().answer(model_call(current_system().settings, chat, request_id))
    created = int(time.time())
    if chat.stream:
        return event_stream(openai_stream(begun, request_id, created, chat.include_usage), begun)
    answer = await begun.collect()
    body = openai.completion_body(
        completion_id=request_id,
        model=begun.answering.model,
        created=created,
        text=answer.text,
        tool_calls=answer.tool_calls,
        finish_reason=answer.finish_reason,
        usage=answer.usage,
    )
    return Response(openai.dumps(body), mimetype="application/json", headers=with_cost(begun.headers, answer))


@blueprint.post("/v1/images/generations")
async def images_generations() -> Response:
    request_id = f"img-{uuid.uuid4().hex}"
    image_request = openai.parse_image_request(await read_json())
    begun = await current_pipeline().answer(model_call(current_system().settings, image_request, request_id))
    answer = await begun.collect()
    body: dict[str, Any] = {"created": int(time.time()), "data": answer.images}
    if answer.usage is not None and (answer.usage.prompt_tokens or answer.usage.completion_tokens):
        body["usage"] = {
            "input_tokens": answer.usage.prompt_tokens,
            "output_tokens": answer.usage.completion_tokens,
            "total_tokens": answer.usage.total_tokens,
        }
    return Response(json.dumps(body), mimetype="application/json", headers=with_cost(begun.headers, answer))


@blueprint.post("/v1/embeddings")
async def embeddings() -> Response:
    request_id = f"emb-{uuid.uuid4().hex}"
    embedding_request = openai.parse_embedding_request(await read_json())
    begun = await current_pipeline().answer(
        model_call(current_system().settings, embedding_request, request_id)
    )
    answer = await begun.collect()
    if len(answer.vectors) != len(embedding_request.inputs):
        raise RelayError(
            502,
            f"the upstream returned {len(answer.vectors)} vectors for {len(embedding_request.inputs)} inputs",
            "upstream_error",
            code="malformed_upstream",
        )
    body = openai.embedding_body(
        begun.answering.model, answer.vectors, embedding_request.encoding_format, answer.usage
    )
    return Response(openai.dumps(body), mimetype="application/json", headers=with_cost(begun.headers, answer))


@blueprint.get("/v1/models")
async def models() -> Response:
    """Every model of every active provider, then the other names relaybox answers to."""
    running = current_system()
    catalog = running.catalog
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
        _listed(
            model.id,
            provider.provider,
            kind=kind,
            provider=provider.provider,
            pinned=f"{provider.provider}:{model.id}",
        )
        for provider in catalog.ordered()
        for kind, models in (("image", provider.image_models), ("embedding", provider.embedding_models))
        for model in models
    ]
    data += [_listed(alias, kind="alias", target=target) for alias, target in sorted(catalog.aliases.items())]
    if catalog.providers:
        data.append(_listed("auto", kind="smart", target="the cheapest model that fits the task"))
        data += [
            _listed(name, kind="default", target="the default provider's model")
            for name in sorted(DEFAULT_ROUTE_NAMES)
        ]
        names = [(tier, tier) for tier in TIERS] + sorted(LEGACY_TIERS.items())
        data += [_listed(name, kind="tier", target=f"cheapest eligible {tier} model") for name, tier in names]
        routes = sorted(running.settings.routing.routes.values(), key=lambda r: r.name)
        data += [
            _listed(f"{ROUTE_PREFIX}{route.name}", kind="route", chain=list(route.chain)) for route in routes
        ]
    return Response(json.dumps({"object": "list", "data": data}), mimetype="application/json")


def _listed(model_id: str, owned_by: str = "relaybox", **details: Any) -> dict[str, Any]:
    """One /v1/models entry; `relaybox` says what the name is and where it leads."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owned_by, "relaybox": details}
