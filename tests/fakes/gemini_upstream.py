"""A fake Gemini API: generateContent and streamGenerateContent?alt=sse (what the Gemini CLI and
the google-genai SDK talk to)."""

from __future__ import annotations

import json
import re

import trio

from tests.fakes.http_server import FakeHTTPServer, FakeRequest, ResponseWriter
from tests.fakes.scripts import Reply, ReplyQueue, before_piece, fake_vector, split_text

_PATH = re.compile(
    r"^/(v1beta|v1)/models/(?P<model>[^:/]+):(?P<method>generateContent|streamGenerateContent)$"
)

_EMBED_PATH = re.compile(r"^/(v1beta|v1)/models/(?P<model>[^:/]+):batchEmbedContents$")


class FakeGemini:
    def __init__(self) -> None:
        self.replies = ReplyQueue()
        self.server = FakeHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[FakeRequest]:
        return self.server.requests

    def generate_requests(self) -> list[FakeRequest]:
        return [r for r in self.server.requests if _PATH.match(r.path)]

    async def start(self, nursery: trio.Nursery) -> FakeGemini:
        await self.server.start(nursery)
        return self

    async def _handle(self, request: FakeRequest, out: ResponseWriter) -> None:
        embed = _EMBED_PATH.match(request.path)
        if request.method == "POST" and embed is not None:
            requests = request.json()["requests"]
            vectors = [
                fake_vector(one["content"]["parts"][0]["text"], one.get("outputDimensionality", 8))
                for one in requests
            ]
            await out.send_json(200, {"embeddings": [{"values": vector} for vector in vectors]})
            return
        match = _PATH.match(request.path)
        if request.method != "POST" or match is None:
            await out.send_json(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
            return
        reply = self.replies.next()
        if reply.stall:
            await out.hang()
        await trio.sleep(reply.delay)
        if reply.status != 200:
            status = {
                429: "RESOURCE_EXHAUSTED",
                401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED",
                400: "INVALID_ARGUMENT",
            }.get(reply.status, "UNAVAILABLE")
            await out.send_json(
                reply.status,
                {"error": {"code": reply.status, "message": reply.error_message, "status": status}},
                reply.headers,
            )
            return
        model = match["model"]
        if match["method"] == "generateContent":
            await out.send_json(200, _chunk(model, [{"text": reply.text}, *_calls(reply)], reply, final=True))
            return
        await out.start(200, {"content-type": "text/event-stream", **reply.headers})
        pieces = split_text(reply.text, reply.pieces)
        for i, piece in enumerate(pieces):
            if not await before_piece(reply, i, out, b"data: {not json\r\n\r\n"):
                return
            last = i == len(pieces) - 1
            parts = [{"text": piece}] + (_calls(reply) if last else [])
            await out.write(f"data: {json.dumps(_chunk(model, parts, reply, final=last))}\r\n\r\n".encode())


def _calls(reply: Reply) -> list[dict]:
    if not reply.tool_call:
        return []
    name, arguments = reply.tool_call
    return [{"functionCall": {"name": name, "args": json.loads(arguments)}}]


def _chunk(model: str, parts: list[dict], reply: Reply, *, final: bool) -> dict:
    candidate: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": reply.completion_tokens,
            "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
            "cachedContentTokenCount": reply.cache_read_tokens,
        },
        "modelVersion": model,
        "responseId": "fake-response",
    }
