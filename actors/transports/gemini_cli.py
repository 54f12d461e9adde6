"""The Gemini CLI as a transport: one `gemini -p` process per request (see cli_process).

relaybox runs it in its own working directory, whose workspace settings switch off the CLI's
tools, memory files and retries; the user's login in ~/.gemini is left untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio
from relaybox.actors.transports.base import Emit
from relaybox.actors.transports.cli_process import ToolAwareEmit, inherited_environment, run_cli
from relaybox.protocol.chat import ChatRequest, ModelRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.wire.cli_prompt import flatten
from relaybox.protocol.wire.gemini_cli import (
    SYSTEM_PROMPT,
    WORKSPACE_SETTINGS,
    GeminiStreamDecoder,
    build_argv,
    classify_exit,
)


@attrs.frozen
class GeminiCliStatistics:
    kind: str
    executable: str
    spawned: int


class GeminiCliTransport:
    def __init__(
        self,
        *,
        executable: str,
        workdir: str,
        env: Mapping[str, str] | None = None,
        parent_env: Mapping[str, str] | None = None,
    ) -> None:
        self.executable = executable
        self.workdir = workdir
        self._env = inherited_environment(os.environ if parent_env is None else parent_env)
        self._env.update(
            {
                "GEMINI_CLI_NO_RELAUNCH": "true",  # one node start, not two
                "GEMINI_CLI_TRUST_WORKSPACE": "true",  # relaybox's own directory, holding only its settings
                "GEMINI_SYSTEM_MD": os.path.join(workdir, "system.md"),
            }
        )
        self._env.update(env or {})
        self.spawned = 0

    def statistics(self) -> GeminiCliStatistics:
        return GeminiCliStatistics("gemini-cli", self.executable, self.spawned)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        settings = trio.Path(self.workdir) / ".gemini"
        await settings.mkdir(parents=True, exist_ok=True)
        await (settings / "settings.json").write_text(json.dumps(WORKSPACE_SETTINGS))
        await (trio.Path(self.workdir) / "system.md").write_text(SYSTEM_PROMPT)
        yield

    async def run(self, request: ModelRequest, model: str, emit: Emit) -> str:
        if not isinstance(request, ChatRequest):
            raise ProviderFailure(FailureKind.UNSUPPORTED, "the Gemini CLI does not generate images or embed")
        if request.has_images():
            raise ProviderFailure(FailureKind.UNSUPPORTED, "the Gemini CLI provider does not take images")
        decoder = GeminiStreamDecoder()
        tool_aware = ToolAwareEmit(emit, bool(request.tools))
        self.spawned += 1
        exited = await run_cli(
            build_argv(self.executable, model),
            flatten(request, inline_system=True).encode(),
            env=self._env,
            cwd=self.workdir,
            decoder=decoder,
            emit=tool_aware,
            name="Gemini CLI",
        )
        if exited is None:
            assert decoder.finish_reason is not None
            return await tool_aware.finish(decoder.finish_reason)
        raise classify_exit(exited.returncode, exited.stderr)
