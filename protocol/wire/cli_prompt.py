"""A chat request as one prompt for a CLI, and tool calls read back out of a CLI's plain text.

The CLIs take one prompt and have no way to declare the client's tools, so tools are
described in the prompt with a strict calling convention, and the answer's text is watched
for that block: text before it streams as content, the block itself becomes a tool call.
"""

from __future__ import annotations

import json
import uuid

from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.events import ContentDelta, ToolCallDelta, TransportEvent

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def flatten(request: ChatRequest, *, inline_system: bool) -> str:
    """A single user turn is sent as it is; longer conversations keep every turn, marked with its
    role, so the model sees the history it is asked to continue."""
    parts: list[str] = []
    system_text = request.system_text()
    if system_text and inline_system:
        parts.append(f"<system_instructions>\n{system_text}\n</system_instructions>")
    if request.tools:
        parts.append(tool_instructions(request))
    turns = request.conversation()
    if len(turns) == 1 and turns[0].role == "user":
        parts.append(turns[0].text())
        return "\n\n".join(parts)
    history = [_render_turn(m) for m in turns[:-1]]
    if history:
        parts.append("<conversation_so_far>\n" + "\n".join(history) + "\n</conversation_so_far>")
    last = turns[-1] if turns else None
    if last is not None and last.role == "user":
        parts.append("Reply to the user's latest message:\n\n" + last.text())
    elif last is not None:
        parts.append(_render_turn(last))
        parts.append("Continue the conversation from here.")
    return "\n\n".join(parts)


def tool_instructions(request: ChatRequest) -> str:
    tools = [
        {"name": t.name, "description": t.description or "", "parameters": t.parameters}
        for t in request.tools
    ]
    forced = ""
    if request.tool_choice is not None and request.tool_choice.mode == "required":
        forced = "\nYou must call one of the tools now."
    elif request.tool_choice is not None and request.tool_choice.mode == "tool":
        forced = f"\nYou must call the tool {request.tool_choice.name} now."
    return (
        "<tools>\n" + json.dumps(tools, ensure_ascii=False) + "\n</tools>\n"
        "You may call these tools. To call one, write exactly one block of this form and then stop:\n"
        f'{OPEN}{{"name": "TOOL_NAME", "arguments": {{...}}}}{CLOSE}\n'
        "The arguments must be a JSON object matching the tool's parameters. Tool results come back in a "
        "later turn." + forced
    )


def _render_turn(message: ChatMessage) -> str:
    text = message.text()
    for call in message.tool_calls:
        text += f'\n{OPEN}{{"name": {json.dumps(call.name)}, "arguments": {call.arguments or "{}"}}}{CLOSE}'
    if message.role == "tool" and message.tool_call_id:
        text = f'<tool_result id="{message.tool_call_id}">{text}</tool_result>'
    return f'<turn role="{message.role}">\n{text.strip()}\n</turn>'


class ToolCallExtractor:
    """Splits a streamed answer into content and tool calls written as `<tool_call>{...}</tool_call>`.

    Text that might be the start of the opening tag is held back until it is clearly not one.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._in_call = False
        self.calls = 0

    def feed(self, text: str) -> list[TransportEvent]:
        self._pending += text
        events: list[TransportEvent] = []
        while True:
            if self._in_call:
                end = self._pending.find(CLOSE)
                if end < 0:
                    return events
                events.append(self._call(self._pending[:end]))
                self._pending = self._pending[end + len(CLOSE) :]
                self._in_call = False
                continue
            start = self._pending.find(OPEN)
            if start >= 0:
                if start:
                    events.append(ContentDelta(self._pending[:start]))
                self._pending = self._pending[start + len(OPEN) :]
                self._in_call = True
                continue
            keep = _partial_tag_length(self._pending)
            safe = self._pending[: len(self._pending) - keep]
            if safe:
                events.append(ContentDelta(safe))
            self._pending = self._pending[len(safe) :]
            return events

    def finish(self) -> list[TransportEvent]:
        """End of answer: an unterminated block is still a call if its JSON is complete."""
        pending, self._pending = self._pending, ""
        if self._in_call:
            self._in_call = False
            return [self._call(pending)]
        return [ContentDelta(pending)] if pending else []

    def _call(self, body: str) -> TransportEvent:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
            # Not a well-formed call: give the text back rather than invent a call.
            return ContentDelta(f"{OPEN}{body}{CLOSE}")
        arguments = parsed.get("arguments", {})
        event = ToolCallDelta(
            self.calls,
            f"call_{uuid.uuid4().hex[:24]}",
            parsed["name"],
            arguments if isinstance(arguments, str) else json.dumps(arguments),
        )
        self.calls += 1
        return event


def _partial_tag_length(text: str) -> int:
    """How many trailing characters of `text` could begin the opening tag."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0
