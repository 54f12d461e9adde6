"""The real Continue CLI (npm `@continuedev/cli`, `cn`) and Cline CLI (npm `cline`), installed into
tests/cli by tests/run, as clients of a running relaybox's OpenAI-compatible API, with the settings
docs/clients.md gives: headless, in a throwaway HOME, with nothing but loopback to talk to."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx
import trio
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import Running, cli_executable, eventually, openai_provider, serve, settings_for

PROMPT = "What is relaybox?"
ANSWER = "Relaybox answered the coding agent through the fake upstream."

# Continue's config.yaml, as docs/clients.md gives it.
CONTINUE_CONFIG = """\
name: relaybox
version: 1.0.0
schema: v1
models:
  - name: relaybox
    provider: openai
    model: auto
    apiBase: {base_url}/v1
    apiKey: {key}
"""


def agent_env(home: Path, **extra: str) -> dict[str, str]:
    """A bare environment: HOME is the test's own (no global config read or written), no proxy."""
    node = shutil.which("node")
    return {
        "PATH": ":".join(dict.fromkeys([os.path.dirname(node) if node else "/usr/bin", "/usr/bin", "/bin"])),
        "HOME": str(home),
        # Both CLIs look up their vendor's hosts in the background (a version check, telemetry,
        # feature flags) and a process cannot exit while such a lookup is pending: where DNS does
        # not answer at all, glibc's default (5 s, 2 tries) would add seconds to every run.
        "RES_OPTIONS": "timeout:1 attempts:1",
        **extra,
    }


async def client_key(relay: Running, name: str) -> str:
    key = new_key()
    assert await relay.system.storage.create_key(ApiKey(name, key_hash(key), shown_prefix(key)))
    assert relay.system.keys is not None
    await relay.system.keys.load()
    return key


async def run_agent(
    args: Sequence[str], *, env: dict[str, str], cwd: Path, within: float = 120.0
) -> subprocess.CompletedProcess[bytes]:
    """Run a CLI in its own process group, killed whole on a timeout (`cline` is a Node wrapper
    around a compiled binary, which would outlive the wrapper alone)."""

    async def kill_group(process: trio.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    with trio.fail_after(within):
        return await trio.run_process(
            list(args),
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            cwd=str(cwd),
            check=False,
            start_new_session=True,
            deliver_cancel=kill_group,
        )


async def logged_rows(relay: Running, key: str, count: int) -> list[dict]:
    await eventually(lambda: relay.system.recorder.written >= count, within=10)
    async with httpx.AsyncClient(base_url=relay.base_url, headers={"x-api-key": key}) as client:
        return (await client.get("/api/requests", params={"limit": 10})).json()["data"]


def failure(result: subprocess.CompletedProcess[bytes]) -> str:
    return f"exit {result.returncode}\nstdout: {result.stdout.decode()[-2000:]}\nstderr: {result.stderr.decode()[-2000:]}"


def assert_agent_request(fake: FakeOpenAI) -> None:
    """What an agent sends: its system prompt, its tools, the user's prompt, streamed."""
    bodies = [request.json() for request in fake.chat_requests()]
    assert bodies, "the fake upstream got no request"
    body = bodies[0]
    assert body["stream"] is True and body["tools"], body
    assert body["messages"][0]["role"] == "system"
    assert PROMPT in json.dumps(body["messages"])


async def test_continue_cli_as_client_answered_by_an_openai_provider(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    cn = cli_executable("cn")
    fake_openai.replies.default = Reply(text=ANSWER, pieces=3)
    work = tmp_path / "work"
    work.mkdir()
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        key = await client_key(relay, "continue-cli")
        config = tmp_path / "continue-config.yaml"
        config.write_text(CONTINUE_CONFIG.format(base_url=relay.base_url, key=key))
        env = agent_env(
            tmp_path,  # ~/.continue: sessions, logs, permissions.yaml
            # Its OpenTelemetry metrics (only ever on with an OTEL_* endpoint set; off regardless).
            CONTINUE_CLI_ENABLE_TELEMETRY="0",
            CONTINUE_METRICS_ENABLED="0",
            FORCE_NO_TTY="1",  # never read stdin or start the terminal UI
        )
        # Its check for a newer version (api.continue.dev, at start-up) has no switch: offline it
        # fails and is ignored. Headless `-p` prints the answer and exits.
        result = await run_agent([cn, "-p", "--config", str(config), PROMPT], env=env, cwd=work)
        assert result.returncode == 0, failure(result)
        rows = await logged_rows(relay, key, len(fake_openai.chat_requests()))
    assert ANSWER in result.stdout.decode(), failure(result)
    assert_agent_request(fake_openai)
    assert rows and {(row["client"], row["model_requested"], row["status"]) for row in rows} == {
        ("key:continue-cli", "auto", "success")
    }, rows


async def test_cline_cli_as_client_answered_by_an_openai_provider(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    cline = cli_executable("cline")
    fake_openai.replies.default = Reply(text=ANSWER, pieces=3)
    work = tmp_path / "work"
    work.mkdir()
    # --data-dir keeps all of Cline's state here and runs it in its own process ("sandbox
    # mode"); without it, `cline` starts a background hub daemon that outlives the command.
    data = tmp_path / "cline-data"
    (data / "settings").mkdir(parents=True)
    (data / "settings" / "global-settings.json").write_text(
        json.dumps({"telemetryOptOut": True, "autoUpdateEnabled": False})
    )
    env = agent_env(
        tmp_path,  # the wrapper writes ~/.cline/cli-node-extra-ca-certs.pem
        CLINE_NO_AUTO_UPDATE="1",
        # In 3.0.65 this only keeps the PostHog feature-flag client (data.cline.bot) from starting.
        IS_TEST="true",
    )
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        key = await client_key(relay, "cline-cli")
        # API provider "OpenAI Compatible" (id `openai-compatible`), base URL, key, model id.
        auth = await run_agent(
            [
                cline,
                "auth",
                "--data-dir",
                str(data),
                "--provider",
                "openai-compatible",
                "--baseurl",
                f"{relay.base_url}/v1",
                "--apikey",
                key,
                "--modelid",
                "auto",
            ],
            env=env,
            cwd=work,
        )
        assert auth.returncode == 0, failure(auth)
        # A prompt and no TTY: one headless turn, then it exits.
        result = await run_agent([cline, "--data-dir", str(data), PROMPT], env=env, cwd=work)
        assert result.returncode == 0, failure(result)
        rows = await logged_rows(relay, key, len(fake_openai.chat_requests()))
    assert ANSWER in result.stdout.decode(), failure(result)
    assert_agent_request(fake_openai)
    assert rows and {(row["client"], row["model_requested"], row["status"]) for row in rows} == {
        ("key:cline-cli", "auto", "success")
    }, rows
