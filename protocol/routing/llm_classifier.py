"""The optional LLM classifier (seed 001, `LLM_CLASSIFIER=true`): the cheapest model reads the ask
and names its category and complexity. Pure: the question to send and the reading of the answer;
the router sends it through a provider like any request, so its cost is logged like any other.

It costs a model call per smart-routed request (and its latency before the real answer starts),
which is why the built-in classifier stays the default; an answer that cannot be read falls back
to the built-in verdict.
"""

from __future__ import annotations

import json
import re

import attrs
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.routing.classifier import CATEGORIES, Classification, TierThresholds

# The ask is cut to this many characters: classifying needs the gist, not the attachments.
ASK_CHARS = 2000

INSTRUCTIONS = (
    "You classify requests sent to an AI assistant so they can be routed to a model that is strong "
    "enough but no more expensive than needed. Reply with one JSON object and nothing else: "
    '{"category": one of ' + ", ".join(f'"{c}"' for c in CATEGORIES) + ', "complexity": an integer '
    "from 0 (trivial lookup) to 100 (hard multi-step reasoning or a large design task)}."
)


def classification_request(request: ChatRequest, model: str) -> ChatRequest:
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    ask = (last_user.text() if last_user is not None else "")[:ASK_CHARS]
    turns = sum(1 for m in request.messages if m.role in ("user", "assistant"))
    context = f"(turn {turns} of a conversation; {len(request.tools)} tools offered)\n" if turns > 1 else ""
    return ChatRequest(
        model=model,
        messages=(ChatMessage("system", INSTRUCTIONS), ChatMessage("user", context + ask)),
        max_tokens=60,
        temperature=0.0,
    )


_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def read_classification(
    answer: str, builtin: Classification, thresholds: TierThresholds
) -> Classification | None:
    """The model's verdict as a classification (the agentic upgrade kept), or None if unreadable."""
    match = _OBJECT.search(answer)
    if match is None:
        return None
    try:
        verdict = json.loads(match.group(0))
        category = str(verdict["category"])
        complexity = int(verdict["complexity"])
    except (ValueError, KeyError, TypeError):
        return None
    if category not in CATEGORIES or not 0 <= complexity <= 100:
        return None
    tier = thresholds.tier(complexity)
    if builtin.agentic and tier == "economy":
        tier = "standard"
    return attrs.evolve(
        builtin, category=category, complexity=complexity, tier=tier, signals=("llm classifier",)
    )
