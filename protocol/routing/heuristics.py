"""A heuristic score (0-100) for an answer: the second of seed 001's three success layers.

Cheap signals only, no model call: an empty answer, a refusal, an answer cut off by the length
limit, error text instead of an answer, a code task answered without any code, and for worked
answers, the arithmetic itself: every `a op b = c` the answer writes out (and every `<<a*b=c>>`
calculator annotation) is recomputed, and a maths answer should end with a clear final answer.
A wrong calculation is strong evidence of a wrong answer; the checks read only the answer's text.
"""

from __future__ import annotations

import math
import re

CODE_CATEGORIES = frozenset({"code_gen", "debug", "refactor", "code_review"})

_REFUSAL = re.compile(
    r"^\s*(i'?m sorry,? but|i can(?:'|no)t (?:help|assist|do that)|i am unable to|as an ai(?: language model)?,? i)",
    re.IGNORECASE,
)
_ERROR_TEXT = re.compile(
    r"^\s*(?:(?:error|exception|internal server error)\b|traceback \(most recent call last\))", re.IGNORECASE
)

# Scores of the arithmetic checks (under 50, the router's "poor answer" line, means rejected).
WRONG_ARITHMETIC = 25
CUT_OFF_WORKING = 30
NO_FINAL_ANSWER = 45
# How much arithmetic is checked at most: an answer's first this-many characters.
_CHECK_CHARS = 20_000

_ANNOTATION = re.compile(r"<<([^<>]{1,200})>>")
_OPEN_ANNOTATION = re.compile(r"<<[^<>]{0,200}$")
_NUM = r"\$?\d+(?:,\d{3})*(?:\.\d+)?%?"
_OP = r"(?:[-+*/\u00d7\u00f7^]|\bx\b)"
_TERM = rf"\(*\s*{_NUM}\s*\)*"
_EXPR = rf"{_TERM}(?:\s*{_OP}\s*{_TERM})*"
# A chain `expr = expr (= expr)*` written out in the text, starting at a number or a bracket.
_CHAIN = re.compile(rf"(?<![\w.$,]){_EXPR}(?:\s*=\s*{_EXPR})+")
_BEFORE_OPERATOR = re.compile(rf"{_OP}\s*\$?$")
_FINAL = re.compile(
    r"(?:####\s*\$?-?\d|\banswer(?: is|:)\s*\**\$?-?\d|\\boxed\{|\*\*\$?-?\d[\d,.]*\**\s*\S{0,20}\s*$)",
    re.IGNORECASE,
)
_LAST_LINE_NUMBER = re.compile(r"-?\d")
_SAFE = re.compile(r"^[\d.+\-*/() ]+$")
_LEADING_NUMBER = re.compile(r"\(*(\d+(?:\.\d+)?)")


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
    if category in CODE_CATEGORIES:
        if "```" not in text and not re.search(r"^( {4}|\t)\S", text, re.M):
            return 60
        return 100  # code: `=` is assignment, not arithmetic
    return min(100, arithmetic_score(stripped, final_answer=category == "math"))


def arithmetic_score(text: str, *, final_answer: bool) -> int:
    """100 unless the text's worked arithmetic is wrong (WRONG_ARITHMETIC), its working stops in the
    middle of a calculation (CUT_OFF_WORKING) or, with `final_answer`, it ends without a clear
    final answer (NO_FINAL_ANSWER)."""
    head = text[:_CHECK_CHARS].replace("\\*", "*")  # Markdown-escaped multiplication
    for annotation in _ANNOTATION.findall(head):
        if not _consistent(annotation.split("=")):
            return WRONG_ARITHMETIC
    prose = _ANNOTATION.sub(" ", head)
    for match in _CHAIN.finditer(prose):
        if _BEFORE_OPERATOR.search(prose[max(0, match.start() - 30) : match.start()]):
            continue  # only the tail of a longer expression (`100 yards * 2 * 15 = 3000`)
        parts = match.group().split("=")
        if not re.search(_OP, parts[0]):
            continue  # `12 = 36` compares quantities, it is not a calculation
        if not _consistent(parts):
            return WRONG_ARITHMETIC
    if len(text) <= _CHECK_CHARS and _OPEN_ANNOTATION.search(text):
        return CUT_OFF_WORKING
    if final_answer and not _has_final_answer(text):
        return NO_FINAL_ANSWER
    return 100


def _has_final_answer(text: str) -> bool:
    if _FINAL.search(text[-400:]):
        return True
    last = text.rstrip().rsplit("\n", 1)[-1]
    # A closing sentence that states a number, not one that ends mid-calculation.
    return bool(_LAST_LINE_NUMBER.search(last)) and not re.search(rf"{_OP}\s*$|=\s*$", last)


def _consistent(parts: list[str]) -> bool:
    """Whether every evaluable side of `a = b = c` has the value of the side before it (rounding
    allowed). A side that starts with the previous side's value continues the working
    (`6 x 6 = 36 / 12 = 3`), and `= 8%` may state a share as a percentage (0.08 or 8)."""
    previous: list[float] = []
    for part in parts:
        values = _values(part)
        if not values:
            continue
        if previous and not any(_close(a, b) for a in previous for b in values):
            start = _LEADING_NUMBER.match(part.strip().replace("$", "").replace(",", ""))
            if start is None or not any(_close(a, float(start.group(1))) for a in previous):
                return False
        previous = values
    return True


def _values(part: str) -> list[float]:
    value = _evaluate(part)
    if value is None:
        return []
    if part.strip().endswith("%"):
        return [value, value * 100]
    return [value]


def _close(a: float, b: float) -> bool:
    if abs(a - b) <= max(0.011, 0.005 * max(abs(a), abs(b))):
        return True
    # Rounded to a whole number (people do: 10 / 3 = 3 buses full).
    return abs(a - b) < 1 and (a.is_integer() or b.is_integer())


def _evaluate(expression: str) -> float | None:
    text = expression.strip().replace("$", "").replace(",", "").replace("\u00d7", "*").replace("\u00f7", "/")
    text = re.sub(r"\bx\b", "*", text)
    if "%" in text:
        if re.search(r"[-+]", text):
            return None  # `50 + 40% = 70` is shorthand, not arithmetic
        text = re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", text)
    if not text or not _SAFE.match(text) or "**" in text:
        return None  # powers (`^`) and anything else are not checked
    if re.search(r"\d\s*\(|\)\s*\d|\)\s*\(", text):
        return None  # implicit multiplication or something that is not arithmetic
    try:
        value = eval(text, {"__builtins__": {}}, {})  # digits, + - * / ( ) and spaces only
    except (SyntaxError, ZeroDivisionError, OverflowError, TypeError, ValueError):
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)
