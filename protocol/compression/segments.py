"""Message text as prose and fenced code blocks, so each stage knows what it may touch."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import attrs
from relaybox.protocol.chat import ChatMessage, TextPart

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)")


@attrs.frozen
class Segment:
    text: str
    code: bool = False
    language: str = ""  # of a code block, lower case; "" when the fence names none


# Texts up to this size have their split remembered: every stage splits each message again, and an
# agent sends the same history with every turn. The memory is bounded: `_SPLITS_KEPT` texts of at
# most this size, with their segments.
_REMEMBERED_CHARS = 32_000
_SPLITS_KEPT = 256


def split(text: str) -> tuple[Segment, ...]:
    """Prose and fenced code blocks, in order; the fences belong to their block, so
    `"".join(s.text for s in split(t)) == t` always holds. An unclosed fence runs to the end."""
    if "```" not in text and "~~~" not in text:  # no fence at all (most messages): one look
        return (Segment(text),) if text else ()
    if len(text) > _REMEMBERED_CHARS:
        return _split_fenced(text)
    return _remembered_split(text)


def _split_fenced(text: str) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    prose: list[str] = []
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            prose.append(lines[index])
            index += 1
            continue
        if prose:
            segments.append(Segment("".join(prose)))
            prose = []
        marker = opening.group(1)
        block = [lines[index]]
        index += 1
        while index < len(lines):
            block.append(lines[index])
            index += 1
            if (
                lines[index - 1].strip().startswith(marker)
                and lines[index - 1].strip().strip(marker[0]) == ""
            ):
                break
        segments.append(Segment("".join(block), code=True, language=opening.group(2).lower()))
    if prose:
        segments.append(Segment("".join(prose)))
    return tuple(segments)


_remembered_split = functools.lru_cache(maxsize=_SPLITS_KEPT)(_split_fenced)


def last_user_index(messages: tuple[ChatMessage, ...]) -> int:
    """The message no stage may change; -1 when there is no user message."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return -1


def with_text(message: ChatMessage, rewrite: Callable[[str], str]) -> ChatMessage:
    """The message with `rewrite` applied to each piece of its text (images and tool calls untouched)."""
    if message.content is None:
        return message
    if isinstance(message.content, str):
        text = rewrite(message.content)
        return message if text == message.content else attrs.evolve(message, content=text)
    parts = tuple(
        TextPart(rewrite(part.text)) if isinstance(part, TextPart) else part for part in message.content
    )
    return message if parts == message.content else attrs.evolve(message, content=parts)
