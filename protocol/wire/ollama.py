"""Ollama's native chat API (`POST /api/chat`, NDJSON streaming; `GET /api/tags` lists models).

Images travel as base64 in the message's `images`; tool calls arrive whole, with arguments as
an object; `prompt_eval_count` / `eval_count` are the token counts. Local models cost nothing.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from relaybox.protocol.chat import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    ImageRequest,
    TextPart,
    arguments_object,
    inline_image,
)
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, Embedded, ToolCallDelta, TransportEvent, Usage
from relaybox.protocol.wire.dialect import (
    HttpCall,
    NDJSONStreamDecoder,
    WholeCall,
    error_message,
    load_json,
    malformed,
    vectors_of,
)

FINISH_REASONS = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for m in request.messages:
        wire: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
        if isinstance(m.content, tuple):
            wire["content"] = "".join(p.text for p in m.content if isinstance(p, TextPart))
            images = []
            for part in m.content:
                if isinstance(part, ImagePart):
                    inline = inline_image(part)
                    if inline is None:
                        raise ProviderFailure(
                            FailureKind.UNSUPPORTED,
                            "Ollama takes images inline only: send them as base64 data: URLs",
                        )
                    images.append(inline.data)
            if images:
                wire["images"] = images
        else:
            wire["content"] = m.content or ""
        if m.tool_calls:
            wire["tool_calls"] = [
                {"function": {"name": c.name, "arguments": arguments_object(c.arguments)}}
                for c in m.tool_calls
            ]
            call_names.update({c.id: c.name for c in m.tool_calls})
        if m.role == "tool" and m.tool_call_id in call_names:
            wire["tool_name"] = call_names[m.tool_call_id]
        messages.append(wire)
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": request.stream}
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if request.stop:
        options["stop"] = list(request.stop)
    if options:
        body["options"] = options
    if request.response_format == "json_object":
        body["format"] = "json"
    elif request.response_format == "json_schema" and request.json_schema:
        body["format"] = request.json_schema.get("schema", request.json_schema)
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
            }
            for t in request.tools
        ]
    return body


class _Lines:
    def __init__(self) -> None:
        self.tool_calls = 0
        self.finish_reason: str | None = None

    def decode(self, obj: object) -> list[TransportEvent]:
        if not isinstance(obj, dict):
            raise malformed("line is not an object")
        if "error" in obj:
            raise ProviderFailure(FailureKind.SERVER_ERROR, f"upstream error: {obj['error']}"[:300])
        events: list[TransportEvent] = []
        message = obj.get("message") or {}
        if isinstance(message.get("content"), str) and message["content"]:
            events.append(ContentDelta(message["content"]))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = function.get("arguments")
            events.append(
                ToolCallDelta(
                    self.tool_calls,
                    call.get("id") or f"call_{self.tool_calls}",
                    function.get("name"),
                    arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
                )
            )
            self.tool_calls += 1
        if obj.get("done"):
            reason = FINISH_REASONS.get(str(obj.get("done_reason") or "stop"), "stop")
            self.finish_reason = "tool_calls" if self.tool_calls else reason
            events.append(Usage(int(obj.get("prompt_eval_count") or 0), int(obj.get("eval_count") or 0)))
        return events


class OllamaStreamDecoder(NDJSONStreamDecoder):
    def __init__(self) -> None:
        super().__init__()
        self._lines = _Lines()

    def on_object(self, obj: Any) -> list[TransportEvent]:
        events = self._lines.decode(obj)
        self.finish_reason = self._lines.finish_reason
        return events


@attrs.frozen
class OllamaDialect:
    name: str = "ollama"

    def call(self, request: ChatRequest, model: str, api_key: str | None) -> HttpCall:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return HttpCall("/api/chat", headers, chat_body(request, model))

    def stream_decoder(self) -> OllamaStreamDecoder:
        return OllamaStreamDecoder()

    def decode_body(self, body: bytes) -> tuple[list[TransportEvent], str]:
        lines = _Lines()
        events = lines.decode(load_json(body))
        return events, lines.finish_reason or "stop"

    def error_message(self, body: bytes) -> str:
        return error_message(body)

    def embedding_call(self, request: EmbeddingRequest, model: str, api_key: str | None) -> WholeCall | None:
        """`/api/embed`, which takes a list of texts and reports the prompt's token count."""
        texts = request.texts()
        if texts is None:
            return None
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        body: dict[str, Any] = {"model": model, "input": list(texts)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions

        def decode(answer: bytes) -> list[TransportEvent]:
            parsed = load_json(answer)
            if not isinstance(parsed, dict):
                raise malformed("embed answer is not an object")
            vectors = vectors_of(parsed.get("embeddings"), "Ollama embeddings")
            return [Embedded(vectors), Usage(int(parsed.get("prompt_eval_count") or 0), 0)]

        return WholeCall(HttpCall("/api/embed", headers, body), decode)

    def image_call(self, request: ImageRequest, model: str, api_key: str | None) -> None:
        return None  # Ollama generates no images


def model_names(tags: object) -> list[str]:
    """The model names in a `GET /api/tags` answer."""
    if not isinstance(tags, dict) or not isinstance(tags.get("models"), list):
        return []
    return [m["name"] for m in tags["models"] if isinstance(m, dict) and isinstance(m.get("name"), str)]
