"""The Claude Code CLI as a transport: one `claude -p` process per request (see cli_process),
started ahead of time when a warm pool is configured (see cli_pool).

The prompt goes in as one stream-json user message (`--input-format stream-json`), so a process
can be started before its prompt is known."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

import attrs
import trio
from relaybox.actors.transports.base import Emit
from relaybox.actors.transports.cli_pool import Key, WarmPool, WarmPoolStatistics
from relaybox.actors.transports.cli_process import (
    ToolAwareEmit,
    converse_with,
    inherited_environment,
    open_cli,
)
from relaybox.protocol.chat import ChatRequest, ModelRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.wire.claude_cli import (
    ClaudeStreamDecoder,
    SystemPromptStrategy,
    build_argv,
    build_prompt,
    classify_error,
)


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


@attrs.frozen
class ClaudeCliStatistics:
    kind: str
    executable: str
    system_prompt_strategy: str
    spawned: int
    warm_pool: WarmPoolStatistics | None


# Linux refuses a single command-line argument over 128 KiB (MAX_ARG_STRLEN), whatever ARG_MAX is.
ARGUMENT_LIMIT = 100 * 1024


class ClaudeCliTransport:
    def __init__(
        self,
        *,
        executable: str,
        workdir: str,
        system_prompt: SystemPromptStrategy = SystemPromptStrategy.REPLACE,
        env: Mapping[str, str] | None = None,
        parent_env: Mapping[str, str] | None = None,
        warm: int = 0,
        prewarm_model: str | None = None,
    ) -> None:
        self.executable = executable
        self.workdir = workdir
        self.system_prompt = system_prompt
        self._env = child_environment(os.environ if parent_env is None else parent_env, env or {})
        self.spawned = 0
        self.pool = WarmPool(warm, self._open) if warm > 0 else None
        self.prewarm_model = prewarm_model

    def statistics(self) -> ClaudeCliStatistics:
        return ClaudeCliStatistics(
            "claude-cli",
            self.executable,
            self.system_prompt.value,
            self.spawned,
            None if self.pool is None else self.pool.statistics(),
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        await trio.Path(self.workdir).mkdir(parents=True, exist_ok=True)
        if self.pool is None:
            yield
            return
        async with trio.open_nursery() as nursery:
            prewarm = None if self.prewarm_model is None else self._key(self.prewarm_model, "")
            await nursery.start(partial(self.pool.run, prewarm=prewarm))
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    def _key(self, model: str, system_text: str, strategy: SystemPromptStrategy | None = None) -> Key:
        argv = build_argv(self.executable, model, system_text, strategy or self.system_prompt)
        return (*argv, "--input-format", "stream-json")

    async def _open(self, key: Key) -> trio.Process:
        self.spawned += 1
        return await open_cli(list(key), env=self._env, cwd=self.workdir, name="Claude CLI")

    async def run(self, request: ModelRequest, model: str, emit: Emit) -> str:
        if not isinstance(request, ChatRequest):
            raise ProviderFailure(FailureKind.UNSUPPORTED, "the Claude CLI does not generate images or embed")
        if request.has_images():
            raise ProviderFailure(FailureKind.UNSUPPORTED, "the Claude CLI provider does not take images yet")
        # A system prompt too long for one command-line argument travels inline, on stdin.
        system_text = request.system_text()
        strategy = self.system_prompt
        if len(system_text.encode()) > ARGUMENT_LIMIT:
            strategy = SystemPromptStrategy.INLINE
        key = self._key(model, system_text if strategy is not SystemPromptStrategy.INLINE else "", strategy)
        message = {
            "type": "user",
            "message": {"role": "user", "content": build_prompt(request, strategy)},
        }
        process = self.pool.take(key) if self.pool is not None else None
        replace = self.pool is not None and self.pool.worth_replacing(key, hit=process is not None)
        if process is None:
            process = await self._open(key)
        # The next request with this model and system prompt should find one ready.
        replenish_later = replace and self.pool is not None and not self.pool.replenish_if_quiet(key)
        decoder = ClaudeStreamDecoder(now=time.time())
        tool_aware = ToolAwareEmit(emit, bool(request.tools))
        try:
            exited = await converse_with(
                process,
                (json.dumps(message) + "\n").encode(),
                decoder=decoder,
                emit=tool_aware,
                name="Claude CLI",
            )
        finally:
            if replenish_later and self.pool is not None:
                self.pool.replenish(key)
        if exited is None:
            assert decoder.finish_reason is not None
            return await tool_aware.finish(decoder.finish_reason)
        if exited.stderr:
            raise classify_error(exited.stderr)
        raise ProviderFailure(
            FailureKind.TRANSPORT, f"the Claude CLI exited with code {exited.returncode} without an answer"
        )
