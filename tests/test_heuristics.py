"""The answer heuristic (seed 001's second success layer): a pure function, scored 0-100."""

from __future__ import annotations

import pytest
from relaybox.protocol.routing.heuristics import score_answer


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


GOOD_WORKING = (
    "She has 16 - 3 = <<16-3=13>>13 eggs left.\nShe sells them for 13 * 2 = $<<13*2=26>>26.\n#### 26"
)


@pytest.mark.parametrize(
    ("text", "score"),
    [
        (GOOD_WORKING, 100),
        ("16 - 3 = 13 eggs left, and 13 x 2 = 26 dollars.\nThe answer is 26.", 100),
        # a wrong calculator annotation, or a wrong calculation written out
        ("She has <<16-3=12>>12 eggs.\n#### 24", 25),
        ("She has 16 - 3 = 12 eggs, so she makes 12 * 2 = 24.\n#### 24", 25),
        ("Kelly runs <<100*2*34+40*2*34=4400+2240=6640>>6640 yards.\n#### 6640", 25),
        # the working stops in the middle of a calculation
        ("She has 16 - 3 = <<16-3", 30),
        # no clear final answer at the end
        ("She has 16 - 3 = 13 eggs left.\nThen she sells some of them at the market.", 45),
        # not mistakes: a running chain, rounding, a percentage, the tail of a longer expression
        ("6 x 6 = 36 / 12 = 3 pizzas.\n#### 3", 100),
        ("Each bus takes 10 / 3 = 3.33 groups.\n#### 4", 100),
        ("The share is (6 / 12) x 100 = 50%.\n#### 50", 100),
        ("Blake runs 100 yards * 2 * 15 = 3000 yards.\n#### 3000", 100),
        ("Katerina uses 25 - (8 \\* 1) = 25 - 8 = 17 inches.\n#### 17", 100),
    ],
)
def test_maths_answers_are_checked(text: str, score: int) -> None:
    assert score_answer(text, finish_reason="stop", category="math") == score


def test_wrong_arithmetic_counts_in_any_prose_answer_but_not_in_code() -> None:
    assert score_answer("The total is 12 + 30 = 52 dollars.", finish_reason="stop", category="other") == 25
    # outside maths a missing final answer is not a fault
    assert (
        score_answer("It is 12 + 30 = 42 and then we see.", finish_reason="stop", category="explain") == 100
    )
    code = "```python\nx = 2 + 2 = 5\n```"
    assert score_answer(code, finish_reason="stop", category="code_gen") == 100


def test_the_checker_evaluates_nothing_but_arithmetic() -> None:
    for text in ("<<__import__('os')=1>>", "<<2**99999999=1>>", "<<9**9**9=3>>", "<<1/0=3>>"):
        assert score_answer(text + "\n#### 1", finish_reason="stop", category="math") == 100
