"""`relaybox doctor`: is everything relaybox needs in order, and if not, what to do about it.

It checks the port, the database (reachable, schema up to date) and every provider that is
configured or was discovered: a CLI's binary and its version, the models Ollama has pulled (a
configured one it lacks fails here, with the `ollama pull` that fixes it), then a live, pinned
request of a few tokens through the provider, as the dashboard's "Test connection" sends it, whose
failure is explained in seed 000's words (`web/diagnosis.py`). Providers that were looked for and
not found are listed with the reason discovery gave. The exit status is 1 when any check failed.

Beside a relaybox serving from the same data directory (it owns its journal: `storage/journal.py`),
doctor leaves that journal alone: its own provider checks journal their records under a worker
index no running relaybox uses.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable
from pathlib import Path

import attrs
import httpx
import trio
from relaybox.storage.contract import StorageError
from relaybox.storage.journal import JournalBusy, owners
from relaybox.storage.schema import known_version
from relaybox.web.config import ProviderConfig, Settings, probe_ollama
from relaybox.web.config.catalogue import EXAMPLE_CONFIG
from relaybox.web.connection_check import check_connection
from relaybox.web.system import System, open_storage, running_system

PROVIDER_TEST_SECONDS = 60.0


@attrs.frozen
class Check:
    ok: bool
    subject: str
    detail: str

    def line(self) -> str:
        return f"{'✅' if self.ok else '❌'} {self.subject}: {self.detail}"


async def examine(settings: Settings, report: Callable[[Check], None]) -> bool:
    """Every check, each reported as it completes; True when all passed."""
    checks = [await check_port(settings), await check_database(settings)]
    report(checks[0])
    report(checks[1])
    for name, why in settings.unavailable:
        checks.append(Check(False, f"provider {name}", why))
        report(checks[-1])
    serving = await trio.to_thread.run_sync(owners, Path(settings.data_dir) / "journal")
    if serving:
        checks.append(check_beside(settings, serving))
        report(checks[-1])
        settings = attrs.evolve(settings, worker=spare_worker(serving), workers=1)
    try:
        async with running_system(settings) as system:
            for config in settings.providers:
                check = await check_provider(system, config)
                checks.append(check)
                report(check)
    except JournalBusy as error:  # a relaybox started meanwhile
        checks.append(Check(False, "provider checks", f"not run: {error.strerror}"))
        report(checks[-1])
    return all(c.ok for c in checks)


def check_beside(settings: Settings, serving: dict[str, int]) -> Check:
    """A relaybox is serving from this data directory: doctor never touches its journal (replaying
    and deleting the segments it is still writing would lose their records)."""
    pids = ", ".join(str(pid) for pid in sorted(set(serving.values())) if pid > 0) or "unknown"
    return Check(
        True,
        f"data directory {settings.data_dir}",
        f"a relaybox is serving from it (pid {pids}): its record journal is left alone; "
        "the provider checks below keep a journal of their own",
    )


def spare_worker(serving: dict[str, int]) -> int:
    """A worker index whose journal no running relaybox owns (journals are named `w<index>`):
    the provider checks' records go there, and a later start of relaybox adopts what is left."""
    return next(index for index in itertools.count(1) if f"w{index}" not in serving)


async def check_port(settings: Settings) -> Check:
    subject = f"port {settings.host}:{settings.port}"
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((settings.host, settings.port))
        return Check(True, subject, "free")
    except OSError as error:
        reason = error.strerror or str(error)
    finally:
        probe.close()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            answer = await client.get(f"http://{host}:{settings.port}/ping")
        if answer.status_code == 200 and answer.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return Check(True, subject, "relaybox is already serving here")
    except httpx.HTTPError:
        pass
    return Check(False, subject, f"{reason}: another program uses it. Pick another (relaybox serve --port N)")


async def check_database(settings: Settings) -> Check:
    where = "PostgreSQL (DATABASE_URL)" if settings.database_url else f"SQLite file in {settings.data_dir}"
    known = known_version("postgres" if settings.database_url else "sqlite")
    if not settings.database_url:
        await trio.Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    async with open_storage(settings) as storage:
        with trio.move_on_after(10):
            try:
                version = await storage.migrate()
            except StorageError as error:
                fix = "Check DATABASE_URL and that PostgreSQL is running." if settings.database_url else ""
                return Check(False, f"database, {where}", f"cannot be used ({error}). {fix}".strip())
            if version > known:
                return Check(
                    False,
                    f"database, {where}",
                    f"its schema is at version {version}, newer than this relaybox knows ({known}): "
                    "a newer relaybox has used it. Upgrade this one (git pull, then pip install .)",
                )
            return Check(True, f"database, {where}", f"reachable, schema at version {version} of {known}")
    return Check(False, f"database, {where}", "no answer within 10 s. Is it running and reachable from here?")


async def check_provider(system: System, config: ProviderConfig) -> Check:
    subject = f"provider {config.name} ({config.kind})"
    if config.kind in ("claude-cli", "gemini-cli") and config.executable:
        subject += f", {await cli_version(config.executable)}"
    if config.kind == "ollama" and config.base_url:
        pulled = await trio.to_thread.run_sync(probe_ollama, config.base_url, 5.0)
        subject += f", {pulled_models(pulled)}"
        if pulled is not None and (missing := not_pulled(config, pulled)):
            fix = " && ".join(f"ollama pull {model}" for model in missing)
            return Check(False, subject, f"not pulled: {', '.join(missing)}. Fix: {fix}")
    result = await check_connection(system, config, "relaybox doctor", PROVIDER_TEST_SECONDS)
    if not result.ok:
        return Check(False, subject, result.diagnosis.removeprefix("❌ "))
    return Check(True, subject, f"{config.default_model} answered in {result.latency_ms} ms")


async def cli_version(executable: str) -> str:
    try:
        with trio.fail_after(20):
            done = await trio.run_process(
                [executable, "--version"], capture_stdout=True, capture_stderr=True, check=False
            )
    except OSError as error:
        return f"{executable} (its version could not be read: {error.strerror or error})"
    except trio.TooSlowError:
        return f"{executable} (its version could not be read: no answer to --version within 20 s)"
    first = (done.stdout or done.stderr).decode(errors="replace").strip().splitlines()
    said = first[0] if first else "(no version printed)"
    if done.returncode != 0:
        return f"{executable} (--version failed with exit code {done.returncode}: {said})"
    return f"{executable} {said}"


def pulled_models(pulled: list[str] | None) -> str:
    if pulled is None:
        return "its models could not be listed (GET /api/tags)"
    return f"models: {', '.join(pulled)}" if pulled else "no models pulled"


def not_pulled(config: ProviderConfig, pulled: list[str]) -> list[str]:
    """The configured models Ollama lacks: a request for one fails, and `ollama pull` is the fix."""
    have = {ollama_name(model) for model in pulled}
    wanted = dict.fromkeys([config.default_model, *(model.id for model in config.models)])
    return [model for model in wanted if ollama_name(model) not in have]


def ollama_name(model: str) -> str:
    """Ollama's full name for a model: one named without a tag means its `:latest`."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def run(settings: Settings) -> int:
    """The command: print each check, the providers that discovery skipped, and exit 0 or 1."""
    print("relaybox doctor")
    for note in settings.notes:
        print(f"- {note}")
    if not settings.providers:
        print(f"❌ no provider is active: see the notes above, or configure one (example: {EXAMPLE_CONFIG})")
    healthy = trio.run(examine, settings, lambda check: print(check.line(), flush=True))
    healthy = healthy and bool(settings.providers)
    print("all good" if healthy else "something needs fixing (see ❌ above)")
    return 0 if healthy else 1
