"""The provider-neutral chat request: what a client asked for, validated, in relaybox's terms.

Every inbound dialect (OpenAI today, Anthropic Messages later) is translated into these
classes, and every provider encodes its upstream request from them. They carry no wire
names and no defaults of any particular API.
"""

from __future__ import annotations

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
class ChatMessage:
    role: str
    # None is legal for an assistant turn that only carries tool calls.
    content: str | tuple[ContentPart, ...] | None
    name: str | None = None
    # Tool calls and tool results are forwarded in OpenAI's own shape until the
    # providers translate them natively.
    tool_calls: tuple[dict[str, Any], ...] | None = None
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
    # Other OpenAI parameters (tools, response_format, top_p, seed, ...) that an
    # OpenAI-compatible upstream receives unchanged.
    passthrough: dict[str, Any] = attrs.field(factory=dict)

    def system_text(self) -> str:
        """All system and developer messages, in order, as one text."""
        return "\n\n".join(m.text() for m in self.messages if m.role in ("system", "developer") and m.text())

    def conversation(self) -> tuple[ChatMessage, ...]:
        """The messages that are not system instructions."""
        return tuple(m for m in self.messages if m.role not in ("system", "developer"))

    def has_images(self) -> bool:
        return any(m.has_images() for m in self.messages)
