"""The Claude Code CLI as a transport: one `claude -p` process per request (see cli_process)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
from relaybox.actors.transports.base import Emit
from relaybox.actors.transports.cli_process import ToolAwareEmit, inherited_environment, run_cli
from relaybox.protocol.chat import ChatRequest, ImageRequest
from relaybox.protocol.claude_cli_wire import (
    ClaudeStreamDecoder,
    SystemPromptStrategy,
    build_argv,
    build_prompt,
    classify_error,
)
from relaybox.protocol.errors import FailureKind, ProviderFailure


def child_environment(parent: Mapping[str, str], configured: Mapping[str, str]) -> dict[str, str]:
    env = inherited_environment(parent)
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

    async def run(self, request: ChatRequest | ImageRequest, model: str, emit: Emit) -> str:
        if isinstance(request, ImageRequest):
            raise ProviderFailure(FailureKind.UNSUPPORTED, "the Claude CLI does not generate images")
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
        self.spawned += 1
        tool_aware = ToolAwareEmit(emit, bool(request.tools))
        exited = await run_cli(
            argv, prompt, env=self._env, cwd=self.workdir, decoder=decoder, emit=tool_aware, name="Claude CLI"
        )
        if exited is None:
            assert decoder.finish_reason is not None
            return await tool_aware.finish(decoder.finish_reason)
        if exited.stderr:
            raise classify_error(exited.stderr)
        raise ProviderFailure(
            FailureKind.TRANSPORT, f"the Claude CLI exited with code {exited.returncode} without an answer"
        )
