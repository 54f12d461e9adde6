"""The compression levels, and the stages each runs, in seed 001's order.

Trimming (stage 5) needs the model's context window, so it runs later, once a candidate is
chosen (`actors/router.py`); the other stages run before dispatch, on the request as the client
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
    chosen: list[tuple[str, Stage]] = [
        ("whitespace", lambda m: normalise(m, aggressive)),
        ("repeats", deduplicate),
    ]
    if aggressive:
        chosen.append(("symbols", abbreviate))
    chosen.append(("code blocks", lambda m: optimise(m, aggressive)))
    # Once more: a note that replaced a repeat can leave a run of blank lines around it.
    chosen.append(("whitespace", lambda m: normalise(m, aggressive)))
    return chosen


@attrs.frozen
class Compressed:
    request: ChatRequest
    # Prompt tokens before and after (o200k), None when nothing changed (nothing was counted).
    tokens_before: int | None = None
    tokens_after: int | None = None
    # Tokens each stage saved, when asked for (`measure_stages`).
    by_stage: tuple[tuple[str, int], ...] = ()

    @property
    def saved(self) -> int:
        if self.tokens_before is None or self.tokens_after is None:
            return 0
        return self.tokens_before - self.tokens_after


def compress(request: ChatRequest, level: str, *, measure_stages: bool = False) -> Compressed:
    messages = request.messages
    by_stage: dict[str, int] = {}
    for name, stage in stages(level):
        before = messages
        messages = stage(messages)
        if measure_stages:
            by_stage[name] = by_stage.get(name, 0) + _count(before) - _count(messages)
    if messages == request.messages:
        return Compressed(request, by_stage=tuple(by_stage.items()))
    return Compressed(
        attrs.evolve(request, messages=messages),
        tokens.count_request(request),
        tokens.count_request(attrs.evolve(request, messages=messages)),
        tuple(by_stage.items()),
    )


def _count(messages: tuple[ChatMessage, ...]) -> int:
    return sum(tokens.count_message(m) for m in messages)
