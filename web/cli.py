"""The `relaybox` command."""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import attrs
import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig
from relaybox.protocol.keys import key_hash, new_key, parse_budget, shown_prefix
from relaybox.storage.contract import StorageError
from relaybox.storage.records import ApiKey
from relaybox.web import doctor, log_format
from relaybox.web.addresses import lan_addresses
from relaybox.web.app import create_app
from relaybox.web.config import ConfigError, Settings, is_loopback, load_settings
from relaybox.web.config.catalogue import EXAMPLE_CONFIG
from relaybox.web.context import PIPELINE
from relaybox.web.system import System, open_storage, running_system

NEXT_STEPS = """\
relaybox: an OpenAI-compatible LLM gateway.

  relaybox serve                 start on 127.0.0.1:8080 with what it finds (claude on PATH, API keys)
  relaybox serve --config FILE   start with a TOML configuration (an example: {example})
  relaybox keys create NAME      a client key (needed to serve beyond this machine); --admin may change settings,
                                 --rpm N, --tpm N, --budget USD/PERIOD limit it
  relaybox keys list | revoke NAME
  relaybox serve --lan           share it with other machines on this network (after creating keys)
  relaybox doctor                check the port, the database and every provider; says what to fix
  relaybox --help                all options

Then point any OpenAI client at http://127.0.0.1:8080/v1 (any API key until keys exist).
"""
EXPOSED_WITHOUT_KEYS = """relaybox: refusing to serve on {host} with no client keys: anyone who can reach this port could
spend your providers' credit. Create a key first (relaybox keys create NAME), or pass
--insecure-no-auth if this network is yours alone."""
INSECURE_WARNING = (
    "relaybox: WARNING: serving on {host} with no client keys (--insecure-no-auth): "
    "anyone who can reach this port can use your providers"
)


def version() -> str:
    try:
        return importlib.metadata.version("relaybox")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaybox", description="A self-hosted LLM gateway.")
    parser.add_argument("--version", action="version", version=f"relaybox {version()}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port, one per core (default 1)"
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve beyond 127.0.0.1 even with no client keys (a warning at every start)",
    )
    serve.add_argument(
        "--lan",
        action="store_true",
        help="serve on every interface and print the addresses other machines should use (needs keys)",
    )
    serve.add_argument(
        "--log-format",
        choices=log_format.FORMATS,
        help="text for a terminal (default), json for one object per line (also RELAYBOX_LOG_FORMAT)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        help="seconds answers in flight get to finish on SIGTERM or Ctrl-C (default 30)",
    )
    doctor_command = commands.add_parser(
        "doctor", help="check the port, the database and every provider, and say what to fix"
    )
    doctor_command.add_argument("--config", help="TOML configuration file")
    doctor_command.add_argument("--port", type=int, help="the port to check (default 8080)")
    keys = commands.add_parser("keys", help="client API keys")
    keys.add_argument("--config", help="TOML configuration file (for where the keys are stored)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; it is shown once")
    create.add_argument("name")
    create.add_argument(
        "--admin", action="store_true", help="may change settings (PUT /api/..., the dashboard's controls)"
    )
    create.add_argument(
        "--rpm", type=_positive, help="requests per minute, across every instance (default: no limit)"
    )
    create.add_argument(
        "--tpm",
        type=_positive,
        help="tokens per minute (prompt and answer), across every instance (default: no limit)",
    )
    create.add_argument(
        "--budget",
        type=_budget,
        metavar="USD/PERIOD",
        help="what the key may spend on paid providers, e.g. 20/month or 2/day; free ones still serve it",
    )
    key_commands.add_parser("list", help="the keys, without their secrets")
    revoke = key_commands.add_parser("revoke", help="revoke a key (in force everywhere within seconds)")
    revoke.add_argument("name")
    # A worker started by `--workers N`: the listening socket it inherits, and its index.
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    if args.command is None:
        print(NEXT_STEPS.format(example=EXAMPLE_CONFIG), end="")
        return 0
    if getattr(args, "log_format", None):
        os.environ[log_format.ENVIRONMENT] = args.log_format  # --workers' processes inherit it
    log_format.configure(os.environ.get(log_format.ENVIRONMENT, "text"))
    try:
        settings = load_settings(config_file=args.config)
    except ConfigError as error:
        print(f"relaybox: configuration error: {error}", file=sys.stderr)
        return 2
    if args.command == "doctor":
        if args.port is not None:
            settings = attrs.evolve(settings, port=args.port)
        return doctor.run(settings)
    if args.command == "keys":
        if not settings.database_url:
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)  # a first run may start here
        return trio.run(manage_keys, settings, args)
    settings = attrs.evolve(settings, insecure_no_auth=args.insecure_no_auth, lan=args.lan)
    if args.grace is not None:
        settings = attrs.evolve(settings, grace=args.grace)
    if args.lan:
        settings = attrs.evolve(settings, host="0.0.0.0")
    if args.host:
        settings = attrs.evolve(settings, host=args.host)
    if args.port is not None:
        settings = attrs.evolve(settings, port=args.port)
    if args.workers < 1:
        print("relaybox: --workers must be at least 1", file=sys.stderr)
        return 2
    settings = attrs.evolve(settings, worker=args.worker_index, workers=args.workers)
    if args.workers > 1 and args.listen_fd is None:
        return run_workers(settings, args.config)
    try:
        return trio.run(serve_forever, settings, args.listen_fd)
    except (KeyboardInterrupt, OSError, BaseExceptionGroup) as error:
        os_error = _find(error, OSError)
        if os_error is not None:
            reason = getattr(os_error, "strerror", None) or os_error
            print(f"relaybox: cannot serve on {settings.host}:{settings.port}: {reason}", file=sys.stderr)
            return 1
        if _find(error, KeyboardInterrupt) is None:
            raise
    return 0


def _find(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` in `error`, looking inside exception groups (trio's nurseries make them)."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def startup_report(system: System, binds: Sequence[str]) -> str:
    settings = system.settings
    lines = ["relaybox is listening on " + ", ".join(binds), ""]
    reachable = [p for p in settings.providers if p.unreachable is None]
    unreachable = [p for p in settings.providers if p.unreachable is not None]
    if reachable:
        lines.append("active providers:")
        for provider in reachable:
            models = ", ".join(m.id for m in provider.models)
            lines.append(
                f"  {provider.name:<14} {provider.kind:<18} default {provider.default_model:<14} models: {models}"
            )
    if unreachable:
        lines.append(
            "configured, but not reachable at start-up (they serve requests naming them once they answer):"
        )
        lines += [f"  {p.name:<14} {p.kind:<18} {p.base_url}: {p.unreachable}" for p in unreachable]
    if not settings.providers:
        lines.append("no provider is active: requests will be answered 503 until one is configured")
    lines.append("")
    lines.extend(f"  - {note}" for note in settings.notes)
    base = binds[0] if binds else f"http://{settings.host}:{settings.port}"
    lines += [
        "",
        f"dashboard: {base}/dashboard",
        f"OpenAI base URL: {base}/v1    health: {base}/health    actors: {base}/actors",
        f"data directory: {settings.data_dir}",
        f"records: {_storage_description(settings)}",
        f"access: {_access_description(system)}",
        f"model names: {_names_description(settings)}",
    ]
    return "\n".join(lines)


def _names_description(settings: Settings) -> str:
    if settings.routing.unknown_models == "reject":
        return "a name no provider serves is refused (404); `auto` picks the model"
    return (
        "a name no provider serves (a typo, another vendor's model) is answered by smart routing, "
        "with an x-relaybox-warning header and a log line saying so; "
        '[routing] unknown_models = "reject" refuses such names'
    )


def _access_description(system: System) -> str:
    keys = [] if system.keys is None else system.keys.in_force()
    if keys:
        admins = sum(1 for k in keys if k.admin)
        return f"{len(keys)} client key(s) in force ({admins} admin): every request needs one"
    if system.settings.insecure_no_auth and not is_loopback(system.settings.host):
        return "OPEN to the network with no key (--insecure-no-auth)"
    return "no client keys: open to this machine only (relaybox keys create NAME before --lan)"


def _storage_description(settings: Settings) -> str:
    if settings.database_url:
        from urllib.parse import urlsplit

        url = urlsplit(settings.database_url)
        return f"PostgreSQL at {url.hostname}:{url.port or 5432}{url.path}"
    return f"SQLite file {settings.data_dir}/relaybox.db (set DATABASE_URL for PostgreSQL)"


# Connections waiting to be accepted (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 4096


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _budget(text: str) -> tuple[float, str]:
    try:
        return parse_budget(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def limits_text(key: ApiKey) -> str:
    """A key's limits in a few words: `60 req/min, 100000 tok/min, $20/monthly`."""
    limits = [f"{key.rpm} req/min" if key.rpm else "", f"{key.tpm} tok/min" if key.tpm else ""]
    if key.budget_usd is not None:
        limits.append(f"${key.budget_usd:g}/{key.budget_period}")
    return ", ".join(filter(None, limits)) or "no limit"


async def manage_keys(settings: Settings, args: argparse.Namespace) -> int:
    async with open_storage(settings) as storage:
        try:
            await storage.migrate()
            if args.keys_command == "create":
                key = new_key()
                budget_usd, budget_period = args.budget or (None, None)
                record = ApiKey(
                    args.name,
                    key_hash(key),
                    shown_prefix(key),
                    args.admin,
                    time.time(),
                    rpm=args.rpm,
                    tpm=args.tpm,
                    budget_usd=budget_usd,
                    budget_period=budget_period,
                )
                if not await storage.create_key(record):
                    print(f"relaybox: a key named {args.name!r} exists; revoke it first", file=sys.stderr)
                    return 1
                kind = "admin key" if args.admin else "key"
                print(f"{kind} {args.name!r} created. It is shown this once; keep it somewhere safe:\n{key}")
            elif args.keys_command == "list":
                for k in await storage.api_keys():
                    state = "revoked" if k.revoked_at is not None else "in force"
                    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.created_at))
                    role = "admin" if k.admin else "client"
                    print(
                        f"{k.name:<24} {k.prefix}…  {role:<7} {limits_text(k):<32} created {created}  {state}"
                    )
            elif not await storage.revoke_key(args.name, time.time()):
                print(f"relaybox: no key named {args.name!r} in force", file=sys.stderr)
                return 1
            else:
                print(f"key {args.name!r} revoked")
        except StorageError as error:
            print(f"relaybox: cannot reach the key store: {error}", file=sys.stderr)
            return 1
    return 0


async def serve_forever(settings: Settings, listen_fd: int | None = None) -> int:
    async with running_system(settings) as system:
        if not is_loopback(settings.host) and system.keys is not None and not system.keys.active:
            if not settings.insecure_no_auth:
                print(EXPOSED_WITHOUT_KEYS.format(host=settings.host), file=sys.stderr)
                return 2
            print(INSECURE_WARNING.format(host=settings.host), file=sys.stderr, flush=True)
        config = HypercornConfig()
        config.bind = [f"fd://{listen_fd}" if listen_fd is not None else f"{settings.host}:{settings.port}"]
        # A burst of clients (a thousand streams opening at once) must not overflow the accept
        # queue: dropped connection attempts come back only after the kernel's 1 s, 3 s, 7 s... retries.
        config.backlog = LISTEN_BACKLOG
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = settings.grace
        app = create_app(system)
        drain = app.extensions[PIPELINE].drain
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(_serve, app, config, partial(drain.begin, settings.grace))
            settle_the_heap()
            if settings.worker == 0:
                print(startup_report(system, binds), flush=True)
                if settings.lan:
                    print(lan_report(settings.port), flush=True)
    return 0


# Young objects allocated between two collections of the youngest generation (Python's default
# is 700): a request allocates thousands, nearly all freed by reference counting alone, and with
# dozens of requests in flight each young collection walked all of theirs again.
YOUNG_COLLECTION_EVERY = 10_000


def settle_the_heap() -> None:
    """Once serving: what startup built (the libraries, the tokenizer's tables, the routing model,
    some 150,000 tracked objects) goes where the garbage collector no longer walks it, and the
    young collections run less often. Otherwise each full collection walks it all for tens of
    milliseconds, stalling every request and stream meanwhile, and under load collections cost
    170 µs per request against the bare stack's 80 (measured with `gc.callbacks`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


def lan_report(port: int) -> str:
    """Seed 000's get-local-ip: the base URLs to paste into clients on other machines, and a test."""
    addresses = lan_addresses()
    if not addresses:
        return "--lan: no network address found besides loopback; is this machine on a network?"
    lines = ["", "On other machines of this network, use one of:"]
    lines += [f"  OpenAI base URL  http://{address}:{port}/v1" for address in addresses]
    lines += [
        "Test from another machine:",
        f"  curl http://{addresses[0]}:{port}/v1/models -H 'authorization: Bearer YOUR_KEY'",
    ]
    return "\n".join(lines)


def run_workers(settings: Settings, config_file: str | None) -> int:
    """`--workers N`: bind the port here, then run N relaybox processes that all accept on it
    (one Python process uses one core). Each has its own actors; they share the database (request
    log, budgets, routing evidence), the data directory and the CLIs' working directories. SIGINT
    and SIGTERM go to every worker, which drain as a single process would."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        listener = socket.create_server((settings.host, settings.port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as error:
        print(f"relaybox: cannot serve on {settings.host}:{settings.port}: {error.strerror}", file=sys.stderr)
        return 1
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    command = [sys.executable, "-m", "relaybox.web.cli", "serve", "--workers", str(settings.workers)]
    command += ["--host", settings.host, "--listen-fd", str(listener.fileno())]
    if settings.insecure_no_auth:
        command.append("--insecure-no-auth")
    if settings.lan:
        command.append("--lan")
    command += ["--grace", str(settings.grace)]
    if config_file:
        command += ["--config", config_file]
    workers = [
        # Their own sessions: a terminal's Ctrl-C reaches this process, which passes it on once.
        subprocess.Popen(
            [*command, "--worker-index", str(i)], pass_fds=(listener.fileno(),), start_new_session=True
        )
        for i in range(settings.workers)
    ]
    print(f"relaybox: {settings.workers} workers on http://{settings.host}:{port}", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [worker.wait() for worker in workers]
    listener.close()
    return max(codes, key=abs)


async def _serve(
    app: object,
    config: HypercornConfig,
    on_signal: Callable[[], None],
    *,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    trigger = partial(_shutdown_signal, on_signal)
    await hypercorn.trio.serve(app, config, shutdown_trigger=trigger, task_status=task_status)  # type: ignore[arg-type]


async def _shutdown_signal(on_signal: Callable[[], None]) -> None:
    """Until SIGINT or SIGTERM; then relaybox drains (`on_signal`) while hypercorn stops taking
    connections and gives the open ones the grace period."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            on_signal()
            return


if __name__ == "__main__":
    sys.exit(main())
