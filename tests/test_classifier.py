"""The task classifier: a pure function of the request, categories, complexity and tier."""

from __future__ import annotations

import pytest
from relaybox.protocol.chat import ChatMessage, ChatRequest, ToolSpec
from relaybox.protocol.routing.classifier import CATEGORIES, CODE_CATEGORIES, TierThresholds, classify


def ask(*turns: str, tools: tuple[ToolSpec, ...] = ()) -> ChatRequest:
    messages = []
    for i, turn in enumerate(turns):
        messages.append(ChatMessage("user" if i % 2 == 0 else "assistant", turn))
    return ChatRequest("auto", tuple(messages), tools=tools)


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("What is the capital of France?", "simple_qa"),
        ("Write a Python function that parses ISO dates.", "code_gen"),
        ("Implement a class for an LRU cache in Rust", "code_gen"),
        ("Please review this code:\n```python\ndef f(x): return x\n```", "code_review"),
        ("I get this traceback when I run my script:\nTraceback (most recent call last): KeyError", "debug"),
        ("My Python program crashes with an error when the list is empty, why?", "debug"),
        ("Refactor this function to be more readable", "refactor"),
        ("Explain how garbage collection works in the JVM", "explain"),
        ("A shop sells 3 apples for $2. How many apples can I buy with $10?", "math"),
        ("Compute 17 * 23 + 4", "math"),
        ("Write a cover letter for a junior designer position", "writing"),
        ("Summarize the following article in three sentences.", "writing"),
        ("hello there", "other"),
    ],
)
def test_categories_of_clear_prompts(prompt: str, category: str) -> None:
    assert classify(ask(prompt)).category == category


def test_failure_words_outside_software_are_not_debug() -> None:
    text = "Which of the following is an error in the argument that the author makes about voting?"
    assert classify(ask(text)).category != "debug"


def test_categories_are_known() -> None:
    assert "other" in CATEGORIES and set(CATEGORIES) >= CODE_CATEGORIES


def test_longer_asks_are_more_complex() -> None:
    short = classify(ask("What is a monad?")).complexity
    sentence = "It has to hold for every input, and the reasons have to be given one by one. "
    long = classify(ask("What is a monad? " + sentence * 40)).complexity
    assert long > short


def test_more_quantities_make_a_word_problem_more_complex() -> None:
    few = "Tom has 3 apples. How many apples does he have after buying 2 more?"
    many = (
        "Tom has 3 apples and 4 pears. He buys 12 more apples at $2 each and sells 5 pears for $3 each. "
        "He gives half of the apples to 2 friends. How much money did he spend and how many apples are left?"
    )
    assert classify(ask(few)).category == classify(ask(many)).category == "math"
    assert classify(ask(many)).complexity > classify(ask(few)).complexity


def test_reasoning_words_and_turns_add_complexity() -> None:
    plain = classify(ask("Describe a cache for the service")).complexity
    reasoned = classify(
        ask("Design a distributed cache for the service and analyze the trade-offs")
    ).complexity
    assert reasoned > plain
    one = classify(ask("And what about this case?")).complexity
    many = classify(
        ask(*(["Earlier question", "Earlier answer"] * 5), "And what about this case?")
    ).complexity
    assert many > one


def test_options_of_a_closed_question_are_not_counted_as_length() -> None:
    stem = "Which planet is the largest?"
    options = "\n".join(f"{letter}. " + "a long distractor sentence " * 6 for letter in "ABCD")
    result = classify(ask(f"{stem}\n{options}\nAnswer:"))
    assert "multiple choice" in result.signals
    assert result.complexity == classify(ask(stem)).complexity


def test_tools_make_a_request_agentic_and_at_least_standard() -> None:
    request = ask("What is the capital of France?", tools=(ToolSpec("lookup"),))
    result = classify(request)
    assert result.agentic and result.tier == "standard"
    assert not classify(ask("What is the capital of France?")).agentic


def test_thresholds_decide_the_tier() -> None:
    request = ask("Explain how garbage collection works in the JVM")
    complexity = classify(request).complexity
    assert classify(request, TierThresholds(economy_max=complexity)).tier == "economy"
    assert (
        classify(request, TierThresholds(economy_max=complexity - 1, standard_max=complexity)).tier
        == "standard"
    )
    assert classify(request, TierThresholds(economy_max=-1, standard_max=complexity - 1)).tier == "premium"


def test_pure_and_bounded() -> None:
    request = ask("Why does my build fail? " + "log line with error 42\n" * 5000)
    assert classify(request) == classify(request)
    assert 0 <= classify(request).complexity <= 100
    assert classify(ChatRequest("auto", ())).category == "other"
