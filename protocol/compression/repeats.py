"""Stage 2: structural deduplication.

Agents paste the same file or tool output again and again. A message, or a fenced code block,
of at least `MIN_CHARS` that appears again later is replaced, where it appeared earlier, by a
note pointing at its last appearance, which stays in full. Pointing forward rather than back
keeps the note true when the oldest turns are trimmed later (the last copy is the one kept), and
the last user message is never the one replaced.
"""

from __future__ import annotations

from relaybox.protocol.chat import ChatMessage
from relaybox.protocol.compression.code_blocks import optimise_block
from relaybox.protocol.compression.segments import Segment, last_user_index, split, with_text

MIN_CHARS = 400


def block_key(segment: Segment) -> str:
    """What makes two code blocks the same: their text in the code stage's normal form (trailing
    spaces and blank-line runs do not count where the language ignores them), without the final
    newline a block at the end of a message lacks."""
    return optimise_block(segment, aggressive=False).strip()


def note(where: int, what: str) -> str:
    return f"[relaybox: {what} identical to the one in message {where + 1} below; shown there in full]"


def deduplicate(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    keep = last_user_index(messages)
    # Where each unit last appears: whole message texts, then code blocks.
    last_message: dict[str, int] = {}
    last_block: dict[str, int] = {}
    for index, message in enumerate(messages):
        text = message.text()
        if len(text) >= MIN_CHARS and isinstance(message.content, str):
            last_message[text] = index
        for segment in split(text):
            if segment.code and len(segment.text) >= MIN_CHARS:
                last_block[block_key(segment)] = index
    out = []
    for index, message in enumerate(messages):
        if index == keep:
            out.append(message)
            continue
        text = message.text()
        later = last_message.get(text) if isinstance(message.content, str) else None
        if later is not None and later > index:
            out.append(with_text(message, lambda _, later=later: note(later, "this content is")))
            continue

        def replace_blocks(piece: str, index: int = index) -> str:
            parts = []
            for segment in split(piece):
                later_block = last_block.get(block_key(segment)) if segment.code else None
                if later_block is not None and later_block > index:
                    parts.append(
                        note(later_block, "this code block is")
                        + ("\n" if segment.text.endswith("\n") else "")
                    )
                else:
                    parts.append(segment.text)
            return "".join(parts)

        out.append(with_text(message, replace_blocks))
    return tuple(out)
