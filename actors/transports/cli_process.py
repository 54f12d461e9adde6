"""Running a CLI as a chat model: one process per request, its stdout read as JSON lines.

Process hygiene for every CLI provider: the prompt goes to stdin (never argv: E2BIG on long
prompts); the child runs in its own process group with a sanitised environment in relaybox's
own working directory; on cancellation, timeout or client disconnect the whole group gets
SIGTERM, then SIGKILL after a grace period, so no CLI process outlives its request.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Mapping
from contextlib import suppress
from typing import Protocol

import attrs
import trio
from relaybox.actors.transports.base import Emit
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import ContentDelta, TransportEvent
from relaybox.protocol.wire.cli_prompt import ToolCallExtractor

# What the child inherits from relaybox's environment; everything else must be configured.
# An inherited ANTHROPIC_API_KEY or GEMINI_API_KEY would silently replace the user's login,
# and an inherited CLAUDECODE makes the Claude CLI refuse to start.
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


class LineDecoder(Protocol):
    finish_reason: str | None

    def feed(self, line: bytes) -> list[TransportEvent]: ...


@attrs.frozen
class Exited:
    """How a CLI run ended when it produced no complete answer."""

    returncode: int | None
    stderr: str


class ToolAwareEmit:
    """Reads tool calls out of a CLI's text when the request offered tools (see cli_prompt)."""

    def __init__(self, emit: Emit, offered_tools: bool) -> None:
        self._emit = emit
        self._extractor = ToolCallExtractor() if offered_tools else None

    async def __call__(self, event: TransportEvent) -> None:
        if self._extractor is not None and isinstance(event, ContentDelta):
            for extracted in self._extractor.feed(event.text):
                await self._emit(extracted)
        else:
            await self._emit(event)

    async def finish(self, finish_reason: str) -> str:
        if self._extractor is None:
            return finish_reason
        for extracted in self._extractor.finish():
            await self._emit(extracted)
        return "tool_calls" if self._extractor.calls else finish_reason


def inherited_environment(parent: Mapping[str, str]) -> dict[str, str]:
    return {key: parent[key] for key in INHERITED if key in parent}


async def open_cli(argv: list[str], *, env: Mapping[str, str], cwd: str, name: str) -> trio.Process:
    """Start a CLI in its own process group with pipes on all three streams; it waits on stdin."""
    try:
        return await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as spawn_error:
        if spawn_error.errno == errno.E2BIG:
            # The request's own size (a huge system prompt on the command line): its fault, not the
            # CLI's health, so it must not open the breaker every other client shares.
            raise ProviderFailure(
                FailureKind.REJECTED, f"the request is too large for the {name}'s command line"
            ) from None
        raise ProviderFailure(FailureKind.TRANSPORT, f"cannot start the {name}: {spawn_error}") from None


async def run_cli(
    argv: list[str],
    stdin: bytes,
    *,
    env: Mapping[str, str],
    cwd: str,
    decoder: LineDecoder,
    emit: Emit,
    name: str,
) -> Exited | None:
    """Start a CLI and run one turn with it (see `converse_with`)."""
    process = await open_cli(argv, env=env, cwd=cwd, name=name)
    return await converse_with(process, stdin, decoder=decoder, emit=emit, name=name)


async def converse_with(
    process: trio.Process, stdin: bytes, *, decoder: LineDecoder, emit: Emit, name: str
) -> Exited | None:
    """Give a started CLI its input and read its answer, sending decoded events through `emit`.

    Returns None once the decoder has seen the answer finish, or how the process ended
    without one (for the caller to classify). Failures the decoder raises propagate. However
    it ends (an answer, an error, cancellation), the process group is gone when this returns.
    """
    assert process.stdin is not None and process.stderr is not None
    stderr_tail = bytearray()
    stderr_done = trio.Event()
    # An exception raised inside the nursery would come out wrapped in an ExceptionGroup;
    # keep it aside and raise it bare once the process group is gone.
    error: Exception | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr, stderr_tail, stderr_done)
            try:
                await process.stdin.send_all(stdin)
                await process.stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # it has exited already: its output says why
            error = await _converse(process, decoder, emit, name)
            if decoder.finish_reason is None:
                with trio.move_on_after(0.5):  # the error message may still be in the pipe
                    await stderr_done.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await reap_group(process)
    if error is not None:
        raise error
    if decoder.finish_reason is not None:
        return None
    return Exited(process.returncode, stderr_tail.decode("utf-8", "replace").strip())


async def _converse(process: trio.Process, decoder: LineDecoder, emit: Emit, name: str) -> Exception | None:
    """Read the CLI's answer to the end; return what went wrong rather than raise it."""
    assert process.stdout is not None
    try:
        await _read_lines(process.stdout, decoder, emit, name)
        if decoder.finish_reason is not None:
            # The answer is complete; give the CLI a moment to exit on its own.
            with trio.move_on_after(2):
                await process.wait()
        else:
            await process.wait()
    except Exception as error:
        return error
    finally:
        signal_group(process, signal.SIGKILL if decoder.finish_reason is None else signal.SIGTERM)
    return None


async def _read_lines(stdout: trio.abc.ReceiveStream, decoder: LineDecoder, emit: Emit, name: str) -> None:
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
            raise ProviderFailure(FailureKind.TRANSPORT, f"the {name} printed an over-long line")


async def _drain(stream: trio.abc.ReceiveStream, tail: bytearray, done: trio.Event, keep: int = 8192) -> None:
    while chunk := await stream.receive_some(65536):
        tail += chunk
        del tail[:-keep]
    done.set()


def signal_group(process: trio.Process, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def reap_group(process: trio.Process) -> None:
    """SIGTERM to the whole group, SIGKILL after a grace period: grandchildren go too."""
    signal_group(process, signal.SIGTERM)
    with trio.move_on_after(KILL_GRACE):
        await process.wait()
    signal_group(process, signal.SIGKILL)
    await process.wait()
