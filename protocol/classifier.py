"""The task classifier: a prompt's category and a complexity score, and from them the tier to ask for.

Pure and cheap on purpose: it runs on every request, before anything else, on the router's own
task. It reads only what real traffic carries (the conversation, the tools offered) and bounds its
work: keyword patterns look at the last user turn's first few thousand characters, and everything
else is a count. A 10k-token conversation classifies in tens of microseconds
(`python -m bench.classifier`).

Categories are seed 001's (`simple_qa`, `code_gen`, `code_review`, `debug`, `refactor`, `explain`,
`other`) plus `math` and `writing`: recorded outcomes (`bench/routing_replay.py`) show weak models
fail multi-step arithmetic far more often than they fail other questions, so maths deserves its
own statistics.
"""

from __future__ import annotations

import math
import re

import attrs
from relaybox.protocol.chat import ChatRequest

CATEGORIES = (
    "simple_qa",
    "code_gen",
    "code_review",
    "debug",
    "refactor",
    "explain",
    "math",
    "writing",
    "other",
)

# How much of the last user turn the keyword patterns read: enough to see what is asked,
# bounded so a pasted log file costs no more than a question.
_SCAN_CHARS = 4000

_PATTERNS: dict[str, re.Pattern[str]] = {
    "debug": re.compile(
        r"\b(?:traceback|stack ?trace|exception|segfault|error:|errors?\b|bug|crash(?:es|ed)?|fails?\b|failing|"
        r"doesn'?t work|not working|broken|why does .{0,40} (?:fail|return|throw)|fix (?:this|the|my))",
        re.IGNORECASE,
    ),
    "code_review": re.compile(
        r"\b(?:review (?:this|my|the)|code review|pull request|\bPR\b|is this code|any issues with|"
        r"critique|best practices?)",
        re.IGNORECASE,
    ),
    "refactor": re.compile(
        r"\b(?:refactor|clean ?up|restructure|simplify (?:this|the)|rewrite (?:this|the) (?:code|function|class)|"
        r"make (?:this|it) (?:more )?(?:readable|idiomatic|maintainable)|extract (?:a |the )?(?:method|function))",
        re.IGNORECASE,
    ),
    "code_gen": re.compile(
        r"\b(?:write|implement|create|generate|build|code|add) (?:a |an |the |me )?(?:\w+ ){0,3}"
        r"(?:function|class|script|program|module|method|endpoint|api|test|tests|query|component|cli|parser|regex)\b|"
        r"\b(?:in|using) (?:python|javascript|typescript|rust|go|golang|java|c\+\+|c#|ruby|php|sql|bash|kotlin|swift)\b",
        re.IGNORECASE,
    ),
    "explain": re.compile(
        r"\b(?:explain|what does|how does|how do|why is|why are|why do|what is the difference|"
        r"difference between|describe how|walk me through|help me understand|eli5)\b",
        re.IGNORECASE,
    ),
    "math": re.compile(
        r"\b(?:how (?:many|much)|calculate|compute|solve|equation|percent(?:age)?|total|average|sum of|"
        r"probability|integral|derivative|prove that|remainder|ratio)\b|\d\s*[-+*/\u00d7\u00f7^=]\s*\d",
        re.IGNORECASE,
    ),
    "writing": re.compile(
        r"\b(?:write|compose|draft|rewrite|edit|polish|proofread) (?:a |an |the |me |my )?(?:\w+ ){0,3}"
        r"(?:essay|email|letter|post|blog|story|poem|article|speech|summary|paragraph|report|cover letter|"
        r"tweet|announcement|description|outline)\b|\b(?:summari[sz]e|tl;?dr|translate)\b",
        re.IGNORECASE,
    ),
    "simple_qa": re.compile(
        r"^\s*(?:what|who|when|where|which|is|are|does|do|can|name|list|define)\b", re.IGNORECASE
    ),
}

# Ties between matched categories go to the more specific one (earlier in this order).
_PRECEDENCE = ("debug", "code_review", "refactor", "code_gen", "math", "writing", "explain", "simple_qa")

# How hard a category is before anything else is known: the starting point of the score.
_BASE = {
    "simple_qa": 5,
    "explain": 18,
    "writing": 20,
    "math": 22,
    "code_gen": 30,
    "debug": 32,
    "refactor": 30,
    "code_review": 30,
    "other": 15,
}

_REASONING = re.compile(
    r"\b(?:step[- ]by[- ]step|prove|proof|derive|design|architect(?:ure)?|trade-?offs?|optimi[sz]e|"
    r"analy[sz]e|compare|evaluate|plan|strategy|edge cases?|concurren\w*|distributed|scal(?:e|ability)|"
    r"security|algorithm|complexity|formal|rigorous|in depth|detailed|comprehensive)\b",
    re.IGNORECASE,
)
_CODE = re.compile(
    r"```|^(?: {4}|\t)\S|\b(?:def|class|function|return|import|const|fn|public|#include)\b", re.M
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_QUESTION_LIST = re.compile(r"^\s*(?:[A-D][.)]|\(?[a-d]\))\s", re.M)

CODE_CATEGORIES = frozenset({"code_gen", "code_review", "debug", "refactor"})


@attrs.frozen
class TierThresholds:
    """Complexity 0..economy_max asks for economy, ..standard_max standard, above that premium."""

    economy_max: int = 25
    standard_max: int = 60

    def tier(self, complexity: int) -> str:
        if complexity <= self.economy_max:
            return "economy"
        if complexity <= self.standard_max:
            return "standard"
        return "premium"


@attrs.frozen
class Classification:
    category: str
    complexity: int  # 0-100
    tier: str
    agentic: bool = False
    # Why, in a few words each, for x-router-reason and the log.
    signals: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"{self.category}, complexity {self.complexity} -> {self.tier}"
        if self.agentic:
            text += " (agentic)"
        return text


def classify(request: ChatRequest, thresholds: TierThresholds = TierThresholds()) -> Classification:
    """Category, complexity and tier of a chat request."""
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    asked = last_user.text() if last_user is not None else ""
    head = asked[:_SCAN_CHARS]
    category = _category(head)
    turns = sum(1 for m in request.messages if m.role in ("user", "assistant", "tool"))
    total_chars = sum(_length(m.content) for m in request.messages)

    signals: list[str] = []
    score = _BASE[category]
    # Longer asks carry more to get right: +0 at 100 characters, about +24 at 10,000.
    length_points = 0 if len(asked) <= 100 else min(28, round(12 * math.log10(len(asked) / 100)))
    if length_points:
        signals.append(f"length +{length_points}")
    score += length_points
    reasoning = len(_REASONING.findall(head))
    if reasoning:
        points = min(24, 8 * reasoning)
        signals.append(f"reasoning words +{points}")
        score += points
    if category == "math":
        # In a word problem each quantity is a step to carry; weak models drop them.
        numbers = len(_NUMBER.findall(head))
        if numbers > 3:
            points = min(20, 4 * (numbers - 3))
            signals.append(f"{numbers} quantities +{points}")
            score += points
    if _CODE.search(head) and category not in CODE_CATEGORIES:
        signals.append("code +8")
        score += 8
    if turns > 4:
        points = min(15, 2 * (turns - 4))
        signals.append(f"{turns} turns +{points}")
        score += points
    if total_chars > 20_000:
        signals.append("long context +10")
        score += 10
    if request.json_schema is not None:
        signals.append("schema +5")
        score += 5
    if _QUESTION_LIST.search(head) and category in ("simple_qa", "other"):
        signals.append("multiple choice")  # a closed question: no extra points
    complexity = max(0, min(100, score))
    tier = thresholds.tier(complexity)
    # Seed 001: agentic clients (tools offered, or a long coding session) get at least standard.
    agentic = bool(request.tools) or (turns >= 8 and category in CODE_CATEGORIES)
    if agentic and tier == "economy":
        tier = "standard"
        signals.append("agentic: economy -> standard")
    return Classification(category, complexity, tier, agentic, tuple(signals))


def _category(text: str) -> str:
    matched = [name for name in _PRECEDENCE if _PATTERNS[name].search(text)]
    if not matched:
        return "other"
    # A question that looks simple but also matches something specific is the specific thing.
    specific = [name for name in matched if name != "simple_qa"]
    if not specific:
        return "simple_qa"
    if "code_gen" in specific and "writing" in specific:
        # "write a function" matches both; code words decide.
        return "code_gen" if _CODE.search(text) or _PATTERNS["code_gen"].search(text) else "writing"
    return specific[0]


def _length(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, tuple):
        return sum(len(getattr(part, "text", "")) for part in content)
    return 0
