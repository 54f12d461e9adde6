"""Settings: embedded defaults, then the TOML file, then the environment (which wins). The file
is first checked for names relaybox does not read (`schema.py`); then every value is read with the
name the user gave it (`values.Section`), so a value refused, or a note about a setting, names the
setting as the user wrote it. Every decision is written down in `Settings.notes`, which
`relaybox serve` prints at start-up; which providers are active is found out by
`web/config/discovery.py`."""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.recorder import JOURNAL_MODES
from relaybox.actors.supervisor import RestartPolicy
from relaybox.protocol.compression.pipeline import LEVELS
from relaybox.protocol.routing.catalog import Candidate
from relaybox.protocol.routing.classifier import TierThresholds
from relaybox.protocol.routing.evidence import EvidencePolicy
from relaybox.protocol.routing.learned_route import LearnedPolicy
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.routing.routes import BUILTIN_ROUTES, CHAIN_KEYS, MODES, NamedRoute
from relaybox.protocol.routing.selection import ABTest, SelectionPolicy
from relaybox.web.config import schema, values
from relaybox.web.config.discovery import discover_providers
from relaybox.web.config.mcp import check_route_tools, mcp_settings
from relaybox.web.config.schema import BUILTIN_PROVIDERS, LEARNED_SHARES, nearest
from relaybox.web.config.settings import ConfigError, ProviderConfig, Settings, default_data_dir
from relaybox.web.config.values import (
    ABOVE_ZERO,
    AT_LEAST_ONE,
    AT_LEAST_ZERO,
    PERCENT,
    PORT,
    SHARE,
    Range,
    Section,
    Setting,
    gathered,
)

Policy = TypeVar("Policy", BreakerPolicy, RestartPolicy)


def load_settings(env: Mapping[str, str] | None = None, config_file: str | None = None) -> Settings:
    """The settings, or a `ConfigError` naming every problem: each unknown section or key of the
    file (`schema.py`), and each value that will not do, one per provider and per section."""
    env = dict(os.environ if env is None else env)
    file = _read(config_file)
    problems = schema.unknown_names(file)
    notes: list[str] = []
    unavailable: list[tuple[str, str]] = []
    providers: list[ProviderConfig] | None = None
    with gathered(problems):
        providers = discover_providers(file, env, notes, unavailable)
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ConfigError(f"provider names must be unique, got {names}")
    parts: dict[str, Any] = {}
    readers = [
        lambda: _server(file, env),
        lambda: _storage(file, env),
        lambda: _exposure(file, env),
        lambda: _policies(file),
        lambda: _caching(file, env),
        lambda: {"mcp": mcp_settings(file)},
    ]
    if providers is not None:  # routing is read against the active providers
        active = providers
        readers.append(lambda: _routing_settings(file, env, active, notes))
    for read in readers:
        with gathered(problems):
            parts.update(read())
    if problems or providers is None:
        raise ConfigError(*problems)
    settings = Settings(
        providers=tuple(providers),
        aliases={str(k): str(v) for k, v in values.table(file, "aliases").items()},
        tracing=bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
        notes=tuple(notes),
        unavailable=tuple(unavailable),
        **parts,
    )
    check_route_tools(settings.routing.routes, settings.mcp)
    return settings


def _read(config_file: str | None) -> dict[str, Any]:
    if not config_file:
        return {}
    try:
        return tomllib.loads(Path(config_file).read_text())
    except OSError as error:
        raise ConfigError(f"cannot read the config file {config_file}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_file} is not valid TOML: {error}") from None


def _server(file: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    server = schema.section(file, "server")
    return {
        "host": str(server.get("host", "127.0.0.1").value),
        "port": server.integer("port", 8080, within=PORT),
        "grace": server.number("grace_seconds", 30, within=AT_LEAST_ZERO),
        "max_body_bytes": int(server.number("max_body_mb", 32, within=ABOVE_ZERO) * 1024 * 1024),
        "data_dir": str(server.get("data_dir").value or default_data_dir(env)),
    }


def _storage(file: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Where requests are recorded, and how safely (the request log's own settings)."""
    storage = schema.section(file, "storage", env)
    database_url = storage.get("database_url", variable="DATABASE_URL")
    if database_url.value and not str(database_url.value).startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{database_url.name} must be a postgresql:// URL (without it relaybox uses its SQLite file)"
        )
    record = storage.get("record", "1", variable="RELAYBOX_RECORD")
    return {
        "database_url": database_url.value or None,
        "record_requests": str(record.value).lower() not in ("0", "false", "off", "no"),
        "journal": storage.choice("journal", "os", JOURNAL_MODES, variable="RELAYBOX_JOURNAL"),
        "log_prompts": schema.section(file, "log", env).choice(
            "prompts", "summary", ("summary", "none"), variable="LOG_PROMPTS"
        ),
    }


def _exposure(file: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Who may reach relaybox, and what limits do when storage is slow."""
    server = schema.section(file, "server", env)
    return {
        "allowed_hosts": _listed(server.get("allowed_hosts", variable="RELAYBOX_ALLOWED_HOSTS")),
        "allowed_origins": _origins(server.get("allowed_origins", variable="RELAYBOX_ALLOWED_ORIGINS")),
        "when_storage_slow": schema.section(file, "budget", env).choice(
            "when_storage_slow", "allow", ("allow", "deny"), variable="BUDGET_WHEN_STORAGE_SLOW"
        ),
    }


def _listed(setting: Setting) -> tuple[str, ...]:
    """A list from a comma-separated variable, or the file's list."""
    if setting.from_environment:
        return tuple(item.strip() for item in str(setting.value).split(",") if item.strip())
    if setting.value is None:
        return ()
    if not isinstance(setting.value, list) or not all(isinstance(item, str) for item in setting.value):
        raise ConfigError(f"{setting.name} must be a list of strings")
    return tuple(setting.value)


def _origins(setting: Setting) -> tuple[str, ...]:
    origins = _listed(setting)
    for origin in origins:
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                f"{setting.name}: {origin!r} is not an origin like https://app.example.com or http://localhost:3000"
            )
    return tuple(origin.rstrip("/").lower() for origin in origins)


# The numbers each policy may take, by field: a field missing here fails every start (KeyError),
# so a field added to a policy cannot go unchecked.
BREAKER_RANGES: Mapping[str, Range] = {
    "consecutive_failures": AT_LEAST_ONE,
    "failure_rate": Range(0, 1, above=True),
    "window": ABOVE_ZERO,
    "minimum_volume": AT_LEAST_ONE,
    "cooldown": ABOVE_ZERO,
    "max_cooldown": ABOVE_ZERO,
}
RESTART_RANGES: Mapping[str, Range] = {
    "max_restarts": AT_LEAST_ZERO,
    "period": ABOVE_ZERO,
    "backoff_initial": AT_LEAST_ZERO,
    "backoff_max": AT_LEAST_ZERO,
    "escalation_initial": ABOVE_ZERO,
    "escalation_max": ABOVE_ZERO,
}


def _policies(file: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "breaker": _policy(schema.section(file, "breaker"), BreakerPolicy, BREAKER_RANGES),
        "restart": _policy(schema.section(file, "supervisor"), RestartPolicy, RESTART_RANGES),
    }


def _policy(section: Section, policy: type[Policy], ranges: Mapping[str, Range]) -> Policy:
    """A policy whose fields are its table's keys, each read as its default's type and range."""
    defaults = policy()
    read = {}
    for field in attrs.fields(policy):
        default = getattr(defaults, field.name)
        reader = section.integer if isinstance(default, int) else section.number
        read[field.name] = reader(field.name, default, within=ranges[field.name])
    return policy(**read)


def _caching(file: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The response cache and prompt compression."""
    cache = schema.section(file, "cache", env)
    megabytes = cache.number("max_mb", 64, variable="RESPONSE_CACHE_MB", within=AT_LEAST_ZERO)
    return {
        "cache_bytes": int(megabytes * 1024 * 1024),
        "cache_ttl": cache.number("ttl_seconds", 3600, variable="RESPONSE_CACHE_TTL", within=ABOVE_ZERO),
        "compression": schema.section(file, "compression", env).choice(
            "level", "safe", LEVELS, variable="COMPRESSION_LEVEL"
        ),
    }


def _routing_settings(
    file: Mapping[str, Any], env: Mapping[str, str], providers: list[ProviderConfig], notes: list[str]
) -> dict[str, Any]:
    routing = schema.section(file, "routing", env)
    return {
        "routing": _routing(file, routing, providers, notes),
        "default_provider": _default_provider(routing, providers, notes),
        "dedup_seconds": routing.number("dedup_seconds", 5, variable="DEDUP_SECONDS", within=AT_LEAST_ZERO),
    }


def _default_provider(routing: Section, providers: list[ProviderConfig], notes: list[str]) -> str | None:
    """The provider that wins ties; one that is not active is noted, naming the setting as the user
    wrote it (seed 002 spells provider ids with underscores: claude_cli is claude-cli)."""
    chosen = routing.get("default_provider", variable="DEFAULT_PROVIDER")
    if not chosen.value:
        return None
    names = [p.name for p in providers]
    name = str(chosen.value)
    if name.replace("_", "-") in names:
        return name.replace("_", "-")
    if name.replace("_", "-") in BUILTIN_PROVIDERS:
        why = f"{name} is not active (its note above says why)"
    else:
        near = nearest(name, [*names, *BUILTIN_PROVIDERS])
        why = f"no provider is named {name!r}" + (f"; did you mean `{near}`?" if near else "")
    notes.append(f"{chosen.written()} is ignored: {why}")
    return None


def _routing(
    file: Mapping[str, Any], routing: Section, providers: list[ProviderConfig], notes: list[str]
) -> RoutingSettings:
    """[routing], [routes.NAME] and [[ab_tests]] from the file; seed 001's and 002's variables win."""
    thresholds = TierThresholds(
        routing.integer("economy_max", 25, within=PERCENT),
        routing.integer("standard_max", 60, within=PERCENT),
    )
    if not thresholds.economy_max < thresholds.standard_max:
        raise ConfigError("[routing] needs 0 <= economy_max < standard_max <= 100")
    llm_classifier = routing.get("llm_classifier", False, variable="LLM_CLASSIFIER")
    classify = str(llm_classifier.value).lower() in ("1", "true", "yes", "on")
    if classify:
        notes.append(
            f"{llm_classifier.name}: the cheapest economy model classifies each smart-routed request"
        )
    return RoutingSettings(
        thresholds=thresholds,
        evidence=EvidencePolicy(
            success_threshold=routing.number(
                "success_threshold", 0.8, variable="SUCCESS_THRESHOLD", within=SHARE
            ),
            consecutive_failure_limit=routing.integer(
                "consecutive_failure_limit", 3, variable="CONSECUTIVE_FAILURE_LIMIT", within=AT_LEAST_ONE
            ),
            min_volume=routing.number("min_volume", 20, within=AT_LEAST_ZERO),
        ),
        selection=SelectionPolicy(budget_pressure=routing.number("budget_pressure", 0.8, within=SHARE)),
        routes=_routes(file, routing.env),
        mode=routing.choice("provider_mode", "hybrid", MODES, variable="PROVIDER_MODE"),
        unknown_models=routing.choice("unknown_models", "route", ("route", "reject")),
        ab_tests=_ab_tests(file, {p.name for p in providers}),
        refresh_seconds=routing.number("refresh_seconds", 60, within=ABOVE_ZERO),
        llm_classifier=classify,
        cascade_below=routing.integer("cascade_below", 50, within=PERCENT),
        savings_baseline=_savings_baseline(routing.get("savings_baseline").value, providers),
        learned=_learned_policy(routing, providers),
    )


def _learned_policy(routing: Section, providers: list[ProviderConfig]) -> LearnedPolicy:
    """The learned router's settings: its quality bar and the labels it makes for itself."""
    defaults = LearnedPolicy()
    shares = {key: routing.number(key, getattr(defaults, key), within=SHARE) for key in LEARNED_SHARES}
    enabled = routing.flag("learned")
    judge = routing.get("judge_model").value
    promised = routing.get("quality_kept")
    if isinstance(promised.value, str) and promised.value != "off":
        raise ConfigError(f'{promised.name} must be a number from 0 to 1, or "off", got {promised.value!r}')
    promised_share = (
        None
        if promised.value == "off"
        else routing.number("quality_kept", defaults.quality_kept or 0.0, within=SHARE)
    )
    return LearnedPolicy(
        enabled=defaults.enabled if enabled is None else enabled,
        judge_model=None if judge is None else _configured_model(judge, providers, "judge_model"),
        quality_kept=promised_share,
        **shares,
    )


def _savings_baseline(value: object, providers: list[ProviderConfig]) -> str | None:
    return None if value is None else _configured_model(value, providers, "savings_baseline")


def _configured_model(value: object, providers: list[ProviderConfig], key: str) -> str:
    provider, _, model = str(value).partition(":")
    config = next((p for p in providers if p.name == provider), None)
    if config is None or not any(m.id == model for m in config.models):
        raise ConfigError(f"[routing] {key} must be 'provider:model' of a configured model, got {value!r}")
    return f"{provider}:{model}"


def _routes(file: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, NamedRoute]:
    """The built-in routes, then [routes.NAME] (a `chain` list, or seed 002's primary/backup_N keys),
    then seed 002's ROLE_<NAME>=target variables, which put a target first in that route."""
    routes = dict(BUILTIN_ROUTES)
    for name, section in values.table(file, "routes").items():
        if isinstance(section, list):
            chain = section
        elif isinstance(section, dict) and "chain" in section:
            if any(key in section for key in CHAIN_KEYS):
                raise ConfigError(
                    f"[routes.{name}]: either chain = [...] or {', '.join(CHAIN_KEYS)}, not both"
                )
            chain = section["chain"]
        elif isinstance(section, dict):
            chain = [section[key] for key in CHAIN_KEYS if key in section]
        else:
            raise ConfigError(f"[routes.{name}] must be a list or a table")
        if not chain or not all(isinstance(target, str) and target for target in chain):
            raise ConfigError(f"[routes.{name}]: the chain must be a non-empty list of names")
        tools = section.get("tools", []) if isinstance(section, dict) else []
        if not isinstance(tools, list) or not all(isinstance(server, str) for server in tools):
            raise ConfigError(f"[routes.{name}]: tools must be a list of [mcp.servers] names")
        routes[str(name)] = NamedRoute(str(name), tuple(chain), tuple(tools))
    for variable, value in env.items():
        if variable.startswith("ROLE_") and value:
            name = variable[len("ROLE_") :].lower()
            rest = routes[name].chain if name in routes else ("auto",)
            routes[name] = NamedRoute(name, (value, *(t for t in rest if t != value)))
    return routes


def _ab_tests(file: Mapping[str, Any], provider_names: set[str]) -> tuple[ABTest, ...]:
    raw = file.get("ab_tests", [])
    if not isinstance(raw, list):
        raise ConfigError("[[ab_tests]] must be an array of tables")
    tests = []
    for i, item in enumerate(raw):
        where = f"[[ab_tests]] #{i + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        pair = []
        for key in ("baseline", "challenger"):
            provider, _, model = str(item.get(key, "")).partition(":")
            if not model:
                raise ConfigError(f"{where}: '{key}' must be 'provider:model'")
            if provider not in provider_names:
                raise ConfigError(f"{where}: '{key}' names provider {provider!r}, which is not active")
            pair.append(Candidate(provider, model))
        split = values.number(Setting(item.get("split", 0.1), f"{where} split"))
        if not 0 < split < 1:
            raise ConfigError(
                f"{where}: split must be between 0 and 1 (the challenger's share), got {split:g}"
            )
        categories = item.get("categories", [])
        if not isinstance(categories, list):
            raise ConfigError(f"{where}: categories must be a list")
        tests.append(
            ABTest(
                name=str(item.get("name") or f"ab{i + 1}"),
                baseline=pair[0],
                challenger=pair[1],
                split=split,
                categories=frozenset(str(c) for c in categories),
            )
        )
    return tuple(tests)
