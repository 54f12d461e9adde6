"""The Claude Code CLI as a transport: one `claude -p` process per request.

Process hygiene: the prompt goes to stdin (never argv: E2BIG on long prompts); the child
runs in its own process group with a sanitised environment and an empty working directory;
on cancellation, timeout or client disconnect the whole group gets SIGTERM, then SIGKILL
after a grace period, so no `claude` process outlives its request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import trio
from relaybox.actors.transports.base import Emit
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.claude_cli_wire import (
    ClaudeStreamDecoder,
    SystemPromptStrategy,
    build_argv,
    build_prompt,
    classify_error,
)
from relaybox.protocol.errors import FailureKind, ProviderFailure

# What the child inherits from relaybox's environment; everything else must be configured.
# An inherited ANTHROPIC_API_KEY would silently replace the subscription login, and an
# inherited CLAUDECODE makes the CLI refuse to start.
INHERITED = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
)
KILL_GRACE = 0.5
STDOUT_LINE_LIMIT = 16 * 1024 * 1024


def child_environment(parent: Mapping[str, str], configured: Mapping[str, str]) -> dict[str, str]:
    env = {key: parent[key] for key in INHERITED if key in parent}
    # relaybox falls back to other providers itself; retries inside the CLI only delay that
    # (it retries a 401 for minutes by default).
    env["CLAUDE_CODE_MAX_RETRIES"] = "0"
    env["DISABLE_AUTOUPDATER"] = "1"
    # Without this the CLI makes a second, hidden model call per request to title the
    # "session": double the requests on the user's quota for nothing a proxy needs.
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    env.update(configured)
    return env


class ClaudeCliTransport:
    def __init__(
        self,
        *,
        executable: str,
        workdir: str,
        system_prompt: SystemPromptStrategy = SystemPromptStrategy.REPLACE,
        env: Mapping[str, str] | None = None,
        parent_env: Mapping[str, str] | None = None,
    ) -> None:
        self.executable = executable
        self.workdir = workdir
        self.system_prompt = system_prompt
        self._env = child_environment(os.environ if parent_env is None else parent_env, env or {})
        self.spawned = 0

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "claude-cli",
            "executable": self.executable,
            "system_prompt_strategy": self.system_prompt.value,
            "spawned": self.spawned,
        }

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        await trio.Path(self.workdir).mkdir(parents=True, exist_ok=True)
        yield

    async def run(self, request: ChatRequest, model: str, emit: Emit) -> str:
        if request.has_images():
            raise ProviderFailure(FailureKind.UNSUPPORTED, "the Claude CLI provider does not take images yet")
        argv = build_argv(
            self.executable,
            model,
            request.system_text() if self.system_prompt is not SystemPromptStrategy.INLINE else "",
            self.system_prompt,
        )
        prompt = build_prompt(request, self.system_prompt).encode()
        decoder = ClaudeStreamDecoder(now=time.time())
        stderr_tail = bytearray()
        stderr_done = trio.Event()
        # An exception raised inside the nursery would come out wrapped in an ExceptionGroup;
        # keep it aside and raise it bare once the process group is gone.
        error: Exception | None
        async with trio.open_nursery() as nursery:
            try:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        argv,
                        stdin=prompt,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        env=self._env,
                        cwd=self.workdir,
                        start_new_session=True,
                        check=False,
                        deliver_cancel=_kill_group,
                    )
                )
            except OSError as spawn_error:
                error = ProviderFailure(FailureKind.TRANSPORT, f"cannot start the Claude CLI: {spawn_error}")
            else:
                self.spawned += 1
                nursery.start_soon(_drain, process.stderr, stderr_tail, stderr_done)
                error = await _converse(process, decoder, emit)
                if decoder.finish_reason is None:
                    with trio.move_on_after(0.5):  # the error message may still be in the pipe
                        await stderr_done.wait()
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        if decoder.finish_reason is not None:
            return decoder.finish_reason
        stderr = stderr_tail.decode("utf-8", "replace").strip()
        code = process.returncode
        if stderr:
            raise classify_error(stderr)
        raise ProviderFailure(
            FailureKind.TRANSPORT, f"the Claude CLI exited with code {code} without an answer"
        )


async def _converse(process: trio.Process, decoder: ClaudeStreamDecoder, emit: Emit) -> Exception | None:
    """Read the CLI's answer to the end; return what went wrong rather than raise it."""
    assert process.stdout is not None
    try:
        await _read_lines(process.stdout, decoder, emit)
        if decoder.finish_reason is not None:
            # The answer is complete; give the CLI a moment to exit on its own.
            with trio.move_on_after(2):
                await process.wait()
        else:
            await process.wait()
    except Exception as error:
        return error
    finally:
        _signal_group(process, signal.SIGKILL if decoder.finish_reason is None else signal.SIGTERM)
    return None


async def _read_lines(stdout: trio.abc.ReceiveStream, decoder: ClaudeStreamDecoder, emit: Emit) -> None:
    buffer = bytearray()
    while True:
        chunk = await stdout.receive_some(65536)
        if not chunk:
            if buffer:
                for event in decoder.feed(bytes(buffer)):
                    await emit(event)
            return
        buffer += chunk
        while (newline := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            for event in decoder.feed(line):
                await emit(event)
        if len(buffer) > STDOUT_LINE_LIMIT:
            raise ProviderFailure(FailureKind.TRANSPORT, "the Claude CLI printed an over-long line")


async def _drain(stream: trio.abc.ReceiveStream, tail: bytearray, done: trio.Event, keep: int = 8192) -> None:
    while chunk := await stream.receive_some(65536):
        tail += chunk
        del tail[:-keep]
    done.set()


def _signal_group(process: trio.Process, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def _kill_group(process: trio.Process) -> None:
    """SIGTERM to the whole group, SIGKILL after a grace period: grandchildren go too."""
    _signal_group(process, signal.SIGTERM)
    with trio.move_on_after(KILL_GRACE):
        await process.wait()
    _signal_group(process, signal.SIGKILL)
    await process.wait()
