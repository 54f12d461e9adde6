"""Google's Gemini API (generateContent / streamGenerateContent?alt=sse), upstream direction.

Roles map `assistant` → `model`; the system prompt goes to `systemInstruction`; images to
`inlineData`; tools to `functionDeclarations`, whose parameter schemas are converted from JSON
Schema to Gemini's OpenAPI-subset schema (and back, for anything that reads Gemini schemas).
Gemini sends each function call whole and without an id, so relaybox gives it one.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from relaybox.protocol.chat import (
    ChatMessage,
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
from relaybox.protocol.tokens import count_text
from relaybox.protocol.wire.dialect import (
    HttpCall,
    SSEStreamDecoder,
    WholeCall,
    error_message,
    load_json,
    malformed,
    vectors_of,
)
from relaybox.protocol.wire.sse import SSEvent

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}

# JSON Schema keywords Gemini's schema understands (types become upper case).
_KEPT = {
    "description",
    "enum",
    "format",
    "required",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "title",
    "nullable",
    "propertyOrdering",
    "default",
}


# --- schemas ----------------------------------------------------------------------------


def to_gemini_schema(schema: dict[str, Any], definitions: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON Schema → Gemini Schema: local `$ref`s inlined, `["x", "null"]` types made nullable,
    `const` made a one-value enum, keywords Gemini rejects (additionalProperties, $schema...) dropped."""
    definitions = {**(definitions or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        if name not in definitions:
            raise ValueError(f"unresolvable $ref {schema['$ref']}")
        return to_gemini_schema(definitions[name], definitions)
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _KEPT}
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        if len(non_null) < len(kind):
            out["nullable"] = True
        kind = non_null[0] if non_null else "string"
    if "const" in schema:
        out["enum"] = [schema["const"]]
        kind = kind or "string"
    if kind:
        out["type"] = str(kind).upper()
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: to_gemini_schema(v, definitions) for k, v in schema["properties"].items()}
        out.setdefault("type", "OBJECT")
    if isinstance(schema.get("items"), dict):
        out["items"] = to_gemini_schema(schema["items"], definitions)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            variants = [v for v in schema[key] if v.get("type") != "null"]
            if len(variants) < len(schema[key]):
                out["nullable"] = True
            if len(variants) == 1:
                out.update(to_gemini_schema(variants[0], definitions))
            else:
                out["anyOf"] = [to_gemini_schema(v, definitions) for v in variants]
    return out


# What `to_gemini_schema` reads besides the kept keywords (each turned into Gemini's form).
_CONVERTED = {"type", "properties", "items", "anyOf", "oneOf", "const", "$ref", "$defs", "definitions"}


def gemini_drops(schema: dict[str, Any], path: str = "") -> list[str]:
    """What `to_gemini_schema` leaves out of a JSON Schema, as `path: keyword` (e.g.
    `properties.options: additionalProperties`), and what it reads differently (`oneOf`, taken as
    `anyOf`): said once per tool, so a tool that loses a constraint on Gemini is known."""
    here = path or "(top)"
    drops = [f"{here}: {key}" for key in schema if key not in _KEPT and key not in _CONVERTED]
    if "oneOf" in schema:
        drops.append(f"{here}: oneOf (read as anyOf)")
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            if isinstance(sub, dict):
                drops += gemini_drops(sub, f"{path}{key}.{name}.")
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            drops += gemini_drops(sub, f"{path}properties.{name}.")
    if isinstance(schema.get("items"), dict):
        drops += gemini_drops(schema["items"], f"{path}items.")
    for key in ("anyOf", "oneOf"):
        for i, sub in enumerate(schema.get(key) or ()):
            if isinstance(sub, dict):
                drops += gemini_drops(sub, f"{path}{key}[{i}].")
    return [drop.replace(". :", ":").replace(".:", ":") for drop in drops]


def from_gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Gemini Schema → JSON Schema (lower-case types, nullable as a type union)."""
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _KEPT - {"nullable", "propertyOrdering"}}
    if "type" in schema:
        kind = str(schema["type"]).lower()
        out["type"] = [kind, "null"] if schema.get("nullable") else kind
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: from_gemini_schema(v) for k, v in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        out["items"] = from_gemini_schema(schema["items"])
    if isinstance(schema.get("anyOf"), list):
        out["anyOf"] = [from_gemini_schema(v) for v in schema["anyOf"]]
    return out


# --- requests ---------------------------------------------------------------------------


def _parts(message: ChatMessage) -> list[dict[str, Any]]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        else:
            parts.append(_image(part))
    return parts


def _image(part: ImagePart) -> dict[str, Any]:
    inline = inline_image(part)
    if inline is None:
        raise ProviderFailure(
            FailureKind.UNSUPPORTED, "Gemini takes images inline only: send them as base64 data: URLs"
        )
    return {"inlineData": {"mimeType": inline.media_type, "data": inline.data}}


def generate_body(request: ChatRequest) -> dict[str, Any]:
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in request.conversation():
        if message.role == "assistant":
            calls = [
                {"functionCall": {"name": c.name, "args": arguments_object(c.arguments)}}
                for c in message.tool_calls
            ]
            call_names.update({c.id: c.name for c in message.tool_calls})
            add("model", _parts(message) + calls)
        elif message.role == "tool":
            name = call_names.get(message.tool_call_id or "", message.name or "tool")
            text = message.text()
            try:
                result = json.loads(text)
            except ValueError:
                result = None
            response = result if isinstance(result, dict) else {"result": text}
            add("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            add("user", _parts(message))
    body: dict[str, Any] = {"contents": contents}
    if request.system_text():
        body["systemInstruction"] = {"parts": [{"text": request.system_text()}]}
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.response_format in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        if request.response_format == "json_schema" and request.json_schema:
            config["responseSchema"] = to_gemini_schema(
                request.json_schema.get("schema", request.json_schema)
            )
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        "parameters": to_gemini_schema(t.parameters),
                        **({"description": t.description} if t.description else {}),
                    }
                    for t in request.tools
                ]
            }
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE", "tool": "ANY"}[choice.mode]
        calling: dict[str, Any] = {"mode": mode}
        if choice.mode == "tool" and choice.name:
            calling["allowedFunctionNames"] = [choice.name]
        body["toolConfig"] = {"functionCallingConfig": calling}
    return body


# --- answers ----------------------------------------------------------------------------


class _Candidates:
    """Shared by the stream and the whole-body decoders: one response chunk → events."""

    def __init__(self) -> None:
        self.tool_calls = 0
        self.finish_reason: str | None = None

    def decode(self, chunk: object) -> list[TransportEvent]:
        if not isinstance(chunk, dict):
            raise malformed("response is not an object")
        if "error" in chunk:
            raise ProviderFailure(
                FailureKind.SERVER_ERROR, f"upstream error: {error_message(json.dumps(chunk).encode())}"
            )
        events: list[TransportEvent] = []
        candidates = chunk.get("candidates") or []
        if candidates:
            candidate = candidates[0]
            for part in (candidate.get("content") or {}).get("parts") or ():
                if part.get("thought"):
                    continue
                if isinstance(part.get("text"), str) and part["text"]:
                    events.append(ContentDelta(part["text"]))
                elif isinstance(part.get("functionCall"), dict):
                    call = part["functionCall"]
                    call_id = call.get("id") or f"call_{self.tool_calls}"
                    events.append(
                        ToolCallDelta(
                            self.tool_calls, call_id, call.get("name"), json.dumps(call.get("args") or {})
                        )
                    )
                    self.tool_calls += 1
            reason = candidate.get("finishReason")
            if reason:
                self.finish_reason = "tool_calls" if self.tool_calls else FINISH_REASONS.get(reason, "stop")
        blocked = (chunk.get("promptFeedback") or {}).get("blockReason")
        if blocked and not candidates:
            raise ProviderFailure(FailureKind.REJECTED, f"Gemini blocked the prompt: {blocked}")
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict) and self.finish_reason is not None:
            completion = int(usage.get("candidatesTokenCount") or 0) + int(
                usage.get("thoughtsTokenCount") or 0
            )
            events.append(
                Usage(
                    prompt_tokens=int(usage.get("promptTokenCount") or 0),
                    completion_tokens=completion,
                    cache_read_tokens=int(usage.get("cachedContentTokenCount") or 0),
                )
            )
        return events


class GeminiStreamDecoder(SSEStreamDecoder):
    def __init__(self) -> None:
        super().__init__()
        self._candidates = _Candidates()

    def on_event(self, frame: SSEvent) -> list[TransportEvent]:
        events = self._candidates.decode(load_json(frame.data))
        self.finish_reason = self._candidates.finish_reason
        return events


@attrs.frozen
class GeminiDialect:
    name: str = "gemini"

    def call(self, request: ChatRequest, model: str, api_key: str | None) -> HttpCall:
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        headers = {"x-goog-api-key": api_key} if api_key else {}
        return HttpCall(f"/v1beta/models/{model}:{method}", headers, generate_body(request))

    def stream_decoder(self) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()

    def decode_body(self, body: bytes) -> tuple[list[TransportEvent], str]:
        candidates = _Candidates()
        events = candidates.decode(load_json(body))
        return events, candidates.finish_reason or "stop"

    def error_message(self, body: bytes) -> str:
        return error_message(body)

    def embedding_call(self, request: EmbeddingRequest, model: str, api_key: str | None) -> WholeCall | None:
        """`batchEmbedContents`, one request per input; Gemini reports no token counts, so the
        inputs are counted here (o200k: an estimate)."""
        texts = request.texts()
        if texts is None:
            return None
        headers = {"x-goog-api-key": api_key} if api_key else {}
        one: dict[str, Any] = {"model": f"models/{model}"}
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        body = {"requests": [{**one, "content": {"parts": [{"text": text}]}} for text in texts]}
        counted = sum(count_text(text) for text in texts)

        def decode(answer: bytes) -> list[TransportEvent]:
            parsed = load_json(answer)
            rows = parsed.get("embeddings") if isinstance(parsed, dict) else None
            values = [row.get("values") if isinstance(row, dict) else None for row in rows or ()]
            return [Embedded(vectors_of(values, "Gemini embeddings")), Usage(counted, 0)]

        return WholeCall(HttpCall(f"/v1beta/models/{model}:batchEmbedContents", headers, body), decode)

    def image_call(self, request: ImageRequest, model: str, api_key: str | None) -> None:
        return None  # Gemini's API (here) generates no images
