"""The real Claude Code (npm `@anthropic-ai/claude-code`, the version tests/cli/package.json pins) as a
client of relaybox's Anthropic Messages API, at its defaults: its tools on, its own model choice,
streaming, a first turn and a resumed one (`--continue`), answered by each kind of upstream."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.client_captures import capture_request, check_against_golden
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import (
    Running,
    api_provider,
    claude_executable,
    claude_provider,
    openai_provider,
    serve,
    settings_for,
)
from tests.test_coding_agent_clients import agent_env, failure, npm_version, run_agent, serve_recorded

FIRST, SECOND = "What is relaybox?", "Say it again, shorter."
ANSWERS = ("Relaybox is a gateway.", "A gateway.")
# What Claude Code 2.1.197 says in a system message in the middle of the conversation.
AGENT_LIST = "Available agent types for the Agent tool"


async def client_key(relay: Running) -> str:
    key = new_key()
    assert await relay.system.storage.create_key(ApiKey("claude-code", key_hash(key), shown_prefix(key)))
    assert relay.system.keys is not None
    await relay.system.keys.load()
    return key


async def run_claude(claude: str, home: Path, base_url: str, key: str, *args: str) -> dict:
    """`claude -p` as docs/clients.md sets it up (base URL and key) and nothing else changed."""
    env = agent_env(home, ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY=key)
    result = await run_agent([claude, "-p", "--output-format", "json", *args], env=env, cwd=home, within=120)
    assert result.returncode == 0, failure(result)
    answer = json.loads(result.stdout)
    assert answer["is_error"] is False, failure(result)
    return answer


async def two_turns(relay: Running, home: Path, base_url: str | None = None) -> tuple[dict, dict]:
    """A first turn, then the session resumed (`--continue`), against relaybox or a proxy of it."""
    claude = claude_executable()
    key = await client_key(relay)
    first = await run_claude(claude, home, base_url or relay.base_url, key, FIRST)
    second = await run_claude(claude, home, base_url or relay.base_url, key, "--continue", SECOND)
    return first, second


def is_agent_turn(body: dict) -> bool:
    """The agent's own turns carry its tools: declared, or (through a CLI provider) in the prompt.
    Its side calls (a title for the session) carry none."""
    return bool(body.get("tools")) or "<tools>" in json.dumps(body["messages"])


def answer(body: dict) -> Reply:
    if not is_agent_turn(body):
        return Reply(text="Relaybox question", pieces=1)
    return Reply(text=ANSWERS[SECOND in json.dumps(body["messages"])], pieces=3)


def agent_turns(bodies) -> list[dict]:
    return [body for body in bodies if is_agent_turn(body)]


async def test_claude_code_at_its_defaults_answered_by_an_openai_compatible_upstream(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with = answer
    async with serve_recorded(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as (
        relay,
        proxy,
    ):
        first, second = await two_turns(relay, tmp_path, proxy.base_url)
    assert (first["result"], second["result"]) == ANSWERS
    # What this version sends on each turn, field by field, against what relaybox was checked with.
    turns = [request for request in proxy.posts("/v1/messages") if is_agent_turn(request.json())]
    assert len(turns) == 2, [request.json().get("model") for request in proxy.posts("/v1/messages")]
    label = f"claude-code {npm_version('@anthropic-ai/claude-code')}"
    for name, request in zip(("first", "resumed"), turns, strict=True):
        capture = capture_request(request.method, request.target, request.headers, request.body, client=label)
        check_against_golden(f"claude_code_request_{name}", capture)
    bodies = agent_turns(request.json() for request in fake_openai.chat_requests())
    assert len(bodies) == 2 and all(body["stream"] and len(body["tools"]) >= 20 for body in bodies)
    resumed = bodies[1]["messages"]
    roles = [m["role"] for m in resumed]
    # OpenAI's chat takes a system message anywhere: Claude Code's stays where it was said.
    assert roles[0] == "system" and roles.count("system") == 2, roles
    assert AGENT_LIST in resumed[roles.index("system", 1)]["content"]
    said = json.dumps(resumed)
    assert said.index(FIRST) < said.index(ANSWERS[0]) < said.index(SECOND)


async def test_claude_code_at_its_defaults_answered_by_an_anthropic_upstream(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.answer_with = answer
    anthropic = api_provider(
        "anthropic",
        "anthropic",
        fake_anthropic.base_url,
        models=("claude-sonnet-4-5",),
        accepts_prefixes=("claude-",),
        api_key="sk-ant-upstream",
    )
    async with serve(settings_for(tmp_path, anthropic)) as relay:
        first, second = await two_turns(relay, tmp_path)
    assert (first["result"], second["result"]) == ANSWERS
    bodies = agent_turns(request.json() for request in fake_anthropic.message_requests())
    assert len(bodies) == 2 and all(body["stream"] and len(body["tools"]) >= 20 for body in bodies)
    resumed = bodies[1]
    assert [turn["role"] for turn in resumed["messages"]] == ["user", "assistant", "user"]
    # The mid-conversation system message: a note in the user's turn where it was said.
    first_turn = [block["text"] for block in resumed["messages"][0]["content"]]
    assert FIRST in first_turn[-2] and AGENT_LIST in first_turn[-1] and "<system-reminder>" in first_turn[-1]
    assert AGENT_LIST not in json.dumps(resumed["system"])
    # Claude Code's cache breakpoints reach Anthropic: the system prompt and the latest turn.
    assert resumed["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert resumed["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert json.dumps(resumed).count("cache_control") <= 4


@pytest.mark.parametrize("model", [None, "sonnet"], ids=["its-own-model", "a-model-flag"])
async def test_claude_code_at_its_defaults_answered_by_the_claude_cli_provider(
    tmp_path: Path, fake_anthropic: FakeAnthropic, model: str | None
) -> None:
    """Claude Code as the client, and Claude Code again (on the user's subscription) as the provider."""
    fake_anthropic.answer_with = answer
    home = tmp_path / "client"
    home.mkdir()
    settings = settings_for(tmp_path, claude_provider(claude_executable(), fake_anthropic.base_url))
    async with serve(settings) as relay:
        claude = claude_executable()
        key = await client_key(relay)
        chosen = ("--model", model) if model else ()
        first = await run_claude(claude, home, relay.base_url, key, *chosen, FIRST)
        second = await run_claude(claude, home, relay.base_url, key, *chosen, "--continue", SECOND)
    assert (first["result"], second["result"]) == ANSWERS
    prompts = [
        json.dumps(body["messages"])
        for body in agent_turns(r.json() for r in fake_anthropic.message_requests())
    ]
    assert len(prompts) == 2
    assert prompts[1].index(FIRST) < prompts[1].index(ANSWERS[0]) < prompts[1].index(SECOND)


async def test_the_reachability_check_it_makes_first_is_answered(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Claude Code sends `HEAD /` (no key) before each run; a 404 there showed as an error."""
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        await client_key(relay)  # keys in force: the root answers without one, as /ping does
        async with httpx.AsyncClient(base_url=relay.base_url) as client:
            head, get, models = await client.head("/"), await client.get("/"), await client.get("/v1/models")
    assert head.status_code == 200 and get.status_code == 200 and get.json()["status"] == "ok"
    assert models.status_code == 401
