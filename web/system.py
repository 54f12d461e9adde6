"""The composition root: builds the actor tree from settings and runs it.

    root supervisor
    ├── recorder         records to storage: SQLite, or PostgreSQL with DATABASE_URL
    ├── budget           reservations against the budgets in storage
    ├── keys             the client keys in force, re-read from storage
    ├── response-cache   writes cached answers to the database's shared tier (when the cache is on)
    ├── provider actors  one per active provider
    ├── mcp:NAME         one per MCP server, and tool-loops, which runs each tool loop's steps
    └── router           started last, stopped first

The HTTP app gets a handle to the running system (the router's mailbox, the actors' statistics),
never a nursery.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from relaybox.actors.budget import BudgetActor
from relaybox.actors.cache_writer import CacheWriter
from relaybox.actors.key_ring import KeyRing
from relaybox.actors.learning import LearningActor
from relaybox.actors.loop_runner import LoopRunner
from relaybox.actors.mailbox import MailboxFull
from relaybox.actors.mcp_server import McpServerActor
from relaybox.actors.messages import Rated, SetProviderEnabled
from relaybox.actors.provider import ProviderActor
from relaybox.actors.recorder import RecorderActor
from relaybox.actors.response_writer import ResponseWriter
from relaybox.actors.router import RouterActor
from relaybox.actors.span_shipper import SpanShipper
from relaybox.actors.supervisor import ChildState, Supervisor
from relaybox.actors.transports.base import Transport
from relaybox.actors.transports.claude_cli import ClaudeCliTransport
from relaybox.actors.transports.gemini_cli import GeminiCliTransport
from relaybox.actors.transports.http_api import HttpApiTransport
from relaybox.protocol.events import Usage
from relaybox.protocol.routing.catalog import Candidate, Catalog, ProviderModels
from relaybox.protocol.routing.pricing import BaselinePricing, ProviderPricing, costliest_paid_model
from relaybox.protocol.wire.anthropic_upstream import AnthropicDialect
from relaybox.protocol.wire.dialect import Dialect
from relaybox.protocol.wire.gemini import GeminiDialect
from relaybox.protocol.wire.ollama import OllamaDialect
from relaybox.protocol.wire.openai_upstream import OpenAIDialect
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.journal import adopt, owned
from relaybox.storage.postgres import PostgresStorage
from relaybox.storage.schema import known_version
from relaybox.storage.sqlite import SQLiteStorage
from relaybox.web.config import ProviderConfig, Settings, is_loopback
from relaybox.web.tracing import Tracing

log = logging.getLogger("relaybox")

# What "cheapest" compares: a request of 2,000 prompt and 500 completion tokens.
REFERENCE_USAGE = Usage(prompt_tokens=2000, completion_tokens=500)

TransportFactory = Callable[[ProviderConfig, Settings], Transport]


def build_transport(config: ProviderConfig, settings: Settings) -> Transport:
    if config.kind == "claude-cli":
        assert config.executable is not None
        return ClaudeCliTransport(
            executable=config.executable,
            workdir=str(Path(settings.data_dir) / "cli-workdir"),
            system_prompt=config.system_prompt,
            env=config.child_env,
            warm=config.warm,
            prewarm_model=config.default_model,
        )
    if config.kind == "gemini-cli":
        assert config.executable is not None
        return GeminiCliTransport(
            executable=config.executable,
            workdir=str(Path(settings.data_dir) / "gemini-cli-workdir"),
            env=config.child_env,
        )
    assert config.base_url is not None
    return HttpApiTransport(
        base_url=config.base_url,
        api_key=config.api_key,
        dialect=dialect_for(config),
        connections=config.limits.slots,
        http2=config.http2,
    )


def dialect_for(config: ProviderConfig) -> Dialect:
    if config.kind == "openai-compatible":
        return OpenAIDialect(config.host_type, image_api=config.image_api)
    if config.kind == "anthropic":
        return AnthropicDialect()
    if config.kind == "gemini":
        return GeminiDialect()
    if config.kind == "ollama":
        return OllamaDialect()
    raise ValueError(f"no HTTP dialect for provider kind {config.kind!r}")


def build_catalog(settings: Settings, pricings: dict[str, ProviderPricing] | None = None) -> Catalog:
    return Catalog(
        providers=tuple(
            ProviderModels(
                provider=p.name,
                models=p.models,
                default_model=p.default_model,
                accepts_prefixes=p.accepts_prefixes,
                priority=p.priority,
                vision=p.kind not in ("claude-cli", "gemini-cli"),
                image_models=p.image_models,
                embedding_models=p.embedding_models,
                local=p.local,
            )
            for p in settings.providers
        ),
        default_provider=settings.default_provider,
        aliases=settings.aliases,
        costs=reference_costs(settings, pricings or {}),
    )


def reference_costs(settings: Settings, pricings: dict[str, ProviderPricing]) -> dict[tuple[str, str], float]:
    """Each model's cost for one reference request, to order a tier cheapest first."""
    costs = {}
    for config in settings.providers:
        pricing = pricings.get(config.name)
        for model in config.models:
            cost = pricing(model.id, REFERENCE_USAGE) if pricing is not None else None
            if cost is not None:
                costs[(config.name, model.id)] = cost
    return costs


def savings_reference(settings: Settings, catalog: Catalog) -> Candidate | None:
    """What requests naming no model are priced on for "cost saved" (see `BaselinePricing`)."""
    configured = settings.routing.savings_baseline
    if configured is not None:
        provider, _, model = configured.partition(":")
        return Candidate(provider, model)
    return costliest_paid_model(catalog)


@attrs.define
class System:
    settings: Settings
    catalog: Catalog
    supervisor: Supervisor
    router: RouterActor
    providers: dict[str, ProviderActor]
    recorder: RecorderActor
    storage: Storage
    budget: BudgetActor
    savings_reference: Candidate | None = None  # see `BaselinePricing`
    # Writes the response cache's answers to the database; None: the cache is off.
    cache_writer: CacheWriter | None = None
    keys: KeyRing | None = None  # client keys; None: no checks at all (tests that build a System by hand)
    learning: LearningActor | None = None  # the learned router's judge and label sharing; None: off
    # Writes the Responses API's stored responses to the database; None: kept in memory only.
    response_writer: ResponseWriter | None = None
    mcp_servers: dict[str, McpServerActor] = attrs.field(factory=dict)  # by [mcp.servers] name
    tracing: Tracing | None = None  # OpenTelemetry traces; None: off
    # Runs each server-side tool loop as a task of its own; None: no MCP servers, so no loops.
    tool_loops: LoopRunner | None = None

    def rated(self, group: str, rating: int) -> None:
        """A user rated an answer: the learned router may learn from it (if it still knows it)."""
        with contextlib.suppress(MailboxFull):
            self.router.mailbox.tell(Rated(group, rating))

    def router_running(self) -> bool:
        return self.supervisor.state_of(self.router.name) in (ChildState.RUNNING, ChildState.RESTARTING)


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """PostgreSQL when DATABASE_URL says so, else the embedded SQLite file in the data directory."""
    if settings.database_url:
        async with PostgresStorage.open(settings.database_url) as postgres:
            yield postgres
        return
    sqlite = SQLiteStorage(str(Path(settings.data_dir) / "relaybox.db"))
    try:
        yield sqlite
    finally:
        await sqlite.aclose()


async def _migrate(storage: Storage) -> None:
    """Bring the schema up to date before the actors use it; if the database is down, the
    recorder migrates once it answers (records wait in its buffer and journal meanwhile)."""
    with trio.move_on_after(5):
        try:
            version = await storage.migrate()
        except StorageError as error:
            log.warning("storage not reachable at start-up (%s): records are buffered until it is", error)
            return
        if version > known_version(storage.name):
            log.warning(
                "the database's schema is at version %d, newer than this relaybox knows (%d): upgrade relaybox",
                version,
                known_version(storage.name),
            )


async def _apply_saved_provider_settings(storage: Storage, router: RouterActor) -> None:
    """Providers switched off through the API stay off across restarts (if storage answers in time)."""
    with trio.move_on_after(3):
        try:
            saved = await storage.provider_settings()
        except StorageError:
            return
        for setting in saved:
            router.mailbox.tell(SetProviderEnabled(setting.provider_id, setting.enabled, setting.priority))


def _journal_directory(root: Path, worker: int) -> Path:
    """Each worker process keeps its own journal."""
    return root / f"w{worker}"


def _adopt_journals(root: Path, worker: int, workers: int) -> None:
    """Journals no running worker will replay join this worker's, before its recorder starts:
    worker 0 takes those of workers that no longer run (an earlier start with more of them), and
    each worker its own single-file journal from an older relaybox (ids make replays harmless)."""
    if not root.is_dir():
        return
    mine = _journal_directory(root, worker)
    for path in sorted(root.glob("records*.jsonl*")):  # an older relaybox's single journal files
        stem = path.name.split(".", 1)[0]
        index = int(stem.removeprefix("records-w")) if stem.startswith("records-w") else 0
        if index == worker or (worker == 0 and index >= workers):
            adopt(path, mine, f"adopted-{path.name.replace('.', '-')}")
    if worker != 0:
        return
    for directory in sorted(root.glob("w*")):
        index = directory.name[1:]
        if not directory.is_dir() or not index.isdigit() or int(index) < workers:
            continue
        for segment in sorted(directory.iterdir()):
            adopt(segment, mine, f"adopted-w{index}-{segment.stem}")
        directory.rmdir()


def provider_actor(
    config: ProviderConfig,
    settings: Settings,
    transport_factory: TransportFactory,
    pricing: ProviderPricing,
    baseline: BaselinePricing,
    recorder: RecorderActor,
    budget: BudgetActor,
) -> ProviderActor:
    return ProviderActor(
        config.name,
        transport_factory(config, settings),
        limits=config.limits,
        breaker_policy=settings.breaker,
        pricer=pricing,
        baseline_pricer=baseline,
        recorder=recorder if settings.record_requests else None,
        budget=budget,
        listed_models=frozenset(m.id for m in config.models + config.image_models + config.embedding_models),
    )


async def _start_routing(
    supervisor: Supervisor,
    settings: Settings,
    catalog: Catalog,
    providers: dict[str, ProviderActor],
    storage: Storage,
    budget: BudgetActor,
) -> tuple[RouterActor, LearningActor | None]:
    """The router, and the learning actor the learned router makes its labels with (when it is on)."""
    learning = None
    if settings.routing.learned.enabled:
        # Labels are hashed words of prompts: with `[log] prompts = "none"` they stay in memory.
        # The promise's comparisons hold no text (a length's logarithm, verdicts): always shared.
        learning = LearningActor(
            catalog,
            providers,
            storage,
            share_labels=settings.log_prompts == "summary",
            refresh_seconds=settings.routing.refresh_seconds,
            seed=settings.routing.seed,
        )
    router = RouterActor(
        catalog,
        providers,
        settings=settings.routing,
        # Without the request log storage holds no outcomes: the router keeps its own.
        storage=storage if settings.record_requests else None,
        budget=budget,
        learning=None if learning is None else learning.mailbox,
    )
    await supervisor.start_child(router)
    if learning is not None:
        learning.router = router.mailbox
        await supervisor.start_child(learning)
    return router, learning


async def _start_writers(
    supervisor: Supervisor, storage: Storage, settings: Settings
) -> tuple[CacheWriter | None, ResponseWriter | None]:
    """The actors that write conversations to the database off the request path: the response
    cache's shared tier and the Responses API's stored responses. With `[log] prompts = "none"`
    nothing of a conversation is kept there: both stay in memory."""
    keeps_prompts = settings.log_prompts == "summary"
    cache_writer = CacheWriter(storage) if settings.cache_bytes > 0 and keeps_prompts else None
    response_writer = ResponseWriter(storage) if keeps_prompts else None
    for writer in (cache_writer, response_writer):
        if writer is not None:
            await supervisor.start_child(writer)
    return cache_writer, response_writer


async def _start_tracing(
    supervisor: Supervisor, settings: Settings, recorder: RecorderActor
) -> Tracing | None:
    """Traces to the OTLP endpoint the standard variables name; the exporter reads them itself."""
    if not settings.tracing:
        return None
    shipper = SpanShipper(OTLPSpanExporter())
    await supervisor.start_child(shipper)
    tracing = Tracing(shipper)
    recorder.watchers.append(tracing.observe)
    return tracing


async def _start_mcp_servers(supervisor: Supervisor, settings: Settings) -> dict[str, McpServerActor]:
    """One actor per `[mcp.servers]` entry; each connects in the background (a slow server holds
    nothing up) and writes its stderr to `<data dir>/mcp/NAME.log`."""
    gemini_active = any(config.kind == "gemini" for config in settings.providers)
    servers = {
        spec.name: McpServerActor(
            spec,
            tool_timeout=settings.mcp.tool_timeout,
            log_dir=str(Path(settings.data_dir) / "mcp"),
            gemini_active=gemini_active,
        )
        for spec in settings.mcp.servers
    }
    for server in servers.values():
        await supervisor.start_child(server)
    return servers


async def _stop_in_order(system: System) -> None:
    """No new work, then the providers, then the recorder, which writes out (or journals) every
    record the others produced."""
    supervisor = system.supervisor
    first = [system.router.name]
    first += [actor.name for actor in (system.learning, system.tool_loops) if actor is not None]
    for name in (*first, *system.providers, *(m.name for m in system.mcp_servers.values())):
        await supervisor.stop(name)
    for actor in (system.budget, system.keys, system.cache_writer, system.response_writer, system.recorder):
        if actor is not None:
            await supervisor.stop(actor.name)


@asynccontextmanager
async def running_system(
    settings: Settings, transport_factory: TransportFactory = build_transport
) -> AsyncIterator[System]:
    # This process's journal is its own while it runs: a second relaybox here does not start.
    journal = _journal_directory(Path(settings.data_dir) / "journal", settings.worker)
    async with owned(journal), open_storage(settings) as storage, trio.open_nursery() as nursery:
        await _migrate(storage)
        supervisor = Supervisor("root", settings.restart)
        await nursery.start(supervisor.run)
        journals = Path(settings.data_dir) / "journal"
        await trio.to_thread.run_sync(_adopt_journals, journals, settings.worker, settings.workers)
        recorder = RecorderActor(
            storage,
            str(_journal_directory(journals, settings.worker)),
            journal=settings.journal,
            keep_prompts=settings.log_prompts == "summary",
        )
        await supervisor.start_child(recorder)
        fail_open = settings.when_storage_slow == "allow"
        budget = BudgetActor(storage, fail_open=fail_open)
        await supervisor.start_child(budget)
        keys = KeyRing(storage, exposed=not is_loopback(settings.host), fail_open=fail_open)
        await supervisor.start_child(keys)
        cache_writer, response_writer = await _start_writers(supervisor, storage, settings)
        pricings = {
            config.name: ProviderPricing(
                config.kind, config.name, config.models + config.image_models + config.embedding_models
            )
            for config in settings.providers
        }
        catalog = build_catalog(settings, pricings)
        reference = savings_reference(settings, catalog)
        baseline = BaselinePricing(catalog, pricings, reference)
        providers = {
            config.name: provider_actor(
                config, settings, transport_factory, pricings[config.name], baseline, recorder, budget
            )
            for config in settings.providers
        }
        for provider in providers.values():
            await supervisor.start_child(provider)
        mcp_servers = await _start_mcp_servers(supervisor, settings)
        tool_loops = LoopRunner() if mcp_servers else None
        if tool_loops is not None:
            await supervisor.start_child(tool_loops)
        tracing = await _start_tracing(supervisor, settings, recorder)
        router, learning = await _start_routing(supervisor, settings, catalog, providers, storage, budget)
        await _apply_saved_provider_settings(storage, router)
        system = System(
            settings,
            catalog,
            supervisor,
            router,
            providers,
            recorder,
            storage,
            budget,
            reference,
            cache_writer,
            keys,
            learning,
            response_writer,
            mcp_servers,
            tracing,
            tool_loops,
        )
        try:
            yield system
        finally:
            with trio.CancelScope(shield=True):
                await _stop_in_order(system)
            nursery.cancel_scope.cancel()
