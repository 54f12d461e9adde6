"""What the Claude CLI sends upstream for one short prompt: its default flags vs relaybox's.

    python -m bench.claude_cli_request_size [--claude PATH]

The real CLI talks to a fake Anthropic API in this process, which records every request.
Counted: model calls made, bytes of request bodies, system prompt size and tool definitions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import trio
from relaybox.actors.transports.claude_cli import child_environment
from relaybox.protocol.wire.claude_cli import SystemPromptStrategy, build_argv

from bench.machine import write
from tests.fakes.anthropic_upstream import FakeAnthropic

PROMPTS = (b"hi", b"Explain what a circuit breaker is in a web service.")
REPO = Path(__file__).resolve().parent.parent


async def measure(
    claude: str, argv: list[str], env: dict[str, str], prompt: bytes
) -> tuple[int, int, int, int, float]:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic().start(nursery)
        env = {**env, "ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": "sk-ant-bench"}
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            result = await trio.run_process(
                argv,
                stdin=prompt,
                capture_stdout=True,
                capture_stderr=True,
                env=env,
                cwd=workdir,
                check=False,
            )
            elapsed = time.perf_counter() - started
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        calls = fake.message_requests()
        main = max(calls, key=lambda r: len(r.body)).json()
        system = sum(len(block.get("text", "")) for block in main.get("system", []))
        nursery.cancel_scope.cancel()
        return len(calls), sum(len(r.body) for r in calls), system, len(main.get("tools", [])), elapsed


async def main(claude: str) -> None:
    home = tempfile.mkdtemp()
    plain_env = {"PATH": os.environ["PATH"], "HOME": home}
    variants = [
        (
            "CLI defaults (-p stream-json)",
            [claude, "-p", "--output-format", "stream-json", "--verbose", "--model", "sonnet"],
            plain_env,
        ),
        (
            'defaults + --tools ""',
            [claude, "-p", "--output-format", "stream-json", "--verbose", "--model", "sonnet", "--tools", ""],
            plain_env,
        ),
        (
            "relaybox (lean flags + env)",
            build_argv(claude, "sonnet", "", SystemPromptStrategy.REPLACE),
            child_environment({"PATH": os.environ["PATH"], "HOME": home}, {}),
        ),
        (
            "relaybox, client system prompt",
            build_argv(claude, "sonnet", "You are terse.", SystemPromptStrategy.REPLACE),
            child_environment({"PATH": os.environ["PATH"], "HOME": home}, {}),
        ),
    ]
    lines = [f"Claude Code {await version(claude)}; bytes = all request bodies sent to the Messages API"]
    for prompt in PROMPTS:
        lines += [
            "",
            f"prompt {prompt.decode()!r}",
            f"{'variant':<34}{'model calls':>12}{'bytes sent':>12}{'system chars':>14}{'tools':>7}{'wall s':>8}",
        ]
        for name, argv, env in variants:
            calls, sent, system, tools, elapsed = await measure(claude, argv, env, prompt)
            lines.append(f"{name:<34}{calls:>12}{sent:>12,}{system:>14,}{tools:>7}{elapsed:>8.2f}")
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('claude_cli_request_size', table)}")


async def version(claude: str) -> str:
    result = await trio.run_process([claude, "--version"], capture_stdout=True, check=False)
    return result.stdout.decode().strip()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = REPO / "tests/cli/node_modules/.bin/claude"
    parser.add_argument("--claude", default=str(default) if default.exists() else shutil.which("claude"))
    args = parser.parse_args()
    if not args.claude:
        raise SystemExit("no claude CLI found: npm ci --prefix tests/cli, or pass --claude")
    trio.run(main, args.claude)
