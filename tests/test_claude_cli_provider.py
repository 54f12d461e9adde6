"""The real Claude Code CLI (npm) as the claude-cli provider, talking to a fake Anthropic API."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import httpx
import openai
import pytest
import trio

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import claude_executable, claude_provider, eventually, openai_provider, serve, settings_for


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="sk-client", max_retries=0, timeout=60)


def processes_in(workdir: Path) -> list[int]:
    """Pids of live processes whose working directory is `workdir` (the CLI's sandbox)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == str(workdir):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def claude() -> str:
    return claude_executable()


async def test_sdk_non_streaming_through_the_real_cli(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(Reply(text="Paris is the capital.", prompt_tokens=30, completion_tokens=6))
    async with serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay:
        raw = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.with_raw_response.create(
                model="sonnet",
                messages=[
                    {"role": "system", "content": "Answer in one sentence."},
                    {"role": "user", "content": "Capital of France?"},
                ],
            )
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Paris is the capital."
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 6)
    assert raw.headers["x-provider"] == "claude-cli" and raw.headers["x-model"] == "sonnet"
    assert len(fake_anthropic.message_requests()) == 1, "one model call per request (no hidden title call)"
    upstream = fake_anthropic.message_requests()[-1]
    body = upstream.json()
    assert upstream.headers["x-api-key"] == "sk-ant-test-child"
    assert body["tools"] == []
    system_texts = [block["text"] for block in body["system"]]
    assert "Answer in one sentence." in system_texts
    assert not any("interactive agent" in text for text in system_texts), (
        "the CLI's own agent prompt was sent"
    )
    user_text = "".join(part["text"] for part in body["messages"][-1]["content"] if part["type"] == "text")
    assert "Capital of France?" in user_text
    # Lean flags: the request the CLI sends upstream stays small (about 1.2 kB for a short prompt).
    assert len(upstream.body) < 4000


async def test_sdk_streaming_through_the_real_cli(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(Reply(text="one two three four", pieces=4, chunk_delay=0.05))
    async with serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay:

        def consume() -> list[openai.types.chat.ChatCompletionChunk]:
            return list(
                sdk(relay.base_url).chat.completions.create(
                    model="claude-sonnet-4-5",
                    stream=True,
                    stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": "count"}],
                )
            )

        chunks = await trio.to_thread.run_sync(consume)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "one two three four"
    assert len(texts) == 4
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [7]
    assert fake_anthropic.message_requests()[-1].json()["model"] == "claude-sonnet-4-5"


async def test_conversation_is_flattened_with_roles(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    async with serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay:
        await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="haiku",
                messages=[
                    {"role": "user", "content": "My name is Ada."},
                    {"role": "assistant", "content": "Hello Ada."},
                    {"role": "user", "content": "What is my name?"},
                ],
            )
        )
    body = fake_anthropic.message_requests()[-1].json()
    prompt = "".join(part["text"] for part in body["messages"][-1]["content"] if part["type"] == "text")
    assert '<turn role="user">\nMy name is Ada.\n</turn>' in prompt
    assert '<turn role="assistant">\nHello Ada.\n</turn>' in prompt
    assert prompt.rstrip().endswith("What is my name?")


async def test_expired_login_marks_needs_login_and_falls_back(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    fake_anthropic.replies.push(Reply(status=401, error_message="OAuth token has expired."))
    settings = settings_for(
        tmp_path,
        claude_provider(claude, fake_anthropic.base_url),
        openai_provider("backup", fake_openai.base_url, models=("sonnet",)),
        default_provider="claude-cli",
    )
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client:
        response = await client.post(
            "/v1/chat/completions", json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
        )
        health = (await client.get("/health")).json()
    assert response.status_code == 200
    assert response.headers["x-provider"] == "backup" and response.headers["x-fallback-used"] == "true"
    assert "fallback after claude-cli/sonnet failed (auth)" in response.headers["x-router-reason"]
    assert health["providers"]["claude-cli"]["health"] == "needs-login"
    assert "claude /login" in health["providers"]["claude-cli"]["last_failure"]


async def test_usage_limit_without_fallback_is_429(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(
        Reply(status=429, error_message="You've hit your limit", headers={"retry-after": "60"})
    )
    async with (
        serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client,
    ):
        response = await client.post(
            "/v1/chat/completions", json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
        )
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in response.headers


async def test_client_disconnect_kills_the_cli_within_a_second(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(Reply(text="x" * 40, pieces=40, chunk_delay=0.25))  # ten seconds of stream
    async with serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay:
        workdir = Path(relay.system.settings.data_dir) / "cli-workdir"
        host, port = relay.base_url.removeprefix("http://").split(":")
        body = b'{"model": "sonnet", "stream": true, "messages": [{"role": "user", "content": "go"}]}'
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        await sock.connect((host, int(port)))
        await sock.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s:%s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (host.encode(), port.encode(), len(body), body)
        )
        received = b""
        with trio.fail_after(30):
            while b'"content":"x"' not in received:
                received += await sock.recv(65536)
        assert processes_in(workdir), "the CLI should be running mid-stream"
        sock.close()
        took = await eventually(lambda: not processes_in(workdir), within=1.0)
        assert took < 1.0
        provider = relay.system.providers["claude-cli"]
        await eventually(lambda: not provider.statistics().in_flight, within=2.0)
        # The attempt's end reaches the router through its mailbox, a moment after it leaves in_flight.
        await eventually(lambda: "claude-cli/sonnet" in relay.system.router.statistics().outcomes, within=2.0)
        router = relay.system.router.statistics()
    assert router.outcomes["claude-cli/sonnet"].cancelled == 1


async def test_stalled_upstream_times_out_and_leaves_no_process(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(Reply(stall=True))
    provider = claude_provider(claude, fake_anthropic.base_url, idle_timeout=3.0)
    async with (
        serve(settings_for(tmp_path, provider)) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client,
    ):
        response = await client.post(
            "/v1/chat/completions", json={"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}
        )
        workdir = Path(relay.system.settings.data_dir) / "cli-workdir"
        leftover = processes_in(workdir)
    assert response.status_code == 503
    assert "timeout" in response.json()["error"]["message"]
    assert leftover == []


async def test_tool_call_from_the_cli_text_reaches_the_client(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.replies.push(
        Reply(
            text='I will look.<tool_call>{"name": "read_file", "arguments": {"path": "README.md"}}</tool_call>',
            pieces=9,
        )
    )
    tool = {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
    async with serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                sdk(relay.base_url).chat.completions.create(
                    model="sonnet",
                    stream=True,
                    tools=[tool],
                    messages=[{"role": "user", "content": "Read the README"}],
                )
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert text == "I will look."
    assert calls[0].function.name == "read_file" and calls[0].function.arguments == '{"path": "README.md"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    prompt = fake_anthropic.message_requests()[-1].body.decode()
    assert "read_file" in prompt and "<tool_call>" in prompt


async def test_images_to_a_cli_only_setup_are_a_clear_400(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    async with (
        serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "sonnet",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        ],
                    }
                ],
            },
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "capability_missing" and "does not take images" in error["message"]
    assert fake_anthropic.message_requests() == [], "nothing was spawned"


async def test_warm_pool_answers_from_a_waiting_process_and_replaces_it(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    settings = settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url, warm=1))
    workdir = Path(settings.data_dir) / "cli-workdir"

    def ask(system: str | None) -> dict:
        return {
            "model": "sonnet",
            "messages": ([{"role": "system", "content": system}] if system else [])
            + [{"role": "user", "content": "hi"}],
        }

    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=60) as client,
    ):
        pool = relay.system.providers["claude-cli"].transport.pool  # type: ignore[attr-defined]
        await eventually(lambda: pool.statistics().idle == 1, within=30)
        warm = await client.post("/v1/chat/completions", json=ask(None))
        await eventually(lambda: pool.statistics().idle == 1, within=30)  # replaced
        cold = await client.post("/v1/chat/completions", json=ask("You are terse."))
        # A one-off system prompt starts no speculative process; one that comes back does.
        assert pool.statistics().started == 2 and pool.statistics().idle == 1
        again = await client.post("/v1/chat/completions", json=ask("You are terse."))
        await eventually(lambda: pool.statistics().started == 3 and pool.statistics().idle == 1, within=30)
        warm_again = await client.post("/v1/chat/completions", json=ask("You are terse."))
        await eventually(lambda: pool.statistics().idle == 1, within=30)
        statistics = pool.statistics()
        waiting = processes_in(workdir)
    for answer in (warm, cold, again, warm_again):
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert (statistics.hits, statistics.misses) == (2, 2)
    assert statistics.retired >= 1  # the default-prompt process made room for the terse one
    assert len(waiting) == 1, "one process waits, bounded by the pool size"
    systems = [json.loads(r.body)["system"] for r in fake_anthropic.requests if r.path.endswith("/messages")]
    assert any("You are terse." in str(s) for s in systems)
    assert processes_in(workdir) == [], "the pool stops with relaybox"


async def test_sampling_settings_are_ignored_not_refused(
    tmp_path: Path, claude: str, fake_anthropic: FakeAnthropic
) -> None:
    """The CLI takes no temperature, token limit or stop sequence: the request is answered whole,
    and none of them reaches the upstream."""
    fake_anthropic.replies.push(Reply(text="Paris is the capital of France.", completion_tokens=7))
    async with serve(settings_for(tmp_path, claude_provider(claude, fake_anthropic.base_url))) as relay:
        completion = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="sonnet",
                temperature=0.2,
                max_tokens=3,
                stop=["capital"],
                messages=[{"role": "user", "content": "Capital of France?"}],
            )
        )
    assert completion.choices[0].message.content == "Paris is the capital of France."
    body = fake_anthropic.message_requests()[-1].json()
    assert body.get("temperature") != 0.2 and body["max_tokens"] != 3 and "stop_sequences" not in body
