"""The real Codex CLI (npm `@openai/codex`, installed into tests/cli by tests/run) as a client of
relaybox's Responses API, with the configuration docs/clients.md gives: `codex exec` headless, in
a throwaway CODEX_HOME, doing a task of several steps with its shell tool, answered by a fake
OpenAI chat-completions upstream, a fake Anthropic upstream, and the real Claude CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import trio
from relaybox.storage.records import AttemptRecord

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import (
    Running,
    api_provider,
    claude_executable,
    claude_provider,
    cli_executable,
    openai_provider,
    serve,
    settings_for,
)
from tests.test_coding_agent_clients import agent_env

TASK = "Create hello.txt containing relaybox-was-here, then show me what it holds."
FINAL = "hello.txt now holds relaybox-was-here."
# The shell computes each step's marker, so the marker appears in a tool's output and never in the
# command that printed it (which the conversation also carries).
WRITE = "printf 'relaybox-was-here\\n' > hello.txt && echo STEP-$((0+1))-DONE"
READ = "cat hello.txt && echo STEP-$((1+1))-DONE"

# The Codex configuration docs/clients.md gives, with relaybox's address.
CODEX_CONFIG = """\
model = "{model}"
model_provider = "relaybox"

[model_providers.relaybox]
name = "relaybox"
base_url = "{base_url}/v1"
wire_api = "responses"
env_key = "RELAYBOX_API_KEY"
request_max_retries = 0
stream_max_retries = 0
"""


def next_step(conversation: str) -> tuple[str, str] | None:
    """The scripted model: write the file, read it back, then answer (None)."""
    if "STEP-2-DONE" in conversation:
        return None
    if "STEP-1-DONE" in conversation:
        return "exec_command", json.dumps({"cmd": READ})
    return "exec_command", json.dumps({"cmd": WRITE})


def scripted_reply(body: dict[str, Any]) -> Reply:
    step = next_step(json.dumps(body))
    if step is None:
        return Reply(text=FINAL)
    return Reply(text="", tool_call=step)


def scripted_cli_reply(body: dict[str, Any]) -> Reply:
    """The same model behind the Claude CLI, which relaybox gives the tools in its prompt and whose
    calls it reads back out of the text."""
    step = next_step(json.dumps(body))
    if step is None:
        return Reply(text=FINAL)
    name, arguments = step
    return Reply(text=f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>')


def configured_codex_home(base_url: str, model: str, home: Path, workdir: Path) -> Path:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(CODEX_CONFIG.format(model=model, base_url=base_url))
    workdir.mkdir()
    return codex_home


async def run_codex(base_url: str, model: str, home: Path, workdir: Path) -> CompletedProcess[bytes]:
    codex_home = configured_codex_home(base_url, model, home, workdir)
    env = agent_env(home, CODEX_HOME=str(codex_home), RELAYBOX_API_KEY="unused-without-keys")
    command = [
        cli_executable("codex"),
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "--cd",
        str(workdir),
        TASK,
    ]
    with trio.fail_after(120):
        return await trio.run_process(
            command, env=env, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )


async def answered_attempts(relay: Running) -> list[AttemptRecord]:
    rows = await relay.system.storage.recent(limit=50)
    return [row for row in rows if row.status == "success" and row.provider == "upstream"]


def assert_task_done(result: CompletedProcess[bytes], workdir: Path) -> None:
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output[-3000:]
    assert (workdir / "hello.txt").read_text() == "relaybox-was-here\n"
    assert FINAL in output, output[-3000:]


@pytest.mark.parametrize("upstream", ["openai-chat", "anthropic"])
async def test_codex_finishes_a_shell_task_through_an_http_upstream(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, upstream: str
) -> None:
    if upstream == "openai-chat":
        fake_openai.answer_with = scripted_reply
        provider = openai_provider("upstream", fake_openai.base_url)
        model, seen = "gpt-4o-mini", fake_openai.chat_requests
    else:
        fake_anthropic.answer_with = scripted_reply
        provider = api_provider(
            "anthropic", "upstream", fake_anthropic.base_url, models=("claude-haiku-4-5",)
        )
        model, seen = "claude-haiku-4-5", fake_anthropic.message_requests
    async with serve(settings_for(tmp_path, provider)) as relay:
        result = await run_codex(relay.base_url, model, tmp_path / "home", tmp_path / "work")

        with trio.fail_after(10):  # the recorder writes in batches
            while len(await answered_attempts(relay)) < 3:  # noqa: ASYNC110 - polling the database
                await trio.sleep(0.05)
    assert_task_done(result, tmp_path / "work")
    bodies = [json.dumps(request.json()) for request in seen()]
    assert len(bodies) >= 3
    assert any("STEP-1-DONE" in body and "STEP-2-DONE" not in body for body in bodies)
    assert any("STEP-2-DONE" in body for body in bodies)


async def test_codex_finishes_a_shell_task_answered_by_the_claude_cli(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.answer_with = scripted_cli_reply
    provider = claude_provider(claude_executable(), fake_anthropic.base_url)
    async with serve(settings_for(tmp_path, provider)) as relay:
        result = await run_codex(relay.base_url, "sonnet", tmp_path / "home", tmp_path / "work")
    assert_task_done(result, tmp_path / "work")
    prompts = [request.body.decode() for request in fake_anthropic.message_requests()]
    assert any(re.search(r"exec_command", prompt) and "<tool_call>" in prompt for prompt in prompts)
    assert any("STEP-2-DONE" in prompt for prompt in prompts)
