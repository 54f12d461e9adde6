"""The real Continue CLI (npm `@continuedev/cli`, `cn`) and Cline CLI (npm `cline`), installed into
tests/cli by tests/run, as clients of a running relaybox's OpenAI-compatible API, at their defaults
with only the settings docs/clients.md gives: tools on, streaming, a first turn in which the model
reads a file with the client's own tool and answers, then the session resumed the client's own way
for a second turn. In a throwaway HOME, with nothing but loopback to talk to.

Each client talks to relaybox through a recording proxy, so what it sends on its first and resumed
turn is compared with the fixtures tests/golden/{continue,cline}_request_{first,resumed}.json
(tests/client_captures.py says how, and how to refresh them)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey
from relaybox.web.config import Settings

from tests.client_captures import capture_request, check_against_golden
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.recording_proxy import RecordingProxy
from tests.fakes.scripts import Reply
from tests.harness import REPO, Running, cli_executable, eventually, openai_provider, serve, settings_for

# The conversation every client has: the model reads hello.txt with the client's own file tool,
# then answers; resumed, it is asked about the first turn and answers again.
FILE_TEXT = "relaybox-was-here"
PROMPT = "What does hello.txt hold?"
ANSWER = "hello.txt holds relaybox-was-here, read through relaybox."
RESUMED_PROMPT = "Which file did you just read for me?"
SECOND_ANSWER = "Earlier in this session I read hello.txt for you."

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


def npm_version(package: str) -> str:
    """The pinned version of a CLI from tests/cli/package.json."""
    pinned = json.loads((REPO / "tests/cli/package.json").read_text())["dependencies"]
    return f"{package} {pinned[package]}"


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


@asynccontextmanager
async def serve_recorded(settings: Settings) -> AsyncIterator[tuple[Running, RecordingProxy]]:
    """relaybox, and a proxy in front of it that records what the client sends: point the client
    at the proxy's base URL."""
    async with serve(settings) as relay, trio.open_nursery() as nursery:
        proxy = await RecordingProxy(relay.base_url).start(nursery)
        try:
            yield relay, proxy
        finally:
            nursery.cancel_scope.cancel()


def check_turns(
    client: str, label: str, proxy: RecordingProxy, path: str, first_turn_requests: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare the first request of each turn (the first, and the resumed one) with the stored
    captures `<client>_request_first` and `<client>_request_resumed`; return both bodies."""
    posts = proxy.posts(path)
    assert len(posts) > first_turn_requests, f"no request after the resume: {len(posts)} in all"
    turns = {"first": posts[0], "resumed": posts[first_turn_requests]}
    for turn, request in turns.items():
        capture = capture_request(request.method, request.target, request.headers, request.body, client=label)
        check_against_golden(f"{client}_request_{turn}", capture)
    return turns["first"].json(), turns["resumed"].json()


async def run_agent(
    args: Sequence[str], *, env: dict[str, str], cwd: Path, within: float = 60.0
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


# Escape sequences a terminal UI writes: CSI (cursor, colours), OSC (titles, colour queries), and
# the two-byte ones.
_ESCAPES = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_()#%*+][0-9A-Za-z]?"
)


def plain(screen: bytes | bytearray) -> str:
    """What a terminal UI wrote, without its escape sequences."""
    return _ESCAPES.sub(b"", bytes(screen)).decode(errors="replace")


def on_screen(text: str, screen: str) -> bool:
    """Whether a terminal UI showed `text`: it moves the cursor between words rather than writing
    spaces, so the words are compared without the spaces."""
    return "".join(text.split()) in "".join(screen.split())


async def run_in_terminal(
    args: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    ready: Callable[[str], bool],
    typed: str,
    done: Callable[[str], bool],
    within: float = 60.0,
) -> str:
    """Run an interactive CLI in a pseudo-terminal (120x40), as a person at a terminal would: wait
    until its screen is `ready`, type `typed` and Enter, wait until it is `done`, then kill its
    process group. Returns all it wrote, without escape sequences."""
    master, child_end = os.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        process = await trio.lowlevel.open_process(
            list(args),
            stdin=child_end,
            stdout=child_end,
            stderr=child_end,
            env=env,
            cwd=str(cwd),
            start_new_session=True,
        )
    finally:
        os.close(child_end)
    terminal = trio.lowlevel.FdStream(master)
    screen = bytearray()

    async def read() -> None:
        # EIO once the process and its children are gone.
        with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await terminal.receive_some(65536):
                screen.extend(data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            try:
                await eventually(lambda: ready(plain(screen)), within=within)
                echoed = "".join(plain(screen).split()).count("".join(typed.split()))
                await terminal.send_all(typed.encode())
                await eventually(
                    lambda: "".join(plain(screen).split()).count("".join(typed.split())) > echoed, within=10
                )
                # On a loaded machine a terminal UI can take an Enter that comes right behind the
                # text as part of it (as pasted text): Enter again, a little later, until it is done.
                for attempt in range(3):
                    await trio.sleep(0.3)
                    await terminal.send_all(b"\r")
                    with trio.move_on_after(within / 3 if attempt < 2 else within):
                        await eventually(lambda: done(plain(screen)), within=within)
                        break
                else:
                    raise trio.TooSlowError
            except trio.TooSlowError:
                raise AssertionError(f"the terminal UI showed:\n{plain(screen)[-3000:]}") from None
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()
            await terminal.aclose()
    return plain(screen)


async def logged_rows(relay: Running, key: str, count: int) -> list[dict]:
    await eventually(lambda: relay.system.recorder.written >= count, within=10)
    async with httpx.AsyncClient(base_url=relay.base_url, headers={"x-api-key": key}) as client:
        return (await client.get("/api/requests", params={"limit": 20})).json()["data"]


def failure(result: subprocess.CompletedProcess[bytes]) -> str:
    return f"exit {result.returncode}\nstdout: {result.stdout.decode()[-2000:]}\nstderr: {result.stderr.decode()[-2000:]}"


def scripted_model(read_call: Callable[[], tuple[str, str]]) -> Callable[[dict], Reply]:
    """The model behind the fake upstream: asked the resumed question, it answers it; else it
    reads hello.txt with the client's tool (`read_call()`: its name and JSON arguments) until the
    file's text is in the conversation, then answers."""

    def reply(body: dict) -> Reply:
        conversation = json.dumps(body)
        if RESUMED_PROMPT in conversation:
            return Reply(text=SECOND_ANSWER, pieces=3)
        if FILE_TEXT in conversation:
            return Reply(text=ANSWER, pieces=3)
        return Reply(text="", tool_call=read_call())

    return reply


def assert_agent_turns(first: dict, resumed: dict) -> None:
    """What an agent sends: its system prompt, its tools, the user's prompt, streamed; resumed, the
    whole first turn (the prompt, the tool's call and result, the answer) and the new prompt."""
    for body in (first, resumed):
        assert body["stream"] is True and body["tools"], body
        assert body["messages"][0]["role"] == "system"
    assert PROMPT in json.dumps(first["messages"])
    history = json.dumps(resumed["messages"])
    for said in (PROMPT, FILE_TEXT, ANSWER, RESUMED_PROMPT):
        assert said in history, (said, resumed["messages"])
    roles = [message["role"] for message in resumed["messages"]]
    assert "tool" in roles and any(message.get("tool_calls") for message in resumed["messages"]), roles


def project(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text(FILE_TEXT + "\n")
    return work


async def test_continue_cli_answers_a_first_and_a_resumed_turn(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    cn = cli_executable("cn")
    fake_openai.answer_with = scripted_model(lambda: ("Read", json.dumps({"filepath": "hello.txt"})))
    work = project(tmp_path)
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with serve_recorded(settings) as (relay, proxy):
        key = await client_key(relay, "continue-cli")
        config = tmp_path / "continue-config.yaml"
        config.write_text(CONTINUE_CONFIG.format(base_url=proxy.base_url, key=key))
        # Nothing but HOME (~/.continue: sessions, logs, permissions.yaml). Its check for a newer
        # version (api.continue.dev, at start-up) has no switch: offline it fails and is ignored.
        env = agent_env(tmp_path)
        # Headless `-p` prints the answer and exits.
        first = await run_agent([cn, "-p", "--config", str(config), PROMPT], env=env, cwd=work)
        assert first.returncode == 0, failure(first)
        first_turn = len(proxy.posts("/chat/completions"))
        # `--resume`: the last session, as Continue saved it, goes on.
        second = await run_agent(
            [cn, "-p", "--resume", "--config", str(config), RESUMED_PROMPT], env=env, cwd=work
        )
        assert second.returncode == 0, failure(second)
        rows = await logged_rows(relay, key, len(fake_openai.chat_requests()))
    assert ANSWER in first.stdout.decode(), failure(first)
    assert SECOND_ANSWER in second.stdout.decode(), failure(second)
    assert first_turn >= 2  # the tool's call, then the answer
    assert_agent_turns(
        *check_turns("continue", npm_version("@continuedev/cli"), proxy, "/chat/completions", first_turn)
    )
    assert rows and {(row["client"], row["model_requested"], row["status"]) for row in rows} == {
        ("key:continue-cli", "auto", "success")
    }, rows


async def test_cline_cli_answers_a_first_and_a_resumed_turn(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    cline = cli_executable("cline")
    work = project(tmp_path)
    fake_openai.answer_with = scripted_model(
        lambda: ("read_files", json.dumps({"files": [{"path": str(work / "hello.txt")}]}))
    )
    # --data-dir keeps all of Cline's state here and runs it in its own process ("sandbox
    # mode"); without it, `cline` starts a background hub daemon that outlives the command.
    data = tmp_path / "cline-data"
    (data / "settings").mkdir(parents=True)
    # Telemetry and update checks off, as docs/clients.md says (offline they could only fail).
    (data / "settings" / "global-settings.json").write_text(json.dumps({"telemetryOptOut": True}))
    env = agent_env(
        tmp_path,  # the wrapper writes ~/.cline/cli-node-extra-ca-certs.pem
        CLINE_NO_AUTO_UPDATE="1",
    )
    async with serve_recorded(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as (
        relay,
        proxy,
    ):
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
                f"{proxy.base_url}/v1",
                "--apikey",
                key,
                "--modelid",
                "auto",
            ],
            env=env,
            cwd=work,
        )
        assert auth.returncode == 0, failure(auth)
        # A prompt and no TTY: one headless turn (act mode, tools auto-approved), then it exits.
        first = await run_agent([cline, "--data-dir", str(data), PROMPT], env=env, cwd=work)
        assert first.returncode == 0, failure(first)
        first_turn = len(proxy.posts("/chat/completions"))
        # Cline 3.0.65 resumes a session (`--id`) only in its terminal UI (it drops a prompt given
        # with --id and wants a TTY): so in a terminal, as a person would, the session Cline saved.
        [session] = [path.name for path in (data / "sessions").iterdir()]
        screen = await run_in_terminal(
            [cline, "--data-dir", str(data), "--id", session],
            env={**env, "TERM": "xterm-256color"},
            cwd=work,
            ready=lambda screen: on_screen(ANSWER, screen),  # the first turn, shown again
            typed=RESUMED_PROMPT,
            done=lambda screen: on_screen(SECOND_ANSWER, screen),
        )
        rows = await logged_rows(relay, key, len(fake_openai.chat_requests()))
    assert ANSWER in first.stdout.decode(), failure(first)
    assert on_screen(SECOND_ANSWER, screen)
    assert first_turn >= 2  # the tool's call, then the answer
    assert_agent_turns(*check_turns("cline", npm_version("cline"), proxy, "/chat/completions", first_turn))
    assert rows and {(row["client"], row["model_requested"], row["status"]) for row in rows} == {
        ("key:cline-cli", "auto", "success")
    }, rows
