"""Stage 5 (aggressive): trim the oldest turns so the conversation fits a model's context window.

System messages and the latest turns stay; turns go from the oldest on, and an assistant turn
that called tools goes together with the results of those calls (a result without its call, or
a call without its result, is refused by most APIs). The last user message and everything after
it always stay. A note says how many messages were left out.
"""

from __future__ import annotations

from collections.abc import Callable

from relaybox.protocol.chat import ChatMessage
from relaybox.protocol.compression.segments import last_user_index

NOTE_TOKENS = 40  # the note saying what was left out, generously


def turns(messages: tuple[ChatMessage, ...]) -> list[list[int]]:
    """The non-system messages as units that are dropped together: a message, or an assistant
    tool call with the results that answer it."""
    units: list[list[int]] = []
    owner: dict[str, list[int]] = {}
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        if message.role == "tool" and message.tool_call_id in owner:
            owner[message.tool_call_id].append(index)
            continue
        unit = [index]
        units.append(unit)
        for call in message.tool_calls:
            owner[call.id] = unit
    return units


def trim(
    messages: tuple[ChatMessage, ...], budget: int, count: Callable[[ChatMessage], int]
) -> tuple[ChatMessage, ...]:
    """The messages, without their oldest turns, within `budget` tokens (`count` measures one
    message); unchanged if they already fit, or if even the protected part does not."""
    sizes = [count(m) for m in messages]
    total = sum(sizes)
    if total <= budget:
        return messages
    protected_from = last_user_index(messages)
    units = [u for u in turns(messages) if protected_from < 0 or max(u) < protected_from]
    dropped: set[int] = set()
    for unit in units:
        dropped.update(unit)
        total -= sum(sizes[i] for i in unit)
        if total + NOTE_TOKENS <= budget:
            return _without(messages, dropped)
    return messages


def _without(messages: tuple[ChatMessage, ...], dropped: set[int]) -> tuple[ChatMessage, ...]:
    kept = [m for i, m in enumerate(messages) if i not in dropped]
    leading = next((i for i, m in enumerate(kept) if m.role not in ("system", "developer")), len(kept))
    note = ChatMessage(
        "system",
        f"[relaybox: the {len(dropped)} oldest messages of this conversation were left out to fit the model's context window]",
    )
    return (*kept[:leading], note, *kept[leading:])
