"""Running relaybox for real inside a test: the actor system plus hypercorn on 127.0.0.1:0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import attrs
import httpx
import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.provider import ProviderLimits
from relaybox.actors.supervisor import RestartPolicy
from relaybox.protocol.routing.catalog import ModelEntry
from relaybox.protocol.routing.learned_route import LearnedPolicy
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.wire.claude_cli import SystemPromptStrategy
from relaybox.web.app import create_app
from relaybox.web.config import ProviderConfig, Settings
from relaybox.web.context import PIPELINE
from relaybox.web.pipeline import RequestPipeline
from relaybox.web.system import System, TransportFactory, build_transport, running_system

REPO = Path(__file__).resolve().parent.parent


def openai_provider(
    name: str,
    base_url: str,
    *,
    models: tuple[str, ...] = ("gpt-4o-mini",),
    slots: int = 8,
    mailbox: int = 8,
    idle_timeout: float = 10.0,
    **extra: Any,
) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        kind="openai-compatible",
        display_name=name,
        models=tuple(ModelEntry(m, "economy", 0.15, 0.60, 128_000) for m in models),
        default_model=models[0],
        limits=ProviderLimits(slots=slots, mailbox=mailbox, idle_timeout=idle_timeout),
        base_url=base_url,
        api_key=extra.pop("api_key", "sk-test-upstream"),
        **extra,
    )


def api_provider(
    kind: str, name: str, base_url: str, *, models: tuple[str, ...], **extra: Any
) -> ProviderConfig:
    """A provider of any HTTP kind (anthropic, gemini, ollama, openai-compatible)."""
    return attrs.evolve(openai_provider(name, base_url, models=models, **extra), kind=kind)


def claude_provider(
    executable: str,
    fake_base_url: str,
    *,
    slots: int = 4,
    idle_timeout: float = 30.0,
    strategy: SystemPromptStrategy = SystemPromptStrategy.REPLACE,
    warm: int = 0,
) -> ProviderConfig:
    return ProviderConfig(
        name="claude-cli",
        kind="claude-cli",
        display_name="Claude (CLI)",
        models=(ModelEntry("haiku", "economy"), ModelEntry("sonnet", "standard")),
        default_model="sonnet",
        limits=ProviderLimits(slots=slots, mailbox=8, idle_timeout=idle_timeout),
        accepts_prefixes=("claude-",),
        executable=executable,
        system_prompt=strategy,
        warm=warm,
        child_env={"ANTHROPIC_BASE_URL": fake_base_url, "ANTHROPIC_API_KEY": "sk-ant-test-child"},
    )


def serve_environment(openai_base_url: str, data_dir: Path) -> dict[str, str]:
    """The environment for `relaybox serve` as a child process: one OpenAI provider, its own
    data directory, the embedded SQLite file (whatever DATABASE_URL the test run has)."""
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_base_url,
        "PATH": os.path.dirname(sys.executable),
        "RELAYBOX_DATA_DIR": str(data_dir),
    }
    env.pop("DATABASE_URL", None)
    return env


# `auto` decided by the per-prompt quality models (`quality_kept = "off"`), which start no judge
# or shadow calls of their own: with the default quality promise, a random share of answers would
# be answered twice and judged, adding upstream calls to tests that count them, and every `auto`
# request would go to the strongest model until evidence comes in. The tests of the promise and of
# those calls turn them on.
QUIET_LEARNING = LearnedPolicy(quality_kept=None, judge_rate=0.0, shadow_rate=0.0, shadow_up_rate=0.0)


def settings_for(tmp_path: Path, *providers: ProviderConfig, **changes: Any) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=0,
        providers=providers,
        data_dir=str(tmp_path / "data"),
        breaker=BreakerPolicy(consecutive_failures=3, cooldown=5.0),
        restart=RestartPolicy(max_restarts=3, period=30.0, backoff_initial=0.01, backoff_max=0.1),
        routing=RoutingSettings(learned=QUIET_LEARNING),
    )
    return attrs.evolve(base, **changes)


@attrs.frozen
class Running:
    system: System
    base_url: str
    pipeline: RequestPipeline


@asynccontextmanager
async def serve(
    settings: Settings, transport_factory: TransportFactory = build_transport
) -> AsyncIterator[Running]:
    async with running_system(settings, transport_factory) as system, trio.open_nursery() as nursery:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        shutdown = trio.Event()
        app = create_app(system)
        binds = await nursery.start(
            lambda task_status: hypercorn.trio.serve(
                app, config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        )
        try:
            yield Running(system, binds[0], app.extensions[PIPELINE])
        finally:
            nursery.cancel_scope.cancel()


def cli_executable(name: str) -> str:
    """A real CLI from npm (`claude`, `gemini`), installed by tests/run into tests/cli."""
    candidates = [
        os.environ.get(f"RELAYBOX_TEST_{name.upper()}"),
        str(REPO / "tests/cli/node_modules/.bin" / name),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"the {name} CLI is not installed: run `npm ci --prefix tests/cli`")
    pytest.skip(f"the {name} CLI is not installed: run `npm ci --prefix tests/cli`")


def claude_executable() -> str:
    return cli_executable("claude")


def gemini_cli_provider(
    executable: str, fake_base_url: str, home: Path, *, idle_timeout: float = 30.0
) -> ProviderConfig:
    """The Gemini CLI against a fake Gemini API, with an API-key login in a throwaway HOME."""
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(
        '{"security": {"auth": {"selectedType": "gemini-api-key"}}}'
    )
    return ProviderConfig(
        name="gemini-cli",
        kind="gemini-cli",
        display_name="Gemini (CLI)",
        models=(ModelEntry("gemini-2.5-flash", "economy"),),
        default_model="gemini-2.5-flash",
        limits=ProviderLimits(slots=2, mailbox=8, idle_timeout=idle_timeout),
        accepts_prefixes=("gemini-",),
        executable=executable,
        child_env={"GOOGLE_GEMINI_BASE_URL": fake_base_url, "GEMINI_API_KEY": "test-key", "HOME": str(home)},
    )


async def wait_until_serving(client: httpx.AsyncClient, within: float = 20.0) -> None:
    """Until the relaybox at the client's base URL answers /ping (a `relaybox serve` child starting)."""
    with trio.fail_after(within):
        while True:
            try:
                if (await client.get("/ping")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)


async def serving_child(
    fake: Any,
    data: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    log: IO[bytes] | None = None,
    report: IO[bytes] | None = None,
) -> tuple[trio.Process, str]:
    """`relaybox serve` as a child process over the fake upstream `fake`, and its base URL once
    it answers; `env`: variables to add; `log` and `report`: where its stderr (the log) and stdout
    (the start-up report) go (else nowhere)."""
    port = port or 21000 + os.getpid() % 20000
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "relaybox.web.cli", "serve", "--port", str(port), *args],
        env={**serve_environment(fake.base_url, data), **(env or {})},
        stdout=subprocess.DEVNULL if report is None else report,
        stderr=subprocess.DEVNULL if log is None else log,
    )
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url) as client:
        await wait_until_serving(client)
    return process, base_url


async def eventually(condition: Callable[[], object], *, within: float, poll: float = 0.02) -> float:
    """Wait until `condition()` is true (state outside trio, like /proc, cannot be awaited);
    return how long it took, or fail after `within` seconds."""
    started = trio.current_time()
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling the OS, not a trio task
            await trio.sleep(poll)
    return trio.current_time() - started
