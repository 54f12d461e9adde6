"""The Anthropic Messages API: `POST /v1/messages` (streamed or whole, answered by any provider) and
`POST /v1/messages/count_tokens`."""

from __future__ import annotations

import json
import uuid
from typing import Any

from quart import Blueprint, Response, request
from relaybox.protocol import tokens
from relaybox.protocol.wire import anthropic, openai
from relaybox.web.calls import as_object, model_call, read_json
from relaybox.web.context import current_pipeline, current_system
from relaybox.web.handlers.openai_api import openai_completion
from relaybox.web.headers import with_cost
from relaybox.web.streaming import anthropic_stream, event_stream

blueprint = Blueprint("anthropic", __name__)


@blueprint.post("/v1/messages")
async def messages() -> Response:
    body = await read_json()
    if _is_local_backend_shape(body):
        # The local-backend shape: OpenAI-style messages in, chat.completion out.
        if isinstance(body, dict):
            body.setdefault("model", "auto")
        return await openai_completion(openai.parse_chat_request(body))
    chat = anthropic.parse_messages_request(body)
    message_id = f"msg_{uuid.uuid4().hex}"
    begun = await current_pipeline().answer(model_call(current_system().settings, chat, message_id))
    if chat.stream:
        renderer = anthropic.MessagesStreamRenderer(message_id, begun.answering.model)
        return event_stream(anthropic_stream(begun, renderer), begun)
    answer = await begun.collect()
    reply = anthropic.message_body(
        message_id=message_id,
        model=begun.answering.model,
        text=answer.text,
        tool_calls=openai.merge_tool_calls(answer.tool_calls),
        finish_reason=answer.finish_reason,
        usage=answer.usage,
    )
    return Response(json.dumps(reply), mimetype="application/json", headers=with_cost(begun.headers, answer))


@blueprint.post("/v1/messages/count_tokens")
async def count_tokens() -> Response:
    chat = anthropic.parse_messages_request({"max_tokens": 1, **as_object(await read_json())})
    return Response(json.dumps({"input_tokens": tokens.count_request(chat)}), mimetype="application/json")


def _is_local_backend_shape(body: Any) -> bool:
    """Neither an `anthropic-version` header nor `max_tokens`: a local-backend client's body."""
    local = "anthropic-version" not in request.headers and isinstance(body, dict) and "max_tokens" not in body
    request.local_backend = local  # type: ignore[attr-defined]
    return local
