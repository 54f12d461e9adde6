"""Stage 4: code blocks.

Safe: in fenced blocks of languages whose whitespace carries no meaning, trailing spaces go and
runs of blank lines become one. Blocks in whitespace-significant languages (Python, YAML,
Makefiles, Markdown, diffs...) and blocks that name no language stay byte for byte.
Aggressive: JSON blocks are minified (when they parse), and C-family blocks lose their
comment-only lines.
"""

from __future__ import annotations

import contextlib
import json
import re

from relaybox.protocol.chat import ChatMessage
from relaybox.protocol.compression.segments import Segment, last_user_index, split, with_text
from relaybox.protocol.compression.whitespace import without_trailing_spaces

WHITESPACE_INSENSITIVE = frozenset(
    {
        "c", "h", "cpp", "c++", "cc", "hpp", "cs", "csharp", "java", "kotlin", "kt", "scala", "go", "rust", "rs",
        "js", "javascript", "jsx", "ts", "typescript", "tsx", "json", "jsonc", "css", "scss", "less", "html",
        "xml", "svg", "sql", "php", "swift", "dart", "sh", "bash", "zsh", "shell", "ps1", "powershell", "toml",
        "ini", "graphql", "proto", "lua", "r", "perl", "ruby", "rb", "elixir", "ex", "erlang", "clojure",
        "lisp", "scheme", "zig", "solidity", "terraform", "hcl", "dockerfile", "vue", "svelte",
    }
)  # fmt: skip
C_FAMILY = frozenset(
    {"c", "h", "cpp", "c++", "cc", "hpp", "cs", "csharp", "java", "kotlin", "kt", "scala", "go", "rust", "rs",
     "js", "javascript", "jsx", "ts", "typescript", "tsx", "swift", "dart", "php", "zig", "solidity"}
)  # fmt: skip
BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
COMMENT_LINE = re.compile(r"^[ \t]*//[^\n]*\n", re.MULTILINE)


def optimise_block(segment: Segment, aggressive: bool) -> str:
    if not segment.code or segment.language not in WHITESPACE_INSENSITIVE:
        return segment.text
    opening, _, rest = segment.text.partition("\n")
    body, closing = rest, ""
    lines = rest.splitlines(keepends=True)
    if lines and lines[-1].strip().startswith(opening.strip()[:3]):
        body, closing = "".join(lines[:-1]), lines[-1]
    body = without_trailing_spaces(body)
    if "\n\n\n" in body:  # with no trailing spaces left, a blank run is three newlines in a row
        body = BLANK_RUNS.sub("\n\n", body)
    if aggressive and segment.language in ("json", "jsonc"):
        with contextlib.suppress(ValueError):  # not JSON after all: left as it is
            body = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False) + "\n"
    elif aggressive and segment.language in C_FAMILY:
        body = COMMENT_LINE.sub("", body)
    return f"{opening}\n{body}{closing}"


def optimise(messages: tuple[ChatMessage, ...], aggressive: bool = False) -> tuple[ChatMessage, ...]:
    keep = last_user_index(messages)

    def rewrite(text: str) -> str:
        return "".join(optimise_block(segment, aggressive) for segment in split(text))

    return tuple(m if i == keep else with_text(m, rewrite) for i, m in enumerate(messages))
