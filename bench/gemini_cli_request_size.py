"""What the Gemini CLI sends upstream for one prompt: its defaults vs relaybox's workspace settings.

    python -m bench.gemini_cli_request_size [--gemini PATH]

The real CLI talks to a fake Gemini API in this process; one run answers normally, one is
answered 429 to count the CLI's own retries.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import trio
from relaybox.protocol.wire.gemini_cli import SYSTEM_PROMPT, WORKSPACE_SETTINGS, build_argv

from bench.machine import write
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.scripts import Reply

REPO = Path(__file__).resolve().parent.parent
PROMPT = b"Explain what a circuit breaker is in a web service."


def prepare(home: str, workdir: str, lean: bool, base_url: str) -> dict[str, str]:
    """An API-key login in a throwaway HOME; with `lean`, relaybox's workspace settings."""
    Path(home, ".gemini").mkdir()
    Path(home, ".gemini", "settings.json").write_text(
        json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_API_KEY": "bench",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "GEMINI_CLI_NO_RELAUNCH": "true",
    }
    if lean:
        Path(workdir, ".gemini").mkdir()
        Path(workdir, ".gemini", "settings.json").write_text(json.dumps(WORKSPACE_SETTINGS))
        Path(workdir, "system.md").write_text(SYSTEM_PROMPT)
        env["GEMINI_SYSTEM_MD"] = str(Path(workdir, "system.md"))
    return env


async def measure(gemini: str, lean: bool, reply: Reply, limit: float) -> tuple[int, int, int, int, float]:
    async with trio.open_nursery() as nursery:
        fake = await FakeGemini().start(nursery)
        fake.replies.default = reply
        with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as workdir:
            env = prepare(home, workdir, lean, fake.base_url)
            started = time.perf_counter()
            with trio.move_on_after(limit):
                await trio.run_process(
                    build_argv(gemini, "gemini-2.5-flash"),
                    stdin=PROMPT,
                    capture_stdout=True,
                    capture_stderr=True,
                    env=env,
                    cwd=workdir,
                    check=False,
                )
            elapsed = time.perf_counter() - started
        calls = fake.generate_requests()
        body = calls[0].json() if calls else {}
        nursery.cancel_scope.cancel()
        return (
            len(calls),
            len(calls[0].body) if calls else 0,
            len(json.dumps(body.get("systemInstruction", ""))),
            len(json.dumps(body.get("tools", ""))),
            elapsed,
        )


async def main(gemini: str) -> None:
    version = (
        (await trio.run_process([gemini, "--version"], capture_stdout=True, check=False))
        .stdout.decode()
        .strip()
    )
    lines = [
        f"gemini-cli {version}; prompt {PROMPT.decode()!r}",
        f"{'variant':<40}{'model calls':>12}{'bytes/call':>12}{'system B':>10}{'tools B':>9}{'wall s':>8}",
    ]
    for name, lean, reply, limit in [
        ("CLI defaults, answered", False, Reply(), 60.0),
        ("relaybox settings, answered", True, Reply(), 60.0),
        ("CLI defaults, upstream 429 (cut at 20 s)", False, Reply(status=429, error_message="quota"), 20.0),
        ("relaybox settings, upstream 429", True, Reply(status=429, error_message="quota"), 20.0),
    ]:
        calls, size, system, tools, elapsed = await measure(gemini, lean, reply, limit)
        lines.append(f"{name:<40}{calls:>12}{size:>12,}{system:>10,}{tools:>9,}{elapsed:>8.2f}")
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('gemini_cli_request_size', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = REPO / "tests/cli/node_modules/.bin/gemini"
    parser.add_argument("--gemini", default=str(default) if default.exists() else shutil.which("gemini"))
    args = parser.parse_args()
    if not args.gemini:
        raise SystemExit("no gemini CLI found: npm ci --prefix tests/cli, or pass --gemini")
    trio.run(main, args.gemini)
