"""A heuristic score (0-100) for an answer: the second of seed 001's three success layers.

Cheap signals only, no model call: an empty answer, a refusal, an answer cut off by the length
limit, error text instead of an answer, or a code task answered without any code.
"""

from __future__ import annotations

import re

CODE_CATEGORIES = frozenset({"code_gen", "debug", "refactor", "code_review"})

_REFUSAL = re.compile(
    r"^\s*(i'?m sorry,? but|i can(?:'|no)t (?:help|assist|do that)|i am unable to|as an ai(?: language model)?,? i)",
    re.IGNORECASE,
)
_ERROR_TEXT = re.compile(
    r"^\s*(?:(?:error|exception|internal server error)\b|traceback \(most recent call last\))", re.IGNORECASE
)


def score_answer(text: str, *, finish_reason: str, tool_calls: int = 0, category: str = "other") -> int:
    if tool_calls:
        return 100
    stripped = text.strip()
    if not stripped:
        return 0
    if _REFUSAL.search(stripped):
        return 20
    if _ERROR_TEXT.search(stripped) and len(stripped) < 400:
        return 30
    if finish_reason == "length":
        return 50
    if category in CODE_CATEGORIES and "```" not in text and not re.search(r"^( {4}|\t)\S", text, re.M):
        return 60
    return 100
