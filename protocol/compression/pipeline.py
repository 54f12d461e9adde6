"""The compression levels, and the stages each runs (code blocks before repeats).

`safe` (the default) only rewrites what cannot change what the model reads (whitespace outside code
and tool output, code blocks in languages where whitespace carries no meaning, and content pasted
again, which stays in full where it last appears); `aggressive` also collapses spacing in tool
output, abbreviates long repeated phrases with a legend, minifies JSON and drops comment lines in
code, and trims the oldest turns to fit the chosen model's context window. Every stage leaves the
last user message exactly as it was and keeps tool calls paired with their results.

Trimming (stage 5) needs the model's context window, so it runs later, once a candidate is
chosen (`protocol/routing/fit.py`, asked by the router); the other stages run before dispatch, on the request as the client
sent it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from relaybox.protocol import tokens
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.compression.code_blocks import optimise
from relaybox.protocol.compression.repeats import deduplicate
from relaybox.protocol.compression.symbols import abbreviate
from relaybox.protocol.compression.whitespace import normalise

LEVELS = ("off", "safe", "aggressive")
Stage = Callable[[tuple[ChatMessage, ...]], tuple[ChatMessage, ...]]


def stages(level: str) -> list[tuple[str, Stage]]:
    if level == "off":
        return []
    aggressive = level == "aggressive"
    # Code blocks are brought to their normal form before repeats are looked for: two pastes of a
    # file that differ only in trailing spaces are the same file (and a second run finds nothing
    # more to do). The last whitespace pass tidies around the notes that replaced repeats.
    chosen: list[tuple[str, Stage]] = [
        ("whitespace", lambda m: normalise(m, aggressive)),
        ("code blocks", lambda m: optimise(m, aggressive)),
        ("repeats", deduplicate),
    ]
    if aggressive:
        chosen.append(("symbols", abbreviate))
    chosen.append(("whitespace", lambda m: normalise(m, aggressive)))
    return chosen


@attrs.frozen
class Compressed:
    request: ChatRequest
    # Prompt tokens the stages saved (o200k; counted over the messages they changed only).
    saved: int = 0
    # Tokens each stage saved, when asked for (`measure_stages`).
    by_stage: tuple[tuple[str, int], ...] = ()


def compress(request: ChatRequest, level: str, *, measure_stages: bool = False) -> Compressed:
    messages = request.messages
    by_stage: dict[str, int] = {}
    for name, stage in stages(level):
        before = messages
        messages = stage(messages)
        if measure_stages:
            by_stage[name] = by_stage.get(name, 0) + tokens_saved(before, messages)
    if messages == request.messages:
        return Compressed(request, by_stage=tuple(by_stage.items()))
    return Compressed(
        attrs.evolve(request, messages=messages),
        tokens_saved(request.messages, messages),
        tuple(by_stage.items()),
    )


def tokens_saved(before: tuple[ChatMessage, ...], after: tuple[ChatMessage, ...]) -> int:
    """Tokens the messages lost, counting only those that differ: a stage hands back the very
    objects it left alone, so counting the whole prompt (most of the time) is not needed."""
    kept = {id(m) for m in after}
    original = {id(m) for m in before}
    removed = sum(tokens.count_message(m) for m in before if id(m) not in kept)
    added = sum(tokens.count_message(m) for m in after if id(m) not in original)
    return removed - added
