"""The server-side tool loop over real MCP servers: a small server written with the `mcp` SDK
(tests/mcp_servers/workbench.py), and from npm @modelcontextprotocol/server-filesystem and
server-everything; fake upstreams scripted to call the tools; the OpenAI SDK as the client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import openai
import pytest
import trio
from relaybox.protocol.routing.routes import BUILTIN_ROUTES, NamedRoute
from relaybox.protocol.tool_loop import McpServerSpec, McpSettings

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import (
    REPO,
    Running,
    claude_executable,
    claude_provider,
    cli_executable,
    openai_provider,
    serve,
    settings_for,
)

WORKBENCH = McpServerSpec(
    "bench", command=sys.executable, args=(str(REPO / "tests/mcp_servers/workbench.py"),)
)


def loop_settings(tmp_path: Path, upstream: str, *servers: McpServerSpec, **mcp: Any) -> Any:
    """One OpenAI-compatible upstream, the servers, and the route `workbench` with their tools."""
    routes = {
        **BUILTIN_ROUTES,
        "workbench": NamedRoute("workbench", ("gpt-4o-mini",), tuple(s.name for s in servers)),
    }
    settings = settings_for(tmp_path, openai_provider("upstream", upstream))
    return attrs.evolve(
        settings,
        mcp=McpSettings(servers=servers, **mcp),
        routing=attrs.evolve(settings.routing, routes=routes),
    )


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def script(*steps: Callable[[dict[str, Any]], Reply]) -> Callable[[dict[str, Any]], Reply]:
    """The model's turns, chosen by how many tool results it has seen so far."""

    def answer(body: dict[str, Any]) -> Reply:
        return steps[min(len(tool_messages(body)), len(steps) - 1)](body)

    return answer


def call(name: str, arguments: dict[str, Any]) -> Callable[[dict[str, Any]], Reply]:
    return lambda body: Reply(text="", tool_call=(name, json.dumps(arguments)))


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0, timeout=60)


async def logged_group(relay: Running, count: int) -> list[Any]:
    with trio.fail_after(10):
        while True:
            rows = await relay.system.storage.recent(limit=50)
            if len(rows) >= count:
                return rows
            await trio.sleep(0.05)


async def test_the_model_calls_an_mcp_tool_and_answers_with_its_result(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with = script(
        call("mcp__bench__multiply", {"a": 6, "b": 7}),
        lambda body: Reply(text=f"The product is {tool_messages(body)[0]['content']}.", pieces=3),
    )
    async with serve(loop_settings(tmp_path, fake_openai.base_url, WORKBENCH)) as relay:
        chunks = await trio.to_thread.run_sync(
            lambda: list(
                sdk(relay.base_url).chat.completions.create(
                    model="agent:workbench", stream=True, messages=[{"role": "user", "content": "6 times 7?"}]
                )
            )
        )
        rows = await logged_group(relay, 3)
        totals = (await relay.system.storage.stats(days=1, now=time.time()))["totals"][0]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The product is 42.0."
    first, second = (request.json() for request in fake_openai.chat_requests())
    offered = [tool["function"]["name"] for tool in first["tools"]]
    assert "mcp__bench__multiply" in offered and "mcp__bench__crash" in offered
    multiply = next(t for t in first["tools"] if t["function"]["name"] == "mcp__bench__multiply")
    assert multiply["function"]["parameters"]["required"] == ["a", "b"]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "mcp__bench__multiply"
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": second["messages"][-2]["tool_calls"][0]["id"],
        "content": "42.0",
    }
    assert len({row.request_group_id for row in rows}) == 1, "every step and tool call is one request's"
    tool_rows = [row for row in rows if row.provider == "mcp:bench"]
    assert [(row.model_selected, row.status) for row in tool_rows] == [("multiply", "tool")]
    steps = sorted(row.attempt for row in rows if row.provider == "upstream" and row.status == "success")
    assert steps == [1, 2], "the steps number on: one request with two attempts"
    assert totals["requests"] == 1 and totals["attempts"] == 2, "two steps; a tool call is no attempt"


async def test_tool_errors_and_timeouts_are_fed_back_and_max_steps_ends_clearly(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with = script(
        call("mcp__bench__fail", {"reason": "the disk is on fire"}),
        call("mcp__bench__sleep", {"seconds": 5}),
        call("mcp__bench__multiply", {"a": "x"}),
        call("mcp__bench__multiply", {"a": 1, "b": 1}),
    )
    settings = loop_settings(tmp_path, fake_openai.base_url, WORKBENCH, tool_timeout=0.5, max_steps=4)
    async with serve(settings) as relay:
        completion = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="route:workbench", messages=[{"role": "user", "content": "go"}]
            )
        )
    results = [m["content"] for m in tool_messages(fake_openai.chat_requests()[-1].json())]
    assert "the disk is on fire" in results[0] or "Error executing tool fail" in results[0]
    assert "did not answer within 0.5 s" in results[1]
    assert "validation" in results[2].lower() or "error" in results[2].lower()
    text = completion.choices[0].message.content or ""
    assert "stopped the tool loop after 4 model calls: max_steps (4)" in text
    assert len(fake_openai.chat_requests()) == 4


async def test_a_crashed_server_is_restarted_and_its_tools_come_back(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with = script(
        call("mcp__bench__crash", {}),
        lambda body: Reply(text="It went away."),
    )
    async with serve(loop_settings(tmp_path, fake_openai.base_url, WORKBENCH)) as relay:
        client = sdk(relay.base_url)
        answer = await trio.to_thread.run_sync(
            lambda: client.chat.completions.create(
                model="agent:workbench", messages=[{"role": "user", "content": "x"}]
            )
        )
        server = relay.system.mcp_servers["bench"]
        with trio.fail_after(20):
            while not server.ready or relay.system.supervisor.record("mcp:bench").restarts < 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
        actors = (await httpx.AsyncClient(base_url=relay.base_url).get("/actors")).json()
    assert answer.choices[0].message.content == "It went away."
    crashed = tool_messages(fake_openai.chat_requests()[-1].json())[0]["content"]
    assert "stopped" in crashed or "crashed" in crashed or "closed" in crashed.lower()
    [bench] = [c for c in actors["supervisor"]["children"] if c["name"] == "mcp:bench"]
    assert bench["kind"] == "mcp" and bench["ready"] is True and bench["restarts"] >= 1
    assert "multiply" in bench["tools"]


async def test_client_tools_go_back_to_the_client_and_keys_decide_who_may_use_a_server(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.push(Reply(text="", tool_call=("client_lookup", '{"q": "x"}')))
    private = attrs.evolve(WORKBENCH, keys=("alice",))
    async with serve(loop_settings(tmp_path, fake_openai.base_url, private)) as relay:
        client = sdk(relay.base_url)
        lookup = {"type": "function", "function": {"name": "client_lookup", "parameters": {"type": "object"}}}
        answered = await trio.to_thread.run_sync(
            lambda: client.chat.completions.create(
                model="agent:workbench", tools=[lookup], messages=[{"role": "user", "content": "x"}]
            )
        )
        keys = relay.system.keys
        assert keys is not None
        from tests.test_coding_agent_clients import client_key

        with pytest.raises(openai.BadRequestError, match="the route 'chat' has no tools"):
            await trio.to_thread.run_sync(
                lambda: client.chat.completions.create(
                    model="agent:chat", messages=[{"role": "user", "content": "x"}]
                )
            )
        with pytest.raises(openai.NotFoundError, match="no route named 'nowhere'"):
            await trio.to_thread.run_sync(
                lambda: client.chat.completions.create(
                    model="agent:nowhere", messages=[{"role": "user", "content": "x"}]
                )
            )
        bob = await client_key(relay, "bob")
        with pytest.raises(openai.PermissionDeniedError, match="may not use the MCP servers"):
            await trio.to_thread.run_sync(
                lambda: openai.OpenAI(
                    base_url=relay.base_url + "/v1", api_key=bob, max_retries=0
                ).chat.completions.create(
                    model="agent:workbench", messages=[{"role": "user", "content": "x"}]
                )
            )
    [handed] = answered.choices[0].message.tool_calls or []
    assert handed.function.name == "client_lookup" and answered.choices[0].finish_reason == "tool_calls"
    sent = fake_openai.chat_requests()[0].json()
    assert sent["tools"][0]["function"]["name"] == "client_lookup"


def npm_server(name: str, package_bin: str, *args: str) -> McpServerSpec:
    return McpServerSpec(name, command=cli_executable(package_bin), args=args)


async def test_the_filesystem_server_reads_and_writes_for_the_model(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "todo.txt").write_text("buy milk\n")
    fs = npm_server("fs", "mcp-server-filesystem", str(root))
    fake_openai.answer_with = script(
        call("mcp__fs__read_text_file", {"path": str(root / "todo.txt")}),
        call("mcp__fs__write_file", {"path": str(root / "done.txt"), "content": "milk bought\n"}),
        call("mcp__fs__read_text_file", {"path": "/etc/passwd"}),
        lambda body: Reply(text="Done: " + " | ".join(m["content"] for m in tool_messages(body))),
    )
    async with serve(loop_settings(tmp_path, fake_openai.base_url, fs)) as relay:
        completion = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="agent:workbench", messages=[{"role": "user", "content": "do my todo"}]
            )
        )
        rows = await logged_group(relay, 7)
        health = (await httpx.AsyncClient(base_url=relay.base_url).get("/health")).json()
        notes = relay.system.mcp_servers["fs"].statistics().schema_notes
    text = completion.choices[0].message.content or ""
    assert health["mcp_servers"]["fs"]["ready"] is True and health["mcp_servers"]["fs"]["tools"] >= 10
    assert notes == (), "no Gemini provider is active: its schema notes concern nobody"
    assert "buy milk" in text and (root / "done.txt").read_text() == "milk bought\n"
    assert "denied" in text.lower() or "outside" in text.lower(), "the server keeps to its directory"
    tools = [(row.model_selected, row.status) for row in rows if row.provider == "mcp:fs"]
    assert sorted(tools) == [
        ("read_text_file", "tool"),
        ("read_text_file", "tool_failed"),
        ("write_file", "tool"),
    ]


async def test_the_everything_server_no_secret_reaches_a_tool_and_images_are_a_note(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    everything = npm_server("everything", "mcp-server-everything")
    fake_openai.answer_with = script(
        call("mcp__everything__get-sum", {"a": 2, "b": 3}),
        call("mcp__everything__get-env", {}),
        call("mcp__everything__get-tiny-image", {}),
        lambda body: Reply(text="ok"),
    )
    async with serve(loop_settings(tmp_path, fake_openai.base_url, everything)) as relay:
        await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="agent:workbench", messages=[{"role": "user", "content": "sum, then env"}]
            )
        )
    results = [m["content"] for m in tool_messages(fake_openai.chat_requests()[-1].json())]
    assert "5" in results[0]
    assert "sk-test-upstream" not in results[1] and "PATH" in results[1], "the server gets a bare environment"
    # An image result reaches the model as a note between its text parts, not as the image.
    assert "Here's the image you requested:" in results[2] and "[image content omitted]" in results[2]
    assert "iVBORw0KGgo" not in results[2]


async def test_the_claude_cli_as_the_loops_model(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    def model(body: dict[str, Any]) -> Reply:
        prompt = json.dumps(body)
        if "42.0" in prompt:
            return Reply(text="The CLI says: 42.")
        return Reply(
            text='<tool_call>{"name": "mcp__bench__multiply", "arguments": {"a": 6, "b": 7}}</tool_call>'
        )

    fake_anthropic.answer_with = model
    settings = loop_settings(tmp_path, "http://127.0.0.1:9/v1", WORKBENCH)  # never reached here
    routes = {
        **settings.routing.routes,
        "workbench": NamedRoute("workbench", ("claude-cli:sonnet",), ("bench",)),
    }
    settings = attrs.evolve(
        settings,
        providers=(claude_provider(claude_executable(), fake_anthropic.base_url),),
        routing=attrs.evolve(settings.routing, routes=routes),
    )
    async with serve(settings) as relay:
        completion = await trio.to_thread.run_sync(
            lambda: sdk(relay.base_url).chat.completions.create(
                model="agent:workbench", messages=[{"role": "user", "content": "6 times 7?"}]
            )
        )
    assert completion.choices[0].message.content == "The CLI says: 42."
    prompts = [request.body.decode() for request in fake_anthropic.message_requests()]
    assert any("mcp__bench__multiply" in prompt and "<tools>" in prompt for prompt in prompts)
    assert any("<tool_result" in prompt and "42.0" in prompt for prompt in prompts)


async def test_a_server_that_changes_its_tools_is_listed_again(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with = script(
        call("mcp__bench__learn_greeting", {}), lambda body: Reply(text="learned")
    )
    async with serve(loop_settings(tmp_path, fake_openai.base_url, WORKBENCH)) as relay:
        client = sdk(relay.base_url)
        ask = {"model": "agent:workbench", "messages": [{"role": "user", "content": "learn"}]}
        await trio.to_thread.run_sync(lambda: client.chat.completions.create(**ask))
        server = relay.system.mcp_servers["bench"]
        with trio.fail_after(10):
            while "greet" not in [tool.name for tool in server.tools]:  # noqa: ASYNC110 - the server's own time
                await trio.sleep(0.05)
        await trio.to_thread.run_sync(lambda: client.chat.completions.create(**ask))
    offered = [tool["function"]["name"] for tool in fake_openai.chat_requests()[-1].json()["tools"]]
    assert "mcp__bench__greet" in offered
    assert server.statistics().tool_lists >= 2


async def test_the_loop_answers_the_responses_api_too(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.answer_with = script(
        call("mcp__bench__multiply", {"a": 2, "b": 21}),
        lambda body: Reply(text=f"It is {tool_messages(body)[0]['content']}."),
    )
    async with serve(loop_settings(tmp_path, fake_openai.base_url, WORKBENCH)) as relay:

        def streamed() -> tuple[list[str], str]:
            with sdk(relay.base_url).responses.stream(model="agent:workbench", input="2 x 21?") as stream:
                kinds = [event.type for event in stream]
                return kinds, stream.get_final_response().output_text

        kinds, text = await trio.to_thread.run_sync(streamed)
    assert text == "It is 42.0."
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" not in kinds, "the MCP call stayed inside relaybox"


async def test_a_streamable_http_server_with_headers(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await trio.lowlevel.open_process(
        [sys.executable, str(REPO / "tests/mcp_servers/workbench.py"), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(20):
            while True:
                try:
                    await trio.open_tcp_stream("127.0.0.1", port)
                    break
                except OSError:
                    await trio.sleep(0.1)
        web = McpServerSpec("web", url=f"http://127.0.0.1:{port}/mcp", headers={"x-team": "blue"})
        fake_openai.answer_with = script(
            call("mcp__web__header", {"name": "x-team"}),
            lambda body: Reply(text="team " + tool_messages(body)[0]["content"]),
        )
        async with serve(loop_settings(tmp_path, fake_openai.base_url, web)) as relay:
            completion = await trio.to_thread.run_sync(
                lambda: sdk(relay.base_url).chat.completions.create(
                    model="agent:workbench", messages=[{"role": "user", "content": "which team?"}]
                )
            )
            transport = relay.system.mcp_servers["web"].statistics().transport
    finally:
        server.kill()
        await server.wait()
    assert completion.choices[0].message.content == "team blue"
    assert transport == "streamable-http"


async def test_a_call_to_a_server_that_is_down_is_answered_in_time(autojump_clock: trio.abc.Clock) -> None:
    from relaybox.actors.mcp_server import McpServerActor

    down = McpServerActor(WORKBENCH, tool_timeout=2.0, log_dir="/nonexistent")  # never started
    started = trio.current_time()
    result = await down.call("multiply", {"a": 1, "b": 2})
    assert not result.ok and "did not answer" in result.text
    assert trio.current_time() - started == pytest.approx(7.0), "the tool's timeout and a margin"


async def test_the_loop_is_never_answered_from_the_cache(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """A deterministic request (temperature 0) would be cached; through a tool loop, whose tools can
    change the world, each request runs again."""
    fake_openai.answer_with = script(
        call("mcp__bench__multiply", {"a": 2, "b": 2}), lambda body: Reply(text="4")
    )
    async with serve(loop_settings(tmp_path, fake_openai.base_url, WORKBENCH)) as relay:
        ask = {"model": "agent:workbench", "temperature": 0, "messages": [{"role": "user", "content": "2x2"}]}
        for _ in range(2):
            await trio.to_thread.run_sync(lambda: sdk(relay.base_url).chat.completions.create(**ask))
        calls = relay.system.mcp_servers["bench"].statistics().calls
    assert calls == 2 and len(fake_openai.chat_requests()) == 4
