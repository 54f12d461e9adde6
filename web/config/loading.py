"""Settings: embedded defaults, then the TOML file, then the environment (which wins). Every
decision is written down in `Settings.notes`, which `relaybox serve` prints at start-up; which
providers are active is found out by `web/config/discovery.py`."""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.recorder import JOURNAL_MODES
from relaybox.actors.supervisor import RestartPolicy
from relaybox.protocol.routing.catalog import Candidate
from relaybox.protocol.routing.classifier import TierThresholds
from relaybox.protocol.routing.evidence import EvidencePolicy
from relaybox.protocol.routing.learned_route import LearnedPolicy
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.routing.routes import BUILTIN_ROUTES, CHAIN_KEYS, MODES, NamedRoute
from relaybox.protocol.routing.selection import ABTest, SelectionPolicy
from relaybox.web.config import values
from relaybox.web.config.discovery import discover_providers
from relaybox.web.config.mcp import check_route_tools, mcp_settings
from relaybox.web.config.settings import ConfigError, ProviderConfig, Settings, default_data_dir


def load_settings(env: Mapping[str, str] | None = None, config_file: str | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    file: dict[str, Any] = {}
    if config_file:
        try:
            file = tomllib.loads(Path(config_file).read_text())
        except OSError as error:
            raise ConfigError(f"cannot read the config file {config_file}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{config_file} is not valid TOML: {error}") from None
    server = values.table(file, "server")
    notes: list[str] = []
    unavailable: list[tuple[str, str]] = []
    providers = discover_providers(file, env, notes, unavailable)
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ConfigError(f"provider names must be unique, got {names}")
    routing = values.table(file, "routing")
    default_provider = env.get("DEFAULT_PROVIDER") or routing.get("default_provider")
    if default_provider and default_provider not in names:
        notes.append(f"DEFAULT_PROVIDER={default_provider} is not an active provider; ignored")
        default_provider = None
    aliases = {str(k): str(v) for k, v in values.table(file, "aliases").items()}
    breaker = values.table(file, "breaker")
    try:
        breaker_policy = BreakerPolicy(**breaker)
        restart_policy = RestartPolicy(**values.table(file, "supervisor"))
    except TypeError as error:
        raise ConfigError(f"unknown setting in [breaker] or [supervisor]: {error}") from None
    cache = values.table(file, "cache")
    database_url = env.get("DATABASE_URL") or values.table(file, "storage").get("database_url") or None
    if database_url and not str(database_url).startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "DATABASE_URL must be a postgresql:// URL (without it relaybox uses its SQLite file)"
        )
    settings = Settings(
        host=str(server.get("host", "127.0.0.1")),
        port=values.integer(server.get("port", 8080), "[server] port"),
        grace=values.number(server.get("grace_seconds", 30), "[server] grace_seconds"),
        providers=tuple(providers),
        default_provider=default_provider,
        aliases=aliases,
        max_body_bytes=int(
            values.number(server.get("max_body_mb", 32), "[server] max_body_mb") * 1024 * 1024
        ),
        breaker=breaker_policy,
        restart=restart_policy,
        data_dir=str(server.get("data_dir") or default_data_dir(env)),
        database_url=database_url,
        record_requests=env.get(
            "RELAYBOX_RECORD", str(values.table(file, "storage").get("record", "1"))
        ).lower()
        not in ("0", "false", "off", "no"),
        routing=_routing(file, env, providers, notes),
        mcp=mcp_settings(file),
        tracing=bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
        dedup_seconds=values.number(
            env.get("DEDUP_SECONDS", routing.get("dedup_seconds", 5)), "dedup_seconds"
        ),
        cache_bytes=max(
            0,
            int(
                values.number(env.get("RESPONSE_CACHE_MB", cache.get("max_mb", 64)), "[cache] max_mb")
                * 1024
                * 1024
            ),
        ),
        compression=values.compression_level(
            env.get("COMPRESSION_LEVEL", values.table(file, "compression").get("level", "safe"))
        ),
        cache_ttl=values.positive(
            env.get("RESPONSE_CACHE_TTL", cache.get("ttl_seconds", 3600)), "[cache] ttl_seconds"
        ),
        **_exposure_and_retention(file, env),
        notes=tuple(notes),
        unavailable=tuple(unavailable),
    )
    check_route_tools(settings.routing.routes, settings.mcp)
    return settings


def _exposure_and_retention(file: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Who may reach relaybox, what its log keeps and how safely, and what limits do when storage
    is slow."""
    server = values.table(file, "server")
    budget = values.table(file, "budget").get("when_storage_slow", "allow")
    return {
        "allowed_hosts": _listed(
            env.get("RELAYBOX_ALLOWED_HOSTS"), server.get("allowed_hosts"), "allowed_hosts"
        ),
        "allowed_origins": _origins(env.get("RELAYBOX_ALLOWED_ORIGINS"), server.get("allowed_origins")),
        "log_prompts": _log_prompts(
            env.get("LOG_PROMPTS", values.table(file, "log").get("prompts", "summary"))
        ),
        "when_storage_slow": _when_storage_slow(env.get("BUDGET_WHEN_STORAGE_SLOW", budget)),
        "journal": _journal(env.get("RELAYBOX_JOURNAL", values.table(file, "storage").get("journal", "os"))),
    }


def _listed(variable: str | None, setting: object, name: str) -> tuple[str, ...]:
    """A list from a comma-separated variable (which wins) or the file's list."""
    if variable is not None:
        return tuple(item.strip() for item in variable.split(",") if item.strip())
    if setting is None:
        return ()
    if not isinstance(setting, list) or not all(isinstance(item, str) for item in setting):
        raise ConfigError(f"[server] {name} must be a list of strings")
    return tuple(setting)


def _origins(variable: str | None, setting: object) -> tuple[str, ...]:
    origins = _listed(variable, setting, "allowed_origins")
    for origin in origins:
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                f"allowed_origins: {origin!r} is not an origin like https://app.example.com or http://localhost:3000"
            )
    return tuple(origin.rstrip("/").lower() for origin in origins)


def _when_storage_slow(value: object) -> str:
    if value not in ("allow", "deny"):
        raise ConfigError(f"[budget] when_storage_slow must be 'allow' or 'deny', got {value!r}")
    return str(value)


def _journal(value: object) -> str:
    if value not in JOURNAL_MODES:
        raise ConfigError(f"[storage] journal must be 'os', 'fsync' or 'off', got {value!r}")
    return str(value)


def _log_prompts(value: object) -> str:
    if value not in ("summary", "none"):
        raise ConfigError(f"[log] prompts must be 'summary' or 'none', got {value!r}")
    return str(value)


def _routing(
    file: Mapping[str, Any], env: Mapping[str, str], providers: list[ProviderConfig], notes: list[str]
) -> RoutingSettings:
    """[routing], [routes.NAME] and [[ab_tests]] from the file; seed 001's and 002's variables win."""
    routing = values.table(file, "routing")

    def setting(env_name: str, key: str, default: object) -> object:
        return env.get(env_name) or routing.get(key, default)

    threshold = values.number(setting("SUCCESS_THRESHOLD", "success_threshold", 0.8), "SUCCESS_THRESHOLD")
    refresh = values.number(routing.get("refresh_seconds", 60), "[routing] refresh_seconds")
    if refresh <= 0:
        raise ConfigError("[routing] refresh_seconds must be positive")
    if not 0 <= threshold <= 1:
        raise ConfigError(f"SUCCESS_THRESHOLD must be between 0 and 1, got {threshold}")
    limit = values.integer(
        setting("CONSECUTIVE_FAILURE_LIMIT", "consecutive_failure_limit", 3), "CONSECUTIVE_FAILURE_LIMIT"
    )
    if limit < 1:
        raise ConfigError("CONSECUTIVE_FAILURE_LIMIT must be at least 1")
    thresholds = TierThresholds(
        values.integer(routing.get("economy_max", 25), "[routing] economy_max"),
        values.integer(routing.get("standard_max", 60), "[routing] standard_max"),
    )
    if not 0 <= thresholds.economy_max < thresholds.standard_max <= 100:
        raise ConfigError("[routing] needs 0 <= economy_max < standard_max <= 100")
    mode = str(setting("PROVIDER_MODE", "provider_mode", "hybrid")).lower()
    if mode not in MODES:
        raise ConfigError(f"provider_mode must be one of {', '.join(MODES)}, got {mode!r}")
    unknown = str(routing.get("unknown_models", "route"))
    if unknown not in ("route", "reject"):
        raise ConfigError(f"[routing] unknown_models must be 'route' or 'reject', got {unknown!r}")
    llm_classifier = str(setting("LLM_CLASSIFIER", "llm_classifier", False)).lower() in (
        "1",
        "true",
        "yes",
        "on",
    )
    if llm_classifier:
        notes.append("LLM_CLASSIFIER: the cheapest economy model classifies each smart-routed request")
    return RoutingSettings(
        thresholds=thresholds,
        evidence=EvidencePolicy(
            success_threshold=threshold,
            consecutive_failure_limit=limit,
            min_volume=values.number(routing.get("min_volume", 20), "[routing] min_volume"),
        ),
        selection=SelectionPolicy(
            budget_pressure=values.number(routing.get("budget_pressure", 0.8), "[routing] budget_pressure")
        ),
        routes=_routes(file, env),
        mode=mode,
        unknown_models=unknown,
        ab_tests=_ab_tests(file, {p.name for p in providers}),
        refresh_seconds=refresh,
        llm_classifier=llm_classifier,
        cascade_below=values.integer(routing.get("cascade_below", 50), "[routing] cascade_below"),
        savings_baseline=_savings_baseline(routing.get("savings_baseline"), providers),
        learned=_learned_policy(routing, providers),
    )


def _learned_policy(routing: Mapping[str, Any], providers: list[ProviderConfig]) -> LearnedPolicy:
    """The learned router's settings: its quality bar and the labels it makes for itself."""
    defaults = LearnedPolicy()

    def share(key: str) -> float:
        value = values.number(routing.get(key, getattr(defaults, key)), f"[routing] {key}")
        if not 0 <= value <= 1:
            raise ConfigError(f"[routing] {key} must be between 0 and 1, got {value}")
        return value

    enabled = routing.get("learned", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"[routing] learned must be true or false, got {enabled!r}")
    judge = routing.get("judge_model")
    return LearnedPolicy(
        enabled=enabled,
        quality_target=share("quality_target"),
        quality_gap=share("quality_gap"),
        judge_rate=share("judge_rate"),
        shadow_rate=share("shadow_rate"),
        shadow_up_rate=share("shadow_up_rate"),
        judge_model=None if judge is None else _configured_model(judge, providers, "judge_model"),
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
            chain = section["chain"]
        elif isinstance(section, dict):
            unknown = set(section) - {*CHAIN_KEYS, "tools"}
            if unknown:
                raise ConfigError(
                    f"[routes.{name}]: unknown keys {sorted(unknown)}; use {', '.join(CHAIN_KEYS)}, tools"
                )
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
        split = values.number(item.get("split", 0.1), f"{where} split")
        if not 0 < split < 1:
            raise ConfigError(f"{where}: split must be between 0 and 1 (the challenger's share)")
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
