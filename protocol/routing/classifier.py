"""The task classifier: a prompt's category and a complexity score, and from them the tier to ask for.

Pure and cheap on purpose: it runs on every request, before anything else, on the router's own
task. It reads only what real traffic carries (the conversation, the tools offered) and bounds its
work: it reads the last user turn's first 1,500 and last 500 characters, as words looked up in
sets (two phrase patterns run only when their words are there), and everything else is a count.
A 10k-token conversation classifies in tens of microseconds, a long single prompt (the 2,000
characters it reads) in about 0.2 ms (`python -m bench.classifier`).

Complexity is a sum of general features: the category's base, the length of what is asked (a
closed question's listed options left out), reasoning words, the number of quantities (numerals
and number words: each is a value to carry through the working), code in a non-code ask, turns,
context size and a response schema. No feature names a benchmark, a subject or a domain.

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

# How much of the last user turn the patterns read: its start and its end (the question comes
# before or after what is pasted), bounded so a pasted log file costs little more than a question.
_HEAD_CHARS = 1500
_TAIL_CHARS = 500

# Words first: one pass splits the scanned text into lower-case words, and categories are decided
# by set lookups and phrase lookups in the joined words. Python's regex engine tries a
# `\b(?:...)` alternation at every position (about 20 us per pattern on a paragraph); the two
# patterns that remain run only when both halves of what they look for are among the words.
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(*items: str) -> frozenset[str]:
    return frozenset(" ".join(items).split())


def _phrases(*items: str) -> tuple[tuple[str, str], ...]:
    """Each phrase with its first word, which must be among the words before the text is searched."""
    return tuple((item.split()[0], item) for item in items)


_DEBUG_WORDS = _words(
    "traceback stacktrace exception exceptions segfault error errors bug bugs crash crashes crashed",
    "fail fails failing broken",
)
_DEBUG_PHRASES = _phrases(
    " stack trace ",
    " doesn't work ",
    " doesnt work ",
    " not working ",
    " fix this ",
    " fix the ",
)
_DEBUG_WHY = re.compile(r"\bwhy does .{0,40} (?:fail|return|throw)", re.IGNORECASE)
# Failure words say "debug" only about software: "the error in this argument" is not a bug report.
_SOFTWARE = _words(
    "code program programs function method script app application server compile compiler compiled build",
    "test tests runtime api library module package deploy install python javascript typescript java rust",
    "golang ruby php sql bash kotlin swift node react django docker linux query database stack stacktrace",
    "traceback segfault log logs",
)
_REVIEW_WORDS = _words("critique pr")
_REVIEW_PHRASES = _phrases(
    " review this ",
    " review my ",
    " review the ",
    " code review ",
    " pull request ",
    " is this code ",
    " any issues with ",
    " best practice",
)
_REFACTOR_WORDS = _words("refactor refactoring restructure cleanup")
_REFACTOR_PHRASES = _phrases(
    " clean up ",
    " simplify this ",
    " simplify the ",
    " rewrite this code",
    " rewrite the code",
    " rewrite this function",
    " rewrite the function",
    " more readable",
    " more idiomatic",
    " more maintainable",
    " extract a method",
    " extract a function",
    " extract method",
    " extract function",
)
_MAKE_VERBS = _words("write implement create generate build code add")
_ARTIFACTS = _words(
    "function class script program module method endpoint api test tests query component cli parser regex"
)
_LANGUAGES = _words("python javascript typescript rust go golang java ruby php sql bash kotlin swift c c#")
_CODE_GEN = re.compile(
    r"\b(?:write|implement|create|generate|build|code|add) (?:a |an |the |me )?(?:\w+ ){0,3}"
    r"(?:function|class|script|program|module|method|endpoint|api|test|tests|query|component|cli|parser|regex)\b|"
    r"\b(?:in|using) (?:python|javascript|typescript|rust|go|golang|java|c\+\+|c#|ruby|php|sql|bash|kotlin|swift)\b",
    re.IGNORECASE,
)
_EXPLAIN_WORDS = _words("explain eli")
_EXPLAIN_PHRASES = _phrases(
    " what does ",
    " how does ",
    " how do ",
    " why is ",
    " why are ",
    " why do ",
    " difference between ",
    " describe how ",
    " walk me through ",
    " help me understand ",
)
_MATH_WORDS = _words(
    "calculate compute solve equation percent percentage total average probability integral derivative",
    "remainder ratio",
)
_MATH_PHRASES = _phrases(" how many ", " how much ", " sum of ", " prove that ")
# `17*23`, `3 - 1`; not `2024-05-01`.
_ARITHMETIC = re.compile(r"\d\s*[+*/\u00d7\u00f7^=]\s*\d|\d\s+-\s+\d")
_LOG_LINE = re.compile(r"^\S*\d{4}-\d\d-\d\d[T ]\d\d:\d\d", re.M)
_WRITE_VERBS = _words("write compose draft rewrite edit polish proofread")
_PIECES = _words(
    "essay email letter post blog story poem article speech summary paragraph report tweet announcement",
    "description outline",
)
_WRITING = re.compile(
    r"\b(?:write|compose|draft|rewrite|edit|polish|proofread) (?:a |an |the |me |my )?(?:\w+ ){0,3}"
    r"(?:essay|email|letter|post|blog|story|poem|article|speech|summary|paragraph|report|cover letter|"
    r"tweet|announcement|description|outline)\b",
    re.IGNORECASE,
)
_WRITING_WORDS = _words("summarise summarize translate tldr")
_SIMPLE_QA_FIRST = _words("what who when where which is are does do can name list define")

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

_REASONING_WORDS = frozenset(
    [
        "prove",
        "proof",
        "derive",
        "design",
        "architect",
        "architecture",
        "tradeoff",
        "tradeoffs",
        "optimize",
        "optimise",
        "analyze",
        "analyse",
        "compare",
        "evaluate",
        "plan",
        "strategy",
        "concurrency",
        "concurrent",
        "distributed",
        "scale",
        "scalability",
        "security",
        "algorithm",
        "complexity",
        "formal",
        "rigorous",
        "detailed",
        "comprehensive",
    ]
)
_REASONING_PHRASES = ("step by step", "step-by-step", "trade-off", "edge case", "in depth")
# Quantities: numerals, and number words a word problem spells out.
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_WORDS = frozenset(
    [
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "fifteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "hundred",
        "thousand",
        "million",
        "billion",
        "half",
        "halves",
        "third",
        "thirds",
        "quarter",
        "quarters",
        "twice",
        "double",
        "triple",
        "dozen",
        "dozens",
        "fourth",
        "fifth",
        "tenth",
    ]
)
_CODE_DEFINITION = re.compile(
    r"\b(?:def|fn|func|function|class)\s+\w+\s*[({:<]|\bconst\s+\w+\s*=|^\s*import\s+[\w.]+\s*$", re.M
)
_CODE_KEYWORDS = _words("def fn func function class const import")
_INDENTED = re.compile(r"^(?: {4}|\t)\S", re.M)
# Listed answer options (`A. ...`, `(b) ...`): a closed question; what is asked is the text before them.
_OPTIONS = re.compile(r"^\s*(?:[A-Ea-e][.)]|\([A-Ea-e]\))\s", re.M)

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
    head = (
        asked if len(asked) <= _HEAD_CHARS + _TAIL_CHARS else f"{asked[:_HEAD_CHARS]}\n{asked[-_TAIL_CHARS:]}"
    )
    options = _OPTIONS.search(head)
    # A closed question's listed options are answers to pick from, not more of the problem.
    stem = head[: options.start()] if options is not None else head
    stem_words = _WORD.findall(stem.lower())
    lower = head.lower()
    words = stem_words if options is None else stem_words + _WORD.findall(lower[options.start() :])
    wordset = frozenset(words)
    has_code = _has_code(head, wordset)
    category = _category(head, " " + " ".join(words) + " ", wordset, has_code)
    turns = sum(1 for m in request.messages if m.role in ("user", "assistant", "tool"))
    total_chars = sum(_length(m.content) for m in request.messages)

    signals: list[str] = []
    score = _BASE[category]
    # Longer asks carry more to get right: +0 at 100 characters, about +24 at 10,000.
    asked_chars = len(asked) if options is None else len(stem)
    length_points = 0 if asked_chars <= 100 else min(28, round(12 * math.log10(asked_chars / 100)))
    if length_points:
        signals.append(f"length +{length_points}")
    score += length_points
    reasoning = sum(1 for w in words if w in _REASONING_WORDS) + sum(
        lower.count(p) for p in _REASONING_PHRASES
    )
    if reasoning:
        points = min(24, 8 * reasoning)
        signals.append(f"reasoning words +{points}")
        score += points
    # Each quantity in the problem is a value to carry through the working; weak models drop them.
    # Weighed most in maths, where each is a step of the calculation.
    quantities = len(_NUMBER.findall(stem)) + sum(1 for w in stem_words if w in _NUMBER_WORDS)
    if quantities > 3:
        per, cap = (4, 20) if category == "math" else (2, 10)
        points = min(cap, per * (quantities - 3))
        signals.append(f"{quantities} quantities +{points}")
        score += points
    if has_code and category not in CODE_CATEGORIES:
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
    if options is not None:
        signals.append("multiple choice")  # a closed question: no extra points
    complexity = max(0, min(100, score))
    tier = thresholds.tier(complexity)
    # Seed 001: agentic clients (tools offered, or a long coding session) get at least standard.
    agentic = bool(request.tools) or (turns >= 8 and category in CODE_CATEGORIES)
    if agentic and tier == "economy":
        tier = "standard"
        signals.append("agentic: economy -> standard")
    return Classification(category, complexity, tier, agentic, tuple(signals))


def _has_code(text: str, words: frozenset[str]) -> bool:
    if "```" in text or "#include" in text or "=>" in text or ";\n" in text:
        return True
    if ("\n    " in text or "\n\t" in text) and _INDENTED.search(text):
        return True
    return not words.isdisjoint(_CODE_KEYWORDS) and _CODE_DEFINITION.search(text) is not None


def _category(text: str, joined: str, words: frozenset[str], has_code: bool) -> str:
    """The most specific category whose words are there; `joined` is the words, space-separated."""

    def phrase(phrases: tuple[tuple[str, str], ...]) -> bool:
        return any(first in words and p in joined for first, p in phrases)

    matched = {
        "debug": (not words.isdisjoint(_DEBUG_WORDS) or phrase(_DEBUG_PHRASES) or "why" in words)
        and (has_code or not words.isdisjoint(_SOFTWARE) or _LOG_LINE.search(text) is not None),
        "code_review": not words.isdisjoint(_REVIEW_WORDS) or phrase(_REVIEW_PHRASES),
        "refactor": not words.isdisjoint(_REFACTOR_WORDS) or phrase(_REFACTOR_PHRASES),
        "code_gen": (
            (not words.isdisjoint(_MAKE_VERBS) and not words.isdisjoint(_ARTIFACTS))
            or (("in" in words or "using" in words) and not words.isdisjoint(_LANGUAGES))
        )
        and _CODE_GEN.search(text) is not None,
        "math": not words.isdisjoint(_MATH_WORDS)
        or phrase(_MATH_PHRASES)
        or _ARITHMETIC.search(text) is not None,
        "writing": not words.isdisjoint(_WRITING_WORDS)
        or " tl dr " in joined
        or (
            not words.isdisjoint(_WRITE_VERBS)
            and not words.isdisjoint(_PIECES)
            and _WRITING.search(text) is not None
        ),
        "explain": not words.isdisjoint(_EXPLAIN_WORDS) or phrase(_EXPLAIN_PHRASES),
    }
    if matched["debug"] and words.isdisjoint(_DEBUG_WORDS) and not phrase(_DEBUG_PHRASES):
        matched["debug"] = _DEBUG_WHY.search(text) is not None  # only "why" was there
    specific = [name for name in _PRECEDENCE if matched.get(name)]
    if not specific:
        first = joined[1 : joined.find(" ", 1)]
        return "simple_qa" if first in _SIMPLE_QA_FIRST and text.lstrip()[:1].isalpha() else "other"
    if "code_gen" in specific and "writing" in specific:
        # "write a function" matches both; code words decide.
        return "code_gen" if has_code else "writing"
    return specific[0]


def _length(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, tuple):
        return sum(len(getattr(part, "text", "")) for part in content)
    return 0
