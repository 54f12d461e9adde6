"""Stage 1: whitespace normalisation.

Safe: in prose (not code blocks, not tool output), line endings become `\\n`, trailing spaces go and
runs of blank lines become one. Aggressive: tool output gets the same, and runs of spaces inside a
prose line become one (column-aligned text loses its alignment, hence not safe).
"""

from __future__ import annotations

import re

from relaybox.protocol.chat import ChatMessage
from relaybox.protocol.compression.segments import last_user_index, split, with_text

TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
BLANK_RUNS = re.compile(r"\n{3,}")
INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")


def tidy(text: str, *, inner: bool = False) -> str:
    # Each pattern runs only where a plain substring search says it can match: most text sent
    # again and again by an agent is tidy already, and these expressions cost more than the search.
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    text = without_trailing_spaces(text)
    if "\n\n\n" in text:
        text = BLANK_RUNS.sub("\n\n", text)
    if inner and ("  " in text or "\t" in text):
        text = INNER_SPACES.sub(" ", text)
    return text


def without_trailing_spaces(text: str) -> str:
    """The text without spaces or tabs at the end of its lines."""
    if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
        return TRAILING.sub("", text)
    return text


def tidy_prose(text: str, *, inner: bool = False) -> str:
    return "".join(s.text if s.code else tidy(s.text, inner=inner) for s in split(text))


def normalise(messages: tuple[ChatMessage, ...], aggressive: bool = False) -> tuple[ChatMessage, ...]:
    keep = last_user_index(messages)
    out = []
    for index, message in enumerate(messages):
        if index == keep:
            out.append(message)
        elif message.role == "tool":
            out.append(with_text(message, tidy) if aggressive else message)
        else:
            out.append(with_text(message, lambda text: tidy_prose(text, inner=aggressive)))
    return tuple(out)
