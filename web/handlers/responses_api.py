"""The OpenAI Responses API: `POST /v1/responses` (streamed or whole, answered by any provider),
`GET /v1/responses/{id}` and `DELETE /v1/responses/{id}` for stored responses."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import attrs
from quart import Blueprint, Response
from relaybox.protocol.wire import openai
from relaybox.protocol.wire.responses import ResponsesRequest, conversation, parse_responses_request
from relaybox.protocol.wire.responses_output import ResponseShape, ResponsesStreamRenderer, output_items
from relaybox.storage.records import StoredResponse
from relaybox.web.calls import caller_key, model_call, read_json
from relaybox.web.context import current_pipeline, current_system
from relaybox.web.headers import header_safe, with_cost
from relaybox.web.stored_responses import ResponseStore, owner_of
from relaybox.web.streaming import event_stream, responses_stream

blueprint = Blueprint("responses", __name__)


@blueprint.post("/v1/responses")
async def create_response() -> Response:
    request = parse_responses_request(await read_json())
    pipeline = current_pipeline()
    earlier: list[dict[str, Any]] = []
    if request.previous_response_id is not None:
        earlier = await pipeline.responses.earlier_items(request.previous_response_id, caller_key())
    chat = conversation(request, earlier)
    response_id = f"resp_{uuid.uuid4().hex}"
    begun = await pipeline.answer(model_call(current_system().settings, chat, response_id))
    if request.dropped_tools:
        dropped = ", ".join(sorted(set(request.dropped_tools)))
        warning = f"hosted tools left out (only OpenAI's servers run them): {dropped}"
        earlier_warning = begun.headers.get("x-relaybox-warning")  # an unknown model name's, say
        begun.headers["x-relaybox-warning"] = header_safe(
            f"{earlier_warning}; {warning}" if earlier_warning else warning
        )
    shape = ResponseShape(response_id, int(time.time()), begun.answering.model, request)
    keeper = _Keeper(pipeline.responses, owner_of(caller_key()), request, shape)
    if chat.stream:
        renderer = ResponsesStreamRenderer(shape)

        async def stored() -> None:
            await keeper.keep(renderer.output, renderer.final)

        return event_stream(responses_stream(begun, renderer, stored), begun)
    answer = await begun.collect()
    output = output_items(shape, answer.text, openai.merge_tool_calls(answer.tool_calls))
    body = shape.body(
        status="completed", output=output, usage=answer.usage, finish_reason=answer.finish_reason
    )
    await keeper.keep(output, body)
    return Response(openai.dumps(body), mimetype="application/json", headers=with_cost(begun.headers, answer))


@blueprint.get("/v1/responses/<response_id>")
async def get_response(response_id: str) -> Response:
    body = await current_pipeline().responses.response(response_id, caller_key())
    return Response(json.dumps(body), mimetype="application/json")


@blueprint.delete("/v1/responses/<response_id>")
async def delete_response(response_id: str) -> Response:
    await current_pipeline().responses.delete(response_id, caller_key())
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(json.dumps(body), mimetype="application/json")


@attrs.frozen
class _Keeper:
    """Stores a finished response when the client asked for it (read from the request up front: a
    stream's last event is sent outside the request's context)."""

    store: ResponseStore
    owner: str
    request: ResponsesRequest
    shape: ResponseShape

    async def keep(self, output: list[dict[str, Any]], body: dict[str, Any] | None) -> None:
        """Its own turn's items (what it was sent, then what it answered) and the response object."""
        if not self.request.store or body is None:
            return
        row = StoredResponse(
            id=self.shape.response_id,
            previous_id=self.request.previous_response_id,
            owner=self.owner,
            created_at=time.time(),
            items=json.dumps([*self.request.input_items, *output]),
            body=json.dumps(body),
        )
        await self.store.keep(row)
