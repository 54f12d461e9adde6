"""A fake Ollama server: /api/chat (NDJSON streaming) and /api/tags."""

from __future__ import annotations

import json

import trio

from tests.fakes.http_server import FakeHTTPServer, FakeRequest, ResponseWriter
from tests.fakes.scripts import Reply, ReplyQueue, before_piece, fake_vector, split_text


class FakeOllama:
    def __init__(self, models: tuple[str, ...] = ("llama3.2:3b", "qwen2.5-coder:7b")) -> None:
        self.replies = ReplyQueue()
        self.models = models
        self.server = FakeHTTPServer(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def chat_requests(self) -> list[FakeRequest]:
        return [r for r in self.server.requests if r.path == "/api/chat"]

    async def start(self, nursery: trio.Nursery) -> FakeOllama:
        await self.server.start(nursery)
        return self

    async def _handle(self, request: FakeRequest, out: ResponseWriter) -> None:
        if request.method == "GET" and request.path == "/api/tags":
            await out.send_json(
                200,
                {
                    "models": [
                        {
                            "name": m,
                            "model": m,
                            "modified_at": "2026-11-01T00:00:00Z",
                            "size": 1,
                            "digest": "0" * 64,
                            "details": {
                                "format": "gguf",
                                "family": "llama",
                                "parameter_size": "3B",
                                "quantization_level": "Q4_K_M",
                            },
                        }
                        for m in self.models
                    ]
                },
            )
            return
        if request.method == "POST" and request.path == "/api/embed":
            body = request.json()
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            vectors = [fake_vector(text, body.get("dimensions", 8)) for text in texts]
            tokens = sum(len(text.split()) for text in texts)
            await out.send_json(
                200, {"model": body["model"], "embeddings": vectors, "prompt_eval_count": tokens}
            )
            return
        if request.method != "POST" or request.path != "/api/chat":
            await out.send_json(404, {"error": "not found"})
            return
        reply = self.replies.next()
        if reply.stall:
            await out.hang()
        await trio.sleep(reply.delay)
        body = request.json()
        model = body.get("model")
        if _tagged(model) not in {_tagged(m) for m in self.models}:
            await out.send_json(404, {"error": f"model '{model}' not found"})
            return
        if reply.status != 200:
            await out.send_json(reply.status, {"error": reply.error_message})
            return
        if not body.get("stream", True):
            await out.send_json(200, _line(model, reply.text, reply, done=True))
            return
        await out.start(200, {"content-type": "application/x-ndjson"})
        for i, piece in enumerate(split_text(reply.text, reply.pieces)):
            if not await before_piece(reply, i, out, b"{not json\n"):
                return
            await out.write(json.dumps(_line(model, piece, reply, done=False)).encode() + b"\n")
        await out.write(json.dumps(_line(model, "", reply, done=True)).encode() + b"\n")


def _tagged(model: object) -> object:
    """Like Ollama, a model named without a tag is its `:latest`."""
    if isinstance(model, str) and ":" not in model.rsplit("/", 1)[-1]:
        return f"{model}:latest"
    return model


def _line(model: str, content: str, reply: Reply, *, done: bool) -> dict:
    message: dict = {"role": "assistant", "content": content}
    if done and reply.tool_call:
        name, arguments = reply.tool_call
        message["tool_calls"] = [{"function": {"name": name, "arguments": json.loads(arguments)}}]
    line: dict = {"model": model, "created_at": "2026-11-22T00:00:00Z", "message": message, "done": done}
    if done:
        line.update(
            {
                "done_reason": "stop",
                "total_duration": 1,
                "load_duration": 1,
                "prompt_eval_count": reply.prompt_tokens,
                "eval_count": reply.completion_tokens,
            }
        )
    return line
