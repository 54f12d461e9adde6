"""The provider-neutral chat request: what a client asked for, validated, in relaybox's terms.

Every inbound dialect (OpenAI today, Anthropic Messages later) is translated into these
classes, and every provider encodes its upstream request from them. They carry no wire
names and no defaults of any particular API.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

ROLES = ("system", "developer", "user", "assistant", "tool")


@attrs.frozen
class TextPart:
    text: str


@attrs.frozen
class ImagePart:
    """An image given by URL; base64 images arrive as `data:` URLs."""

    url: str
    detail: str | None = None


ContentPart = TextPart | ImagePart


@attrs.frozen
class ToolSpec:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})


@attrs.frozen
class ToolChoice:
    mode: str  # "auto" | "none" | "required" | "tool"
    name: str | None = None  # the tool, when mode is "tool"


@attrs.frozen
class ToolCall:
    """A call the assistant made; `arguments` is the JSON text of the arguments."""

    id: str
    name: str
    arguments: str


@attrs.frozen
class ChatMessage:
    role: str
    # None is legal for an assistant turn that only carries tool calls.
    content: str | tuple[ContentPart, ...] | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    # On a "tool" message: which call this is the result of.
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text, parts joined; images contribute nothing."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def has_images(self) -> bool:
        return isinstance(self.content, tuple) and any(isinstance(part, ImagePart) for part in self.content)


@attrs.frozen
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    # "json_object" or "json_schema" (with `json_schema`), or None for free text.
    response_format: str | None = None
    json_schema: dict[str, Any] | None = None
    # Other OpenAI parameters (top_p, seed, ...) that an OpenAI-compatible upstream
    # receives unchanged and other providers ignore.
    passthrough: dict[str, Any] = attrs.field(factory=dict)

    def system_text(self) -> str:
        """All system and developer messages, in order, as one text."""
        return "\n\n".join(m.text() for m in self.messages if m.role in ("system", "developer") and m.text())

    def conversation(self) -> tuple[ChatMessage, ...]:
        """The messages that are not system instructions."""
        return tuple(m for m in self.messages if m.role not in ("system", "developer"))

    def has_images(self) -> bool:
        return any(m.has_images() for m in self.messages)


@attrs.frozen
class ImageRequest:
    """An image generation request (OpenAI's images API), routed like a chat request."""

    model: str
    prompt: str
    n: int = 1
    size: str | None = None
    quality: str | None = None
    # "b64_json" or "url": what the client wants back.
    response_format: str | None = None
    passthrough: dict[str, Any] = attrs.field(factory=dict)
    # The routing and forwarding code reads these of any request.
    stream: bool = False
    tools: tuple[ToolSpec, ...] = ()

    def has_images(self) -> bool:
        return False


@attrs.frozen
class EmbeddingRequest:
    """An embeddings request (OpenAI's embeddings API), routed to the providers that embed."""

    model: str
    # Each input: a text, or token ids (which only OpenAI-compatible upstreams take).
    inputs: tuple[str | tuple[int, ...], ...]
    # "float" or "base64": how the client wants the vectors back (upstreams are always asked for floats).
    encoding_format: str = "float"
    dimensions: int | None = None
    passthrough: dict[str, Any] = attrs.field(factory=dict)
    stream: bool = False
    tools: tuple[ToolSpec, ...] = ()

    def has_images(self) -> bool:
        return False

    def texts(self) -> tuple[str, ...] | None:
        """The inputs as texts; None when any is given as token ids."""
        if all(isinstance(item, str) for item in self.inputs):
            return tuple(str(item) for item in self.inputs)
        return None


# Every request a provider answers.
ModelRequest = ChatRequest | ImageRequest | EmbeddingRequest


@attrs.frozen
class InlineImage:
    media_type: str
    data: str  # base64


def inline_image(part: ImagePart) -> InlineImage | None:
    """The base64 payload of a `data:` URL image; None for an image given by a remote URL."""
    if not part.url.startswith("data:"):
        return None
    header, _, data = part.url.partition(",")
    media_type = header.removeprefix("data:").split(";")[0] or "image/png"
    if ";base64" not in header or not data:
        return None
    return InlineImage(media_type, data)


def arguments_object(text: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object APIs other than OpenAI's want. Arguments that are
    not a JSON object are kept, wrapped, rather than dropped."""
    try:
        parsed = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"_raw_arguments": text}
    return parsed if isinstance(parsed, dict) else {"value": parsed}
