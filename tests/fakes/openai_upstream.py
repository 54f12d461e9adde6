"""A fake OpenAI chat-completions server (also answering Open WebUI's path layout)."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable

import trio

from tests.fakes.http_server import FakeHTTPServer, FakeRequest, ResponseWriter
from tests.fakes.scripts import Reply, ReplyQueue, before_piece, fake_vector, split_text

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions", "/api/chat/completions")


class FakeOpenAI:
    def __init__(self, models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o")) -> None:
        self.replies = ReplyQueue()
        # A model's behaviour: the reply to a request, from its body (the queue's when None).
        self.answer_with: Callable[[dict], Reply] | None = None
        self.models = models
        self.server = FakeHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.base_url + "/v1"

    @property
    def requests(self) -> list[FakeRequest]:
        return self.server.requests

    def chat_requests(self) -> list[FakeRequest]:
        return [r for r in self.server.requests if r.path in CHAT_PATHS]

    async def start(self, nursery: trio.Nursery) -> FakeOpenAI:
        await self.server.start(nursery)
        return self

    async def _handle(self, request: FakeRequest, out: ResponseWriter) -> None:
        if request.method == "GET" and request.path in ("/v1/models", "/models", "/api/models"):
            await out.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
                    ],
                },
            )
            return
        if request.method == "POST" and request.path.endswith("/images/generations"):
            await self._image(request, out)
            return
        if request.method == "POST" and request.path in ("/v1/embeddings", "/embeddings"):
            await self._embed(request, out)
            return
        if request.method != "POST" or request.path not in CHAT_PATHS:
            await out.send_json(404, {"error": {"message": "no such route", "type": "not_found"}})
            return
        reply = self.replies.next() if self.answer_with is None else self.answer_with(request.json())
        if reply.stall:
            await out.hang()
        await trio.sleep(reply.delay)
        if reply.status != 200:
            await out.send_json(
                reply.status,
                {"error": {"message": reply.error_message, "type": "fake_error", "code": None}},
                reply.headers,
            )
            return
        body = request.json()
        model = body.get("model", "fake")
        if "image" in (body.get("modalities") or ()):  # OpenRouter-style image output from chat
            answer = _completion(model, reply)
            answer["choices"][0]["message"]["images"] = [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{FAKE_PNG}"}}
            ]
            await out.send_json(200, answer)
            return
        if body.get("stream"):
            await self._stream(body, model, reply, out)
        else:
            await _complete(model, reply, out)

    async def _embed(self, request: FakeRequest, out: ResponseWriter) -> None:
        """OpenAI's embeddings: strings or token ids in, one vector per input (base64 when asked)."""
        reply = self.replies.next()
        if reply.status != 200:
            await out.send_json(
                reply.status, {"error": {"message": reply.error_message, "type": "fake_error"}}
            )
            return
        body = request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and all(isinstance(x, int) for x in inputs):
            inputs = [inputs]
        data = []
        for i, item in enumerate(inputs):
            vector = fake_vector(
                item if isinstance(item, str) else json.dumps(item), body.get("dimensions", 8)
            )
            if body.get("encoding_format") == "base64":
                encoded: object = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(item.split()) if isinstance(item, str) else len(item) for item in inputs)
        await out.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    async def _image(self, request: FakeRequest, out: ResponseWriter) -> None:
        reply = self.replies.next()
        if reply.status != 200:
            await out.send_json(
                reply.status, {"error": {"message": reply.error_message, "type": "fake_error"}}, reply.headers
            )
            return
        body = request.json()
        n = int(body.get("n", 1))
        if body.get("response_format") == "url":
            data = [
                {"url": f"https://images.invalid/{i}.png", "revised_prompt": body["prompt"]} for i in range(n)
            ]
        else:
            data = [{"b64_json": FAKE_PNG} for _ in range(n)]
        answer: dict = {"created": int(time.time()), "data": data}
        if body.get("model") == "gpt-image-1":
            answer["usage"] = {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            }
        await out.send_json(200, answer)

    async def _stream(self, body: dict, model: str, reply: Reply, out: ResponseWriter) -> None:
        await out.start(200, {"content-type": "text/event-stream", **reply.headers})
        created = int(time.time())

        def frame(obj: object) -> bytes:
            return f"data: {json.dumps(obj)}\n\n".encode()

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return frame(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        await out.write(chunk({"role": "assistant", "content": ""}))
        for i, piece in enumerate(split_text(reply.text, reply.pieces)):
            wrong_shape = b'data: {"choices": [{"index": 0, "delta": "x"}]}\n\n'
            if not await before_piece(reply, i, out, b"data: {this is not json\n\n", wrong_shape):
                return
            await out.write(chunk({"content": piece}))
        finish = "stop"
        if reply.tool_call:
            name, arguments = reply.tool_call
            # The arguments arrive in many small fragments, as real upstreams send them.
            for j, fragment in enumerate(split_text(arguments, reply.tool_pieces)):
                call: dict = {"index": 0, "function": {"arguments": fragment}}
                if j == 0:
                    call.update({"id": "call_fake", "type": "function"})
                    call["function"]["name"] = name
                await out.write(chunk({"tool_calls": [call]}))
            finish = "tool_calls"
        await out.write(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await out.write(
                frame(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _usage(reply),
                    }
                )
            )
        await out.write(b"data: [DONE]\n\n")


FAKE_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


def _usage(reply: Reply) -> dict:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


async def _complete(model: str, reply: Reply, out: ResponseWriter) -> None:
    """A non-streamed answer, or what the script makes of it: a reset, a body cut short, an
    object of the wrong shape."""
    if reply.reset_after is not None or reply.stall_after is not None:
        if reply.stall_after is not None:
            await out.hang()
        out.reset()
    if reply.garbage_after is not None or reply.end_after is not None:
        body = json.dumps(_completion(model, reply)).encode()
        await out.send(200, body[: len(body) // 2], {"content-type": "application/json"})
    elif reply.wrong_shape_after is not None:
        await out.send_json(200, {"id": "chatcmpl-fake", "choices": "x"})
    else:
        await out.send_json(200, _completion(model, reply), reply.headers)


def _completion(model: str, reply: Reply) -> dict:
    message: dict = {"role": "assistant", "content": reply.text}
    finish = "stop"
    if reply.tool_call:
        name, arguments = reply.tool_call
        message["tool_calls"] = [
            {"id": "call_fake", "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": _usage(reply),
    }
