"""A fake Anthropic Messages API server: what the Claude CLI (and the Anthropic SDK) talk to."""

from __future__ import annotations

import json
from collections.abc import Callable

import trio

from tests.fakes.http_server import FakeHTTPServer, FakeRequest, ResponseWriter
from tests.fakes.scripts import Reply, ReplyQueue, before_piece, split_text


class FakeAnthropic:
    def __init__(self) -> None:
        self.replies = ReplyQueue()
        # Content-dependent replies: given the request's body, what to answer (instead of the queue).
        self.answer_with: Callable[[dict], Reply] | None = None
        self.server = FakeHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[FakeRequest]:
        return self.server.requests

    def message_requests(self) -> list[FakeRequest]:
        return [r for r in self.server.requests if r.path == "/v1/messages"]

    async def start(self, nursery: trio.Nursery) -> FakeAnthropic:
        await self.server.start(nursery)
        return self

    async def _handle(self, request: FakeRequest, out: ResponseWriter) -> None:
        if request.method != "POST" or request.path != "/v1/messages":
            await out.send_json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": "no such route"}}
            )
            return
        reply = self.replies.next() if self.answer_with is None else self.answer_with(request.json())
        if reply.stall:
            await out.hang()
        await trio.sleep(reply.delay)
        if reply.status != 200:
            kind = {
                401: "authentication_error",
                429: "rate_limit_error",
                529: "overloaded_error",
                400: "invalid_request_error",
            }.get(reply.status, "api_error")
            await out.send_json(
                reply.status,
                {"type": "error", "error": {"type": kind, "message": reply.error_message}},
                reply.headers,
            )
            return
        body = request.json()
        model = body.get("model", "claude-fake")
        if body.get("stream"):
            await self._stream(model, reply, out)
        else:
            await out.send_json(
                200,
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": reply.text}, *_tool_blocks(reply)],
                    "stop_reason": "tool_use" if reply.tool_call else "end_turn",
                    "stop_sequence": None,
                    "usage": _usage(reply) | {"output_tokens": reply.completion_tokens},
                },
            )

    async def _stream(self, model: str, reply: Reply, out: ResponseWriter) -> None:
        await out.start(200, {"content-type": "text/event-stream", **reply.headers})

        async def event(name: str, data: dict) -> None:
            await out.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": _usage(reply) | {"output_tokens": 1},
                },
            },
        )
        await event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        await event("ping", {"type": "ping"})
        for i, piece in enumerate(split_text(reply.text, reply.pieces)):
            if not await before_piece(reply, i, out, b"event: content_block_delta\ndata: {not json\n\n"):
                return
            await event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        if reply.tool_call:
            name, arguments = reply.tool_call
            await event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "toolu_fake", "name": name, "input": {}},
                },
            )
            for fragment in split_text(arguments, reply.tool_pieces):
                await event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    },
                )
            await event("content_block_stop", {"type": "content_block_stop", "index": 1})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if reply.tool_call else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": reply.completion_tokens},
            },
        )
        await event("message_stop", {"type": "message_stop"})


def _usage(reply: Reply) -> dict:
    return {
        "input_tokens": reply.prompt_tokens,
        "cache_read_input_tokens": reply.cache_read_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
    }


def _tool_blocks(reply: Reply) -> list[dict]:
    if not reply.tool_call:
        return []
    name, arguments = reply.tool_call
    return [{"type": "tool_use", "id": "toolu_fake", "name": name, "input": json.loads(arguments)}]
