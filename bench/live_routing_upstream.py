"""The fake upstream of `bench/live_routing.py`: one OpenAI-compatible server on loopback serving two
models, `weak` and `strong`, that answer each recorded prompt as that model was recorded to, and
judge answers as relaybox's judge would be asked to (right 85 % of the time).

- MMLU rows carry only correctness: the answer is worded "The answer is C. <that option's text>".
  The data does not say which letter is right, so the right letter is chosen deterministically per
  row id (a hash of the id); a model that was right names it, a model that was wrong names another
  letter (chosen per row and model). The judge below knows the truth from the row, never from the
  letter, so the letter chosen does not matter to the measurement.
- GSM8K rows carry the models' answer texts: those are served as recorded.
- MT-Bench rows carry a 1-10 judge score per model: a short plausible answer is served (distinct
  per model), and an answer scored 8 or more counts as good (as `bench/routing_replay.py` and the
  shipped prior count it).
- A judge request (relaybox's, `protocol/routing/judging.py`: a system message "You grade answers
  ...", a user message "Request: ... Answer A: ... Answer B: ...") is answered "A: GOOD" / "A: BAD"
  per answer: the recorded truth of that answer with probability 0.85, the opposite otherwise,
  drawn from a seeded generator per (row, model, how many times it was judged), so a run's verdicts
  do not depend on the order concurrency puts them in. The row is found by the request text, the
  model by matching the answer text against the row's two answers.
- Anything else (a prompt not in the data, a model other than the two): a 400 saying so.

Every call is kept in `Ledger` (model, row, tokens, cost, kind) for the harness's accounting.
Tokens are counted as characters / 4, rounded up; the prices are the ones relaybox is configured
with, so the fake's costs and relaybox's agree.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply

WEAK, STRONG = "weak", "strong"
MODELS = (WEAK, STRONG)
PRICES = {WEAK: (0.5, 1.5), STRONG: (10.0, 30.0)}  # $ per million tokens: input, output
GOOD_JUDGE_SCORE = 8  # an MT-Bench answer judged 8 or more out of 10 counts as good
JUDGE_ACCURACY = 0.85
SETS = ("mmlu", "gsm8k", "mt_bench")

# What relaybox sends its judge (protocol/routing/judging.py): checked against relaybox's own
# `judge_request` when the harness starts (`check_judge_protocol`), so a change there stops the run
# instead of silently turning every verdict into a 400.
JUDGE_SYSTEM_MARK = "You grade answers to a user's request."
_ANSWER_SPLIT = re.compile(r"\n\nAnswer ([A-Z]):\n")
_CLIPPED = "\n[...]\n"


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    per_in, per_out = PRICES[model]
    return (prompt_tokens * per_in + completion_tokens * per_out) / 1e6


def normal(text: str) -> str:
    """Text with every run of whitespace made one space: relaybox's prompt compression may tidy
    whitespace (never in the last user message, but in earlier turns)."""
    return " ".join(text.split())


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@attrs.frozen
class Row:
    id: str
    set: str  # mmlu, gsm8k, mt_bench
    domain: str  # "set/domain", for the topic oracle and reporting only
    messages: tuple[tuple[str, str], ...]  # (role, content) as the client sends them
    weak_quality: float  # 0/1 correctness, or MT-Bench's 1-10 in its own set
    strong_quality: float
    weak_good: bool  # the truth the judge knows
    strong_good: bool
    weak_answer: str
    strong_answer: str

    @property
    def key(self) -> str:
        return user_key(content for role, content in self.messages if role == "user")

    @property
    def length(self) -> int:
        return sum(len(content) for _, content in self.messages)

    def answer(self, model: str) -> str:
        return self.weak_answer if model == WEAK else self.strong_answer

    def good(self, model: str) -> bool:
        return self.weak_good if model == WEAK else self.strong_good

    def quality(self, model: str) -> float:
        return self.weak_quality if model == WEAK else self.strong_quality

    def always_strong_cost(self) -> float:
        prompt = tokens("".join(content for _, content in self.messages))
        return cost(STRONG, prompt, tokens(self.strong_answer))


def user_key(user_texts: Iterable[str]) -> str:
    """A prompt's key: its user turns, as relaybox's judge is told them (`question_of`: joined by
    a blank line), whitespace made uniform."""
    return normal("\n\n".join(user_texts))


# --- the recorded answers ------------------------------------------------------------------------


def _mmlu_answer(row: dict[str, Any], model: str, correct: bool) -> str:
    options = dict(re.findall(r"^([A-D])\. ?(.*)$", row["prompt"], re.M))
    letters = sorted(options) or ["A", "B", "C", "D"]
    # The data records only whether each model was right: the right letter is a stable choice per row
    # id (the judge knows the truth from the row, not from this letter).
    right = letters[_stable(row["id"]) % len(letters)]
    if correct:
        letter = right
    else:
        others = [x for x in letters if x != right]
        letter = others[_stable(f"{row['id']}:{model}") % len(others)]
    return f"The answer is {letter}. {options.get(letter, '').strip()}".strip()


_MT_OPENINGS = {
    WEAK: "Sure! Here is my answer.",
    STRONG: "Certainly. Here is a careful answer, point by point.",
}


def _mt_answer(row: dict[str, Any], model: str) -> str:
    """A short plausible answer to an MT-Bench turn (the data has scores, not texts); distinct per
    model so the judge's question says whose answer it is, and passed by relaybox's scorer (which
    would otherwise judge text the fake made up): no refusal, no arithmetic (the question is not
    quoted: its numbers could read as working), code where code is asked for, a number at the end. Which row it answers, the judge's fake finds from the question."""
    opening = _MT_OPENINGS[model]
    if row.get("domain") == "coding":
        return (
            f"{opening}\n\n```python\ndef solve(items):\n"
            f"    # the {model} model's approach\n    return sorted(items)\n```\n\n"
            "This handles the edge cases mentioned in the question."
        )
    if row.get("domain") in ("math", "reasoning"):
        return f"{opening} Working through the question step by step, the answer is 4."
    # Ends on a number: relaybox classifies some MT-Bench prose asks as maths and then wants a numeric
    # final answer; the data has no answer text to score, so an invented one must not decide that.
    return f"{opening} The key points are covered below, in order, with a short summary of all 3 at the end."


def _read(data: Path, name: str) -> list[dict[str, Any]]:
    with gzip.open(data / f"{name}.jsonl.gz", "rt") as handle:
        return [row for row in map(json.loads, handle) if row.get("contaminated") is not True]


def load_rows(data: Path, name: str) -> tuple[list[Row], int]:
    """The clean rows of one set ("mixed": all three, MT-Bench's quality then 0/1 at 8 or more), with
    repeated prompts (same user text) left out after the first; and how many were left out."""
    names = SETS if name == "mixed" else (name,)
    rows: list[Row] = []
    for set_name in names:
        for raw in _read(data, set_name):
            rows.append(_row(raw, set_name, scores_as_good=name == "mixed"))
    kept, seen = [], set()
    for row in rows:
        if row.key in seen:
            continue
        seen.add(row.key)
        kept.append(row)
    return kept, len(rows) - len(kept)


def _row(raw: dict[str, Any], set_name: str, *, scores_as_good: bool) -> Row:
    domain = f"{set_name}/{raw.get('domain', '')}"
    if set_name == "mt_bench":
        messages: list[tuple[str, str]] = []
        for i, turn in enumerate(raw["turns"][: raw["turn"]]):
            if i:
                # The data has no first answer: a neutral stand-in keeps the conversation well formed.
                messages.append(("assistant", "Here is my answer to your first request."))
            messages.append(("user", turn))
        weak, strong = float(raw["weak_score"]), float(raw["strong_score"])
        weak_good, strong_good = weak >= GOOD_JUDGE_SCORE, strong >= GOOD_JUDGE_SCORE
        if scores_as_good:
            weak, strong = float(weak_good), float(strong_good)
        return Row(
            raw["id"],
            set_name,
            domain,
            tuple(messages),
            weak,
            strong,
            weak_good,
            strong_good,
            _mt_answer(raw, WEAK),
            _mt_answer(raw, STRONG),
        )
    weak_good, strong_good = bool(raw["weak_correct"]), bool(raw["strong_correct"])
    if set_name == "gsm8k":
        weak_answer, strong_answer = raw["weak_response"], raw["strong_response"]
    else:
        weak_answer = _mmlu_answer(raw, WEAK, weak_good)
        strong_answer = _mmlu_answer(raw, STRONG, strong_good)
    return Row(
        raw["id"],
        set_name,
        domain,
        (("user", raw["prompt"]),),
        float(weak_good),
        float(strong_good),
        weak_good,
        strong_good,
        weak_answer,
        strong_answer,
    )


# --- the server ------------------------------------------------------------------------------------


@attrs.frozen
class Call:
    kind: str  # "answer" or "judge"
    model: str  # the model asked (the judge's too)
    rows: tuple[str, ...]  # answer: the row; judge: the row of every answer judged
    cost: float
    at: float  # trio.current_time() when it came
    # judge only: per answer judged, (model whose answer, the truth, the verdict given)
    judged: tuple[tuple[str, bool, bool], ...] = ()


@attrs.define
class Ledger:
    calls: list[Call] = attrs.Factory(list)
    refused: list[str] = attrs.Factory(list)  # why each unknown request was answered 400
    ambiguous: int = 0  # judged answers equal to both models' answers while their truths differ
    last_call: float = 0.0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class RecordedUpstream:
    """The fake OpenAI-compatible server: `start(nursery)`, then `base_url` (ends in /v1)."""

    def __init__(self, rows: Sequence[Row], seed: int, *, judge_accuracy: float = JUDGE_ACCURACY) -> None:
        self.rows = {row.key: row for row in rows}
        self.by_prefix: dict[str, list[Row]] = {}
        for row in rows:
            self.by_prefix.setdefault(row.key[:200], []).append(row)
        self.seed = seed
        self.judge_accuracy = judge_accuracy
        self.ledger = Ledger()
        self._judged: dict[tuple[str, str], int] = {}
        self.fake = FakeOpenAI(models=MODELS)
        self.fake.answer_with = self._reply

    @property
    def base_url(self) -> str:
        return self.fake.base_url

    async def start(self, nursery: trio.Nursery) -> RecordedUpstream:
        await self.fake.start(nursery)
        return self

    def _refuse(self, why: str) -> Reply:
        self.ledger.refused.append(why)
        return Reply(status=400, error_message=f"live_routing fake upstream: {why}")

    def _reply(self, body: dict[str, Any]) -> Reply:
        now = trio.current_time()
        self.ledger.last_call = now
        model = body.get("model")
        messages = [(m.get("role"), _text(m.get("content"))) for m in body.get("messages") or ()]
        if model not in MODELS:
            return self._refuse(f"no model {model!r} here (weak, strong)")
        prompt_tokens = tokens("".join(text for _, text in messages))
        if any(role == "system" and JUDGE_SYSTEM_MARK in text for role, text in messages):
            users = [text for role, text in messages if role == "user"]
            return self._judge(model, users[-1] if users else "", prompt_tokens, now)
        if any(role == "system" for role, _ in messages):
            return self._refuse("a system message the data never sends (and not the judge's)")
        row = self.rows.get(user_key(text for role, text in messages if role == "user"))
        if row is None:
            return self._refuse("a prompt that is not in the data")
        answer = row.answer(model)
        completion_tokens = tokens(answer)
        self.ledger.calls.append(
            Call("answer", model, (row.id,), cost(model, prompt_tokens, completion_tokens), now)
        )
        return Reply(answer, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, pieces=4)

    # --- the judge -------------------------------------------------------------------------------

    def _judge(self, model: str, content: str, prompt_tokens: int, now: float) -> Reply:
        parsed = parse_judge_question(content)
        if parsed is None:
            return self._refuse("a judge request not in relaybox's format")
        question, answers = parsed
        row = self._row_of_question(question, answers)
        if row is None:
            return self._refuse("a judge request about a prompt that is not in the data")
        lines, judged = [], []
        for letter, answer in answers:
            whose = self._whose(row, answer)
            if whose is None:
                return self._refuse(f"a judged answer that is neither model's answer to {row.id}")
            truth = row.good(whose)
            count = self._judged.get((row.id, whose), 0)
            self._judged[row.id, whose] = count + 1
            right = random.Random(f"{self.seed}:{row.id}:{whose}:{count}").random() < self.judge_accuracy
            verdict = truth if right else not truth
            judged.append((whose, truth, verdict))
            lines.append(f"{letter}: {'GOOD' if verdict else 'BAD'}")
        text = "\n".join(lines)
        completion_tokens = tokens(text)
        self.ledger.calls.append(
            Call(
                "judge",
                model,
                (row.id,) * len(answers),
                cost(model, prompt_tokens, completion_tokens),
                now,
                tuple(judged),
            )
        )
        return Reply(text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, pieces=1)

    def _row_of_question(self, question: str, answers: list[tuple[str, str]]) -> Row | None:
        row = self.rows.get(normal(question))
        if row is not None:
            return row
        # A question longer than the judge reads is clipped (head and tail): find it by its head,
        # and among rows sharing a head, by whose answers these are.
        head = normal(question.split(_CLIPPED, 1)[0])[:200]
        for candidate in self.by_prefix.get(head, []):
            if all(self._whose(candidate, answer) for _, answer in answers):
                return candidate
        return None

    def _whose(self, row: Row, answer: str) -> str | None:
        """Which model's answer to `row` this is (clipped answers by their head); when both models
        answered the same text, the truths agree unless the data disagrees with itself."""
        said = normal(answer)
        clipped = _CLIPPED in answer
        if clipped:
            said = normal(answer.split(_CLIPPED, 1)[0])

        def same(model: str) -> bool:
            mine = normal(row.answer(model))
            return mine.startswith(said) if clipped else mine == said

        matches = [m for m in MODELS if same(m)]
        if len(matches) == 2 and row.weak_good != row.strong_good:
            self.ledger.ambiguous += 1
        return matches[0] if matches else None


def parse_judge_question(content: str) -> tuple[str, list[tuple[str, str]]] | None:
    """relaybox's judge question, "Request:\\n<q>\\n\\nAnswer A:\\n<a>\\n\\nAnswer B:\\n<b>", as
    (q, [(letter, answer), ...])."""
    if not content.startswith("Request:\n"):
        return None
    parts = _ANSWER_SPLIT.split(content[len("Request:\n") :])
    if len(parts) < 3 or len(parts) % 2 == 0:
        return None
    question = parts[0]
    answers = [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]
    return question, answers


def check_judge_protocol() -> None:
    """Stop at once if relaybox's judge question or verdict reading is not what this fake speaks."""
    from relaybox.protocol.routing.judging import judge_request, read_verdict

    request = judge_request("What is 2+2?\n\nAnd 3+3?", ["It is 4.", "Four.\n\nSix."], WEAK)
    system = [m.text() for m in request.messages if m.role == "system"]
    user = [m.text() for m in request.messages if m.role == "user"]
    if not system or JUDGE_SYSTEM_MARK not in system[0]:
        raise RuntimeError("relaybox's judge instructions changed: update JUDGE_SYSTEM_MARK")
    parsed = parse_judge_question(user[-1] if user else "")
    expected = ("What is 2+2?\n\nAnd 3+3?", [("A", "It is 4."), ("B", "Four.\n\nSix.")])
    if parsed != expected:
        raise RuntimeError(f"relaybox's judge question changed: parsed {parsed!r}")
    if read_verdict("A: GOOD\nB: BAD", 2) != [True, False]:
        raise RuntimeError("relaybox no longer reads 'A: GOOD' / 'B: BAD' verdicts")
