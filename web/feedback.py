"""In-chat feedback: `/feedback 4` (or `/feedback 4 TASK_ID`) rates an answer without calling any
model; relaybox answers it itself, in the same shape as a model's answer."""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.protocol.chat import INSTRUCTION_ROLES, ChatRequest
from relaybox.protocol.events import Answering, ContentDelta, Event, Finished, Usage
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import group_id
from relaybox.web.answer import Begun

_COMMAND = re.compile(r"^\s*/feedback\s+([1-5])(?:\s+(\S+))?\s*$", re.IGNORECASE)


@attrs.frozen
class FeedbackCommand:
    rating: int
    task_id: str | None


def feedback_command(chat: ChatRequest) -> FeedbackCommand | None:
    turns = [m for m in chat.messages if m.role not in INSTRUCTION_ROLES]
    if not turns or turns[-1].role != "user":
        return None
    match = _COMMAND.match(turns[-1].text())
    return None if match is None else FeedbackCommand(int(match[1]), match[2])


async def rate(
    storage: Storage,
    command: FeedbackCommand,
    client: str | None = None,
    rated: Callable[[str, int], None] | None = None,
) -> Begun:
    """Rate the named answer (or the latest one), and reply as if a model had. With `client` (a
    request made with a key), only that client's answers: "the latest" is the latest it got.
    `rated` hears of a rating that was saved (the learned router learns from it)."""
    try:
        group = group_id(command.task_id) if command.task_id else None
        if group is None:
            latest = await storage.recent(limit=1, client=client)
            group = latest[0].request_group_id if latest else None
        saved = group is not None and await storage.set_rating(group, command.rating, client)
        if saved and group is not None and rated is not None:
            rated(group, command.rating)
        text = (
            f"Thanks: rated {command.rating}/5."
            if saved
            else "There is no answer to rate yet (or that task id is unknown)."
        )
    except StorageError:
        text = "Feedback could not be saved right now: storage is unavailable."
    send, receive = trio.open_memory_channel[Event](4)
    for event in (ContentDelta(text), Usage(0, 0, cost_usd=0.0), Finished("stop", 0.0)):
        send.send_nowait(event)
    answering = Answering("relaybox", "feedback", "in-chat /feedback command", 0, False, 0.0)
    return Begun(answering, receive, CancelToken())
