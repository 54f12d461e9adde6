"""The answer heuristic (seed 001's second success layer): a pure function, scored 0-100."""

from __future__ import annotations

import pytest
from relaybox.protocol.heuristics import score_answer


@pytest.mark.parametrize(
    ("text", "finish", "tools", "category", "score"),
    [
        ("", "stop", 0, "other", 0),
        ("   \n", "stop", 0, "other", 0),
        ("", "tool_calls", 1, "other", 100),
        ("I'm sorry, but I can't help with that.", "stop", 0, "other", 20),
        ("As an AI language model, I cannot browse.", "stop", 0, "other", 20),
        ("Error: upstream exploded", "stop", 0, "other", 30),
        ("Traceback (most recent call last):\n  File x", "stop", 0, "other", 30),
        ("The answer is long but was cut", "length", 0, "other", 50),
        ("Use a loop over the list and sum it.", "stop", 0, "code_gen", 60),
        ("```python\nprint(sum(xs))\n```", "stop", 0, "code_gen", 100),
        ("    return sum(xs)", "stop", 0, "debug", 100),
        ("Paris is the capital of France.", "stop", 0, "simple_qa", 100),
        ("Error handling in Go uses values, not exceptions; " * 20, "stop", 0, "explain", 100),
    ],
)
def test_scores(text: str, finish: str, tools: int, category: str, score: int) -> None:
    assert score_answer(text, finish_reason=finish, tool_calls=tools, category=category) == score
