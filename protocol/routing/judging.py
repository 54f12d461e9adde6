"""Labels relaybox makes for itself: after a learned-routed answer, now and then a judge model
grades it, alone or against a shadow answer from another model asked the same in the background.

Which follow-up an answer gets (`follow_up`), the judge's question (`judge_request`) and the
reading of its verdict (`read_verdict`) are decided here; the learning actor runs them. A shadow
answer or a verdict never reaches the client: the client's answer was sent before any of this
starts.
"""

from __future__ import annotations

import enum
import random
import re

from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.routing.learned_route import LearnedPolicy

# Of a long question or answer, the judge reads this much (head and tail): a bound on its cost.
JUDGED_CHARS = 6000


class FollowUp(enum.Enum):
    JUDGE = "judge"  # a cheaper model answered: the judge grades its answer alone
    SHADOW_DOWN = "shadow_down"  # the strongest answered: the cheapest answers too; both judged
    SHADOW_UP = "shadow_up"  # a cheaper model answered: the strongest answers too; both judged
    # The quality promise's: an answer drawn at random, whoever served it; the other end of the
    # route answers too, and both are judged blind.
    PAIR = "pair"


def follow_up(
    policy: LearnedPolicy, rng: random.Random, *, served_strongest: bool, pressure: float
) -> FollowUp | None:
    """What, if anything, to do after a learned-routed answer. A budget past `stop_at_pressure`
    stops every follow-up before it stops anything a client asked for."""
    if pressure >= policy.stop_at_pressure:
        return None
    draw = rng.random()
    if served_strongest:
        return FollowUp.SHADOW_DOWN if draw < policy.shadow_rate else None
    if draw < policy.shadow_up_rate:
        return FollowUp.SHADOW_UP
    if draw < policy.shadow_up_rate + policy.judge_rate:
        return FollowUp.JUDGE
    return None


_INSTRUCTIONS = """You grade answers to a user's request. An answer is GOOD when it is correct and \
does what was asked, completely enough to be useful; otherwise it is BAD. Judge each answer on its \
own merits: answers may disagree, and both may be good or both bad. Reply with one line per \
answer and nothing else, exactly like:
{lines}"""


def judge_request(question: str, answers: list[str], model: str) -> ChatRequest:
    """The judge's question: the user's request and the answers, lettered A, B, ..."""
    letters = [chr(ord("A") + i) for i in range(len(answers))]
    parts = [f"Request:\n{_clip(question)}"]
    parts += [f"Answer {letter}:\n{_clip(answer)}" for letter, answer in zip(letters, answers, strict=True)]
    instructions = _INSTRUCTIONS.format(lines="\n".join(f"{letter}: GOOD" for letter in letters))
    return ChatRequest(
        model=model,
        messages=(
            ChatMessage("system", instructions),
            ChatMessage("user", "\n\n".join(parts)),
        ),
        temperature=0.0,
        max_tokens=20 * len(answers),
    )


_VERDICT = re.compile(r"\b([A-Z])\s*[:=\-]\s*\**\s*(GOOD|BAD)\b", re.IGNORECASE)


def read_verdict(text: str, count: int) -> list[bool] | None:
    """The judge's verdict on each of `count` answers (True: good), or None when it did not give
    one for every answer (then nothing is learned from it)."""
    found: dict[int, bool] = {}
    for letter, verdict in _VERDICT.findall(text):
        index = ord(letter.upper()) - ord("A")
        if 0 <= index < count:
            found.setdefault(index, verdict.upper() == "GOOD")
    if len(found) != count:
        return None
    return [found[i] for i in range(count)]


def question_of(request: ChatRequest) -> str:
    """What the judge is told was asked: the conversation's user turns, the last ones kept."""
    return "\n\n".join(m.text() for m in request.messages if m.role == "user")


def _clip(text: str) -> str:
    if len(text) <= JUDGED_CHARS:
        return text
    half = JUDGED_CHARS // 2
    return f"{text[:half]}\n[...]\n{text[-half:]}"
