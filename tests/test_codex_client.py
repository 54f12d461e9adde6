"""The real Codex CLI (npm `@openai/codex`, installed into tests/cli by tests/run) as a client of
relaybox's Responses API, at its defaults with only the configuration docs/clients.md gives:
`codex exec` headless in a git repository (its read-only sandbox, no approvals, its tools as it
sends them), a task of two shell steps and an answer, then `codex exec resume --last` for a second
turn, answered by a fake OpenAI chat-completions upstream, a fake Anthropic upstream, and the real
Claude CLI. What Codex sends on both turns is compared with tests/golden/codex_request_*.json."""

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
from tests.fakes.recording_proxy import RecordingProxy
from tests.fakes.scripts import Reply
from tests.harness import (
    Running,
    api_provider,
    claude_executable,
    claude_provider,
    cli_executable,
    openai_provider,
    settings_for,
)
from tests.test_coding_agent_clients import agent_env, check_turns, npm_version, run_agent, serve_recorded

FILE_TEXT = "relaybox-was-here"
TASK = "What does hello.txt hold, and how many bytes is it?"
FINAL = "hello.txt holds relaybox-was-here: 18 bytes."
RESUMED_PROMPT = "Which commands did you run for that?"
SECOND_ANSWER = "I ran cat and wc on hello.txt."
# The shell computes each step's marker, so the marker appears in a tool's output and never in the
# command that printed it (which the conversation also carries). Both only read: Codex's default
# sandbox for `codex exec` is read-only.
READ = "cat hello.txt && echo STEP-$((0+1))-DONE"
COUNT = "wc -c < hello.txt && echo STEP-$((1+1))-DONE"

# The Codex configuration docs/clients.md gives, with relaybox's address; nothing else (retries,
# sandbox, approvals, tools, reasoning: Codex's own defaults).
CODEX_CONFIG = """\
model = "{model}"
model_provider = "relaybox"

[model_providers.relaybox]
name = "relaybox"
base_url = "{base_url}/v1"
wire_api = "responses"
env_key = "RELAYBOX_API_KEY"
"""


def next_step(conversation: str) -> tuple[str, str] | str:
    """The scripted model: the resumed question's answer; else read the file, count its bytes,
    then answer (a text)."""
    if RESUMED_PROMPT in conversation:
        return SECOND_ANSWER
    if "STEP-2-DONE" in conversation:
        return FINAL
    if "STEP-1-DONE" in conversation:
        return "exec_command", json.dumps({"cmd": COUNT})
    return "exec_command", json.dumps({"cmd": READ})


def scripted_reply(body: dict[str, Any]) -> Reply:
    step = next_step(json.dumps(body))
    if isinstance(step, str):
        return Reply(text=step)
    return Reply(text="", tool_call=step)


def scripted_cli_reply(body: dict[str, Any]) -> Reply:
    """The same model behind the Claude CLI, which relaybox gives the tools in its prompt and whose
    calls it reads back out of the text."""
    step = next_step(json.dumps(body))
    if isinstance(step, str):
        return Reply(text=step)
    name, arguments = step
    return Reply(text=f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>')


def configured_codex_home(base_url: str, model: str, home: Path, workdir: Path) -> Path:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(CODEX_CONFIG.format(model=model, base_url=base_url))
    workdir.mkdir()
    (workdir / "hello.txt").write_text(FILE_TEXT + "\n")
    return codex_home


async def run_codex_session(
    proxy: RecordingProxy, model: str, home: Path, workdir: Path
) -> tuple[CompletedProcess[bytes], CompletedProcess[bytes], int]:
    """`codex exec TASK`, then `codex exec resume --last PROMPT` in the same project; and how many
    requests the first turn made."""
    codex_home = configured_codex_home(proxy.base_url, model, home, workdir)
    # A project, as Codex expects one: a git repository (else it wants --skip-git-repo-check).
    await trio.run_process(["git", "init", "--quiet", str(workdir)], capture_stdout=True, capture_stderr=True)
    env = agent_env(home, CODEX_HOME=str(codex_home), RELAYBOX_API_KEY="unused-without-keys")
    codex = cli_executable("codex")
    first = await run_agent([codex, "exec", TASK], env=env, cwd=workdir)
    first_turn = len(proxy.posts("/responses"))
    resumed = await run_agent([codex, "exec", "resume", "--last", RESUMED_PROMPT], env=env, cwd=workdir)
    return first, resumed, first_turn


async def answered_attempts(relay: Running) -> list[AttemptRecord]:
    rows = await relay.system.storage.recent(limit=50)
    return [row for row in rows if row.status == "success" and row.provider == "upstream"]


def output(result: CompletedProcess[bytes]) -> str:
    return result.stdout.decode() + result.stderr.decode()


def assert_session_done(
    first: CompletedProcess[bytes], resumed: CompletedProcess[bytes], workdir: Path
) -> None:
    assert first.returncode == 0, output(first)[-3000:]
    assert "STEP-2-DONE" in output(first), output(first)[-3000:]
    assert FINAL in first.stdout.decode(), output(first)[-3000:]
    assert resumed.returncode == 0, output(resumed)[-3000:]
    assert SECOND_ANSWER in resumed.stdout.decode(), output(resumed)[-3000:]
    assert (workdir / "hello.txt").read_text() == FILE_TEXT + "\n"


def assert_history_resumed(upstream_bodies: list[str]) -> None:
    """The first upstream request after the resume carries the whole first turn: the task, both
    commands' output, the answer, and the new prompt."""
    assert any("STEP-1-DONE" in body and "STEP-2-DONE" not in body for body in upstream_bodies)
    resumed = next(body for body in upstream_bodies if RESUMED_PROMPT in body)
    for said in (TASK, "STEP-1-DONE", "STEP-2-DONE", FINAL):
        assert said in resumed, said


@pytest.mark.parametrize("upstream", ["openai-chat", "anthropic"])
async def test_codex_finishes_a_shell_task_and_a_resumed_turn_through_an_http_upstream(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, upstream: str
) -> None:
    if upstream == "openai-chat":
        fake_openai.answer_with = scripted_reply
        provider = openai_provider("upstream", fake_openai.base_url)
        seen = fake_openai.chat_requests
    else:
        fake_anthropic.answer_with = scripted_reply
        provider = api_provider(
            "anthropic", "upstream", fake_anthropic.base_url, models=("claude-haiku-4-5",)
        )
        seen = fake_anthropic.message_requests
    work = tmp_path / "work"
    async with serve_recorded(settings_for(tmp_path, provider)) as (relay, proxy):
        # `auto`, as docs/clients.md suggests: relaybox picks the model.
        first, resumed, first_turn = await run_codex_session(proxy, "auto", tmp_path / "home", work)
        with trio.fail_after(10):  # the recorder writes in batches
            while len(await answered_attempts(relay)) < 4:  # noqa: ASYNC110 - polling the database
                await trio.sleep(0.05)
    assert_session_done(first, resumed, work)
    assert first_turn == 3  # two commands, then the answer
    assert_history_resumed([json.dumps(request.json()) for request in seen()])
    check_turns("codex", npm_version("@openai/codex"), proxy, "/responses", first_turn)


async def test_codex_finishes_a_shell_task_and_a_resumed_turn_answered_by_the_claude_cli(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.answer_with = scripted_cli_reply
    provider = claude_provider(claude_executable(), fake_anthropic.base_url)
    work = tmp_path / "work"
    async with serve_recorded(settings_for(tmp_path, provider)) as (_, proxy):
        first, resumed, first_turn = await run_codex_session(proxy, "sonnet", tmp_path / "home", work)
    assert_session_done(first, resumed, work)
    # What relaybox answered from the CLI makes the same history as from an HTTP upstream.
    check_turns("codex", npm_version("@openai/codex"), proxy, "/responses", first_turn)
    prompts = [request.body.decode() for request in fake_anthropic.message_requests()]
    assert any(re.search(r"exec_command", prompt) and "<tool_call>" in prompt for prompt in prompts)
    assert_history_resumed(prompts)
