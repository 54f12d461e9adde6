"""OpenAI's chat completions upstream (OpenAI and every OpenAI-compatible provider): a `ChatRequest`
becomes a request body, and the upstream's answers (SSE chunks or one body, images) become events."""

from __future__ import annotations

from typing import Any

import attrs
from relaybox.protocol.chat import ChatRequest, ContentPart, EmbeddingRequest, ImageRequest, TextPart
from relaybox.protocol.events import (
    ContentDelta,
    Embedded,
    GeneratedImages,
    ToolCallDelta,
    TransportEvent,
    Usage,
)
from relaybox.protocol.wire.dialect import (
    HttpCall,
    SSEStreamDecoder,
    WholeCall,
    error_message,
    load_json,
    malformed,
    upstream_error,
    vectors_of,
)
from relaybox.protocol.wire.sse import SSEvent


def _content_wire(content: str | tuple[ContentPart, ...] | None) -> object:
    if content is None or isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        else:
            image: dict[str, Any] = {"url": part.url}
            if part.detail is not None:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
    return parts


def upstream_request_body(request: ChatRequest, model: str) -> dict[str, Any]:
    messages = []
    for m in request.messages:
        wire: dict[str, Any] = {"role": m.role, "content": _content_wire(m.content)}
        if m.name is not None:
            wire["name"] = m.name
        if m.tool_calls:
            wire["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            wire["tool_call_id"] = m.tool_call_id
        messages.append(wire)
    body: dict[str, Any] = dict(request.passthrough)
    body.update({"model": model, "messages": messages, "stream": request.stream})
    if request.stream:
        # Always ask for usage: relaybox accounts for every request, whatever the client wants.
        body["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "parameters": t.parameters,
                    **({"description": t.description} if t.description else {}),
                },
            }
            for t in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}} if choice.mode == "tool" else choice.mode
        )
    if request.response_format == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif request.response_format == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": request.json_schema}
    return body


def _usage_from_wire(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_tokens=int(cached or 0),
    )


def decode_upstream_chunk(chunk: object) -> tuple[list[TransportEvent], str | None]:
    """One upstream `chat.completion.chunk` → events, and the finish reason if it carries one.

    Raises ValueError on a chunk that is not a chunk (the stream is malformed).
    """
    if not isinstance(chunk, dict):
        raise ValueError("stream chunk is not a JSON object")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamStreamError(str(message))
    events: list[TransportEvent] = []
    finish_reason: str | None = None
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise ValueError("stream chunk 'choices' is not a list")
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            events.append(ContentDelta(text))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            events.append(
                ToolCallDelta(
                    index=int(call.get("index", 0)),
                    id=call.get("id"),
                    name=function.get("name"),
                    arguments=function.get("arguments") or "",
                )
            )
        if choice.get("finish_reason"):
            finish_reason = str(choice["finish_reason"])
    usage = _usage_from_wire(chunk.get("usage"))
    if usage is not None:
        events.append(usage)
    return events, finish_reason


def decode_upstream_completion(body: object) -> tuple[list[TransportEvent], str]:
    """A whole upstream `chat.completion` → events and its finish reason."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise ValueError("upstream answer has no choices")
    choice = body["choices"][0]
    message = choice.get("message") or {}
    events: list[TransportEvent] = []
    if isinstance(message.get("content"), str) and message["content"]:
        events.append(ContentDelta(message["content"]))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        events.append(
            ToolCallDelta(
                index=index,
                id=call.get("id"),
                name=function.get("name"),
                arguments=function.get("arguments") or "",
            )
        )
    usage = _usage_from_wire(body.get("usage"))
    if usage is not None:
        events.append(usage)
    return events, str(choice.get("finish_reason") or "stop")


class UpstreamStreamError(Exception):
    """The upstream reported an error inside an otherwise well-formed stream."""


# Where the chat endpoint lives under the base URL, by host layout (seed 002's host_type).
CHAT_PATHS = {"openai": "/chat/completions", "openwebui": "/api/chat/completions"}


class OpenAIStreamDecoder(SSEStreamDecoder):
    def on_event(self, frame: SSEvent) -> list[TransportEvent]:
        if frame.data.strip() == "[DONE]":
            self.done = True
            self.finish_reason = self.finish_reason or "stop"
            return []
        try:
            events, finish = decode_upstream_chunk(load_json(frame.data))
        except UpstreamStreamError as error:
            raise upstream_error(str(error)) from None
        except ValueError as error:
            raise malformed(str(error)) from None
        self.finish_reason = finish or self.finish_reason
        return events


@attrs.frozen
class OpenAIDialect:
    host_type: str = "openai"
    name: str = "openai"
    # How this endpoint generates images: OpenAI's images API, or chat with image output (OpenRouter).
    image_api: str = "images"

    def __attrs_post_init__(self) -> None:
        if self.host_type not in CHAT_PATHS:
            raise ValueError(f"host_type must be one of {', '.join(CHAT_PATHS)}")

    def call(self, request: ChatRequest, model: str, api_key: str | None) -> HttpCall:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return HttpCall(CHAT_PATHS[self.host_type], headers, upstream_request_body(request, model))

    def stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def decode_body(self, body: bytes) -> tuple[list[TransportEvent], str]:
        try:
            return decode_upstream_completion(load_json(body))
        except ValueError as error:
            raise malformed(str(error)) from None

    def error_message(self, body: bytes) -> str:
        return error_message(body)

    def image_call(self, request: ImageRequest, model: str, api_key: str | None) -> WholeCall:
        return WholeCall(self._image_http_call(request, model, api_key), self.decode_images)

    def _image_http_call(self, request: ImageRequest, model: str, api_key: str | None) -> HttpCall:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        if self.image_api == "chat":
            body: dict[str, Any] = {
                "model": model,
                "modalities": ["image", "text"],
                "messages": [{"role": "user", "content": request.prompt}],
            }
            if request.n > 1:
                body["n"] = request.n
            return HttpCall(CHAT_PATHS[self.host_type], headers, body)
        body = {**request.passthrough, "model": model, "prompt": request.prompt, "n": request.n}
        for key in ("size", "quality", "response_format"):
            if getattr(request, key) is not None:
                body[key] = getattr(request, key)
        return HttpCall("/images/generations", headers, body)

    def embedding_call(self, request: EmbeddingRequest, model: str, api_key: str | None) -> WholeCall:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        inputs = [item if isinstance(item, str) else list(item) for item in request.inputs]
        body: dict[str, Any] = {
            **request.passthrough,
            "model": model,
            "input": inputs,
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        path = "/api/embeddings" if self.host_type == "openwebui" else "/embeddings"
        return WholeCall(HttpCall(path, headers, body), decode_embeddings)

    def decode_images(self, body: bytes) -> list[TransportEvent]:
        answer = load_json(body)
        if not isinstance(answer, dict):
            raise malformed("image answer is not an object")
        images: list[dict[str, Any]] = []
        if self.image_api == "chat":
            for choice in answer.get("choices") or ():
                for image in (choice.get("message") or {}).get("images") or ():
                    url = (image.get("image_url") or {}).get("url", "")
                    header, _, data = url.partition(",")
                    images.append({"b64_json": data} if header.startswith("data:") else {"url": url})
            usage = answer.get("usage") or {}
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        else:
            images = [
                {k: v for k, v in item.items() if k in ("b64_json", "url", "revised_prompt")}
                for item in answer.get("data") or ()
                if isinstance(item, dict)
            ]
            usage = answer.get("usage") or {}
            prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
        if not images:
            raise malformed("the answer holds no image")
        return [
            GeneratedImages(tuple(images)),
            Usage(int(prompt or 0), int(completion or 0), images=len(images)),
        ]


def decode_embeddings(body: bytes) -> list[TransportEvent]:
    answer = load_json(body)
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise malformed("embeddings answer has no data")
    rows = sorted((item for item in data if isinstance(item, dict)), key=lambda item: item.get("index", 0))
    usage = answer.get("usage") or {}
    return [
        Embedded(vectors_of([row.get("embedding") for row in rows], "embeddings answer")),
        Usage(int(usage.get("prompt_tokens") or 0), 0),
    ]
