"""Prompt compression on a corpus of agentic coding conversations: tokens saved per stage and
level, time per request, and how often context trimming makes an overflowing conversation fit.

    python -m bench.compression [--conversations 60] [--seed 7]

The corpus is generated, reproducibly and offline, from real source files on this machine: the
Python standard library that runs this script (`sysconfig`'s `stdlib` path). Each conversation
is what a coding agent sends on its last turn: a system prompt, a task, tool calls with their
results (files read, and read again after an edit; `grep` output computed over the real files;
a test run's log), the assistant's edits as fenced code, and the user pasting a file back with a
question. The numbers depend only on `--seed` and the standard library's version.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sysconfig
import time
from pathlib import Path

from relaybox.protocol import tokens
from relaybox.protocol.chat import ChatMessage, ChatRequest, ToolCall
from relaybox.protocol.compression.pipeline import compress
from relaybox.protocol.compression.trimming import trim

from bench.machine import percentile, write

SYSTEM = """You are a coding agent working in the user's repository.

Rules:
  - Read files before you change them.
  - Run the tests after every change.
  - Keep answers short.


Tools: read_file(path), grep(pattern, path), run_tests(selector), edit_file(path, patch).
"""
WINDOWS = (8_192, 32_768)  # context windows the trimming figures are given for
ANSWER_ROOM = 4_096


def source_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in stdlib.glob("*.py") if 2_000 < p.stat().st_size < 40_000)


def grep_output(files: list[Path], word: str) -> str:
    lines = []
    for path in files:
        for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if word in text:
                lines.append(f"{path.name}:{number}:{text}")
    return "\n".join(lines[:120]) or "(no matches)"


def test_log(rng: random.Random, path: Path) -> str:
    names = [
        line.split("def ", 1)[1].split("(")[0]
        for line in path.read_text(errors="replace").splitlines()
        if line.startswith("def ")
    ]
    names = names or ["main"]
    lines = [
        "============================= test session starts ==============================",
        f"collected {len(names) * 3} items",
        "",
    ]
    for name in names:
        for variant in ("basic", "empty", "unicode"):
            status = "PASSED" if rng.random() > 0.05 else "FAILED"
            lines.append(
                f"tests/test_{path.stem}.py::test_{name}_{variant} {status}            [ {rng.randint(1, 99):>2}%]"
            )
    lines += [
        "",
        "=================================== FAILURES ===================================",
        "    assert result == expected",
        "E   AssertionError",
    ]
    return "\n".join(lines)


def conversation(rng: random.Random, files: list[Path]) -> tuple[ChatMessage, ...]:
    target, other = rng.sample(files, 2)
    content = target.read_text(errors="replace")
    functions = [block for block in content.split("\ndef ")[1:] if 200 < len(block) < 2_000] or [
        content[:800]
    ]
    edited = "def " + rng.choice(functions).rstrip() + "\n"
    messages = [
        ChatMessage("system", SYSTEM),
        ChatMessage(
            "user",
            f"The tests for {target.name} fail since yesterday.   Can you find out why and fix it?\n\n\n",
        ),
    ]
    calls = 0

    def call(name: str, arguments: str, result: str) -> None:
        nonlocal calls
        calls += 1
        identifier = f"call_{calls}"
        messages.append(ChatMessage("assistant", None, tool_calls=(ToolCall(identifier, name, arguments),)))
        messages.append(ChatMessage("tool", result, tool_call_id=identifier))

    call("read_file", f'{{"path": "{target.name}"}}', content)
    call("grep", f'{{"pattern": "import", "path": "{other.name}"}}', grep_output([target, other], "import"))
    call("run_tests", f'{{"selector": "tests/test_{target.stem}.py"}}', test_log(rng, target))
    messages.append(
        ChatMessage(
            "assistant", f"I think the problem is here:\n\n```python\n{edited}```\n\nLet me look again."
        )
    )
    call("read_file", f'{{"path": "{target.name}"}}', content)  # read again: unchanged
    for _ in range(rng.randint(0, 3)):  # more turns of the same kind
        call("run_tests", f'{{"selector": "tests/test_{target.stem}.py"}}', test_log(rng, target))
        messages.append(ChatMessage("assistant", "Still failing.    Trying another fix.\n\n\n\n"))
    messages.append(
        ChatMessage("user", f"Here is the file as I have it:\n```python\n{content}```\nIs your fix in it?")
    )
    return tuple(messages)


def main(count: int, seed: int) -> None:
    rng = random.Random(seed)
    files = source_files()
    corpus = [ChatRequest(model="m", messages=conversation(rng, files)) for _ in range(count)]
    sizes = [tokens.count_request(r) for r in corpus]
    lines = [
        f"{count} generated agentic conversations (seed {seed}) from {len(files)} standard-library files; "
        f"prompt tokens (o200k) per conversation: median {statistics.median(sizes):,.0f}, "
        f"max {max(sizes):,}",
        "",
        f"{'level':<12}{'tokens before':>15}{'after':>12}{'saved':>8}   {'per stage':<60}{'ms p50':>8}{'ms p99':>8}",
    ]
    for level in ("safe", "aggressive"):
        before = after = 0
        per_stage: dict[str, int] = {}
        times = []
        for request in corpus:
            started = time.perf_counter()
            compress(request, level)
            times.append((time.perf_counter() - started) * 1000)
            measured = compress(request, level, measure_stages=True)
            original = tokens.count_request(request)
            before += original
            after += original - measured.saved
            for stage, saved in measured.by_stage:
                per_stage[stage] = per_stage.get(stage, 0) + saved
        stages = ", ".join(f"{stage} {saved / before:.2%}" for stage, saved in per_stage.items())
        lines.append(
            f"{level:<12}{before:>15,}{after:>12,}{(before - after) / before:>8.1%}   {stages:<60}"
            f"{percentile(times, 0.5):>8.1f}{percentile(times, 0.99):>8.1f}"
        )
    lines += [
        "",
        "context trimming (aggressive level, after the other stages), 4,096 tokens kept for the answer:",
    ]
    for window in WINDOWS:
        room = window - ANSWER_ROOM
        overflowing = fitted = 0
        for request in corpus:
            compressed = compress(request, "aggressive").request
            if tokens.count_request(request) <= room:
                continue
            overflowing += 1
            trimmed = trim(compressed.messages, room, tokens.count_message)
            fitted += sum(tokens.count_message(m) for m in trimmed) <= room
        lines.append(
            f"  {window:>6,}-token window: {overflowing} of {count} overflow as sent; {fitted} of those fit after compression"
        )
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('compression', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()
    main(arguments.conversations, arguments.seed)
