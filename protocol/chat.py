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
INSTRUCTION_ROLES = ("system", "developer")


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
    # The client asked the provider to cache the prompt up to the end of this message (Anthropic's
    # `cache_control`); a provider that caches only where told (Anthropic) is told here.
    cache_breakpoint: bool = False

    def text(self) -> str:
        """The message's text, parts joined; images contribute nothing."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def has_images(self) -> bool:
        return isinstance(self.content, tuple) and any(isinstance(part, ImagePart) for part in self.content)


def _with_parts(
    message: ChatMessage, *, before: tuple[TextPart, ...] = (), after: tuple[TextPart, ...] = ()
) -> ChatMessage:
    if message.content is None:
        parts: tuple[ContentPart, ...] = ()
    elif isinstance(message.content, str):
        parts = (TextPart(message.content),) if message.content else ()
    else:
        parts = message.content
    return attrs.evolve(message, content=(*before, *parts, *after))


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

    def _leading_instructions(self) -> int:
        return next(
            (i for i, m in enumerate(self.messages) if m.role not in INSTRUCTION_ROLES), len(self.messages)
        )

    def system_text(self) -> str:
        """The system and developer messages that open the conversation, in order, as one text: what
        a dialect with one system prompt puts there."""
        lead = self.messages[: self._leading_instructions()]
        return "\n\n".join(m.text() for m in lead if m.text())

    def system_cache_breakpoint(self) -> bool:
        return any(m.cache_breakpoint for m in self.messages[: self._leading_instructions()])

    def conversation(self) -> tuple[ChatMessage, ...]:
        """The turns after the opening instructions, for a dialect whose turns are only the user's
        and the assistant's. An instruction given later in the conversation (Claude Code sends one
        with its list of agents) stays where it was said, as a note in the user's turn beside it:
        moved into the system prompt, it would change that prompt, and so miss the provider's
        prompt cache, every time a new one arrives."""
        turns: list[ChatMessage] = []
        notes: list[TextPart] = []  # said since the last user turn, waiting for the next one
        for message in self.messages[self._leading_instructions() :]:
            if message.role in INSTRUCTION_ROLES:
                note = TextPart(f"\n<system-reminder>\n{message.text()}\n</system-reminder>\n")
                if turns and turns[-1].role == "user" and not notes:
                    turns[-1] = _with_parts(turns[-1], after=(note,))
                else:
                    notes.append(note)
            elif notes and message.role == "user":
                turns.append(_with_parts(message, before=tuple(notes)))
                notes = []
            else:
                if notes and message.role == "assistant":  # tool results keep their place first
                    turns.append(ChatMessage("user", tuple(notes)))
                    notes = []
                turns.append(message)
        if notes:
            turns.append(ChatMessage("user", tuple(notes)))
        return tuple(turns)

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
