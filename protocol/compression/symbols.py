"""Stage 3 (aggressive): a symbol table for long repeated phrases.

Long tokens that recur across the conversation (file paths, URLs, identifiers with their
module) are written once in a legend, a system message placed after the client's own system
messages, and as `§N` elsewhere. Code blocks and the last user message keep them in full.
"""

from __future__ import annotations

import collections
import re

from relaybox.protocol.chat import ChatMessage
from relaybox.protocol.compression.segments import last_user_index, split, with_text

PHRASE = re.compile(r"[\w./:@-]{24,}")
MIN_REPEATS = 4
MAX_SYMBOLS = 50


def abbreviate(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    keep = last_user_index(messages)
    counts: collections.Counter[str] = collections.Counter()
    for index, message in enumerate(messages):
        if index != keep and message.role != "system" and "§" not in message.text():
            for segment in split(message.text()):
                if not segment.code:
                    counts.update(PHRASE.findall(segment.text))
    # Worth it only when the saving beats the legend line.
    chosen = [p for p, n in counts.most_common() if n >= MIN_REPEATS and (len(p) - 3) * n > len(p) + 8]
    chosen = sorted(chosen[:MAX_SYMBOLS], key=len, reverse=True)
    if not chosen:
        return messages
    symbols = {phrase: f"§{number}" for number, phrase in enumerate(chosen, 1)}
    pattern = re.compile("|".join(re.escape(p) for p in chosen))

    def replace(text: str) -> str:
        if "§" in text:
            return text
        return "".join(
            s.text if s.code else pattern.sub(lambda m: symbols[m.group(0)], s.text) for s in split(text)
        )

    out = [m if i == keep or m.role == "system" else with_text(m, replace) for i, m in enumerate(messages)]
    legend = "Abbreviations relaybox used in the earlier messages of this conversation:\n"
    legend += "\n".join(f"{symbol} = {phrase}" for phrase, symbol in symbols.items())
    leading = next((i for i, m in enumerate(out) if m.role not in ("system", "developer")), len(out))
    return (*out[:leading], ChatMessage("system", legend), *out[leading:])
