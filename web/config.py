"""Settings: embedded defaults, then the TOML file, then the environment (which wins).

Provider discovery happens here too: a provider is active when it is configured (an API key,
a TOML section, a `CUSTOM_PROVIDERS` entry) or present (a `claude` binary on PATH). Every
decision is written down in `Settings.notes`, which `relaybox serve` prints at start-up.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.provider import ProviderLimits
from relaybox.actors.supervisor import RestartPolicy
from relaybox.protocol.compression.pipeline import LEVELS
from relaybox.protocol.routing.catalog import TIERS, Candidate, ModelEntry
from relaybox.protocol.routing.classifier import TierThresholds
from relaybox.protocol.routing.evidence import EvidencePolicy
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.routing.routes import BUILTIN_ROUTES, CHAIN_KEYS, MODES, NamedRoute
from relaybox.protocol.routing.selection import ABTest, SelectionPolicy
from relaybox.protocol.wire.claude_cli import SystemPromptStrategy
from relaybox.protocol.wire.ollama import model_names


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


OPENAI_MODELS = (
    ModelEntry("gpt-4o-mini", "economy", context_window=128_000),
    ModelEntry("gpt-4.1-mini", "economy", context_window=1_047_576),
    ModelEntry("gpt-4o", "standard", context_window=128_000),
    ModelEntry("gpt-4.1", "standard", context_window=1_047_576),
    ModelEntry("o3", "premium", context_window=200_000),
)
ANTHROPIC_MODELS = (
    ModelEntry("claude-haiku-4-5", "economy", context_window=200_000),
    ModelEntry("claude-sonnet-4-5", "standard", context_window=200_000),
    ModelEntry("claude-opus-4-5", "premium", context_window=200_000),
)
GEMINI_MODELS = (
    ModelEntry("gemini-2.5-flash-lite", "economy", context_window=1_048_576),
    ModelEntry("gemini-2.5-flash", "economy", context_window=1_048_576),
    ModelEntry("gemini-2.5-pro", "standard", context_window=1_048_576),
)
OPENROUTER_MODELS = (
    ModelEntry("openai/gpt-4o-mini", "economy", context_window=128_000),
    ModelEntry("anthropic/claude-sonnet-4.5", "standard", context_window=200_000),
    ModelEntry("google/gemini-2.5-flash", "economy", context_window=1_048_576),
)


OPENAI_IMAGE_MODELS = (
    ModelEntry("gpt-image-1", "standard"),  # token-priced: genai-prices has it
    ModelEntry("dall-e-3", "standard", per_image=0.04),  # standard quality, 1024x1024
    ModelEntry("dall-e-2", "economy", per_image=0.02),
)
OPENROUTER_IMAGE_MODELS = (ModelEntry("google/gemini-2.5-flash-image", "standard"),)


@attrs.frozen
class BuiltinApi:
    """A well-known API provider: enabled by its key in the environment (or a TOML section)."""

    name: str
    kind: str
    display_name: str
    key_env: str
    base_env: str
    default_base: str
    models: tuple[ModelEntry, ...]
    default_model: str
    prefixes: tuple[str, ...]
    image_models: tuple[ModelEntry, ...] = ()
    image_api: str = "images"


BUILTIN_APIS = (
    BuiltinApi(
        "openai",
        "openai-compatible",
        "OpenAI",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "https://api.openai.com/v1",
        OPENAI_MODELS,
        "gpt-4o-mini",
        ("gpt-", "o1", "o3", "o4", "chatgpt-"),
        image_models=OPENAI_IMAGE_MODELS,
    ),
    BuiltinApi(
        "anthropic",
        "anthropic",
        "Anthropic",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "https://api.anthropic.com",
        ANTHROPIC_MODELS,
        "claude-haiku-4-5",
        ("claude-",),
    ),
    BuiltinApi(
        "gemini",
        "gemini",
        "Google Gemini",
        "GEMINI_API_KEY",
        "GEMINI_BASE_URL",
        "https://generativelanguage.googleapis.com",
        GEMINI_MODELS,
        "gemini-2.5-flash",
        ("gemini-",),
    ),
    BuiltinApi(
        "openrouter",
        "openai-compatible",
        "OpenRouter",
        "OPENROUTER_API_KEY",
        "OPENROUTER_BASE_URL",
        "https://openrouter.ai/api/v1",
        OPENROUTER_MODELS,
        "openai/gpt-4o-mini",
        ("openai/", "anthropic/", "google/", "meta-llama/", "mistralai/", "deepseek/", "qwen/", "x-ai/"),
        image_models=OPENROUTER_IMAGE_MODELS,
        image_api="chat",
    ),
)

GEMINI_CLI_MODELS = (
    ModelEntry("gemini-2.5-flash", "economy", context_window=1_048_576),
    ModelEntry("gemini-2.5-pro", "standard", context_window=1_048_576),
)

# The CLI resolves these aliases to the current model of each family itself.
CLAUDE_CLI_MODELS = (
    ModelEntry("haiku", "economy", context_window=200_000),
    ModelEntry("sonnet", "standard", context_window=200_000),
    ModelEntry("opus", "premium", context_window=200_000),
)


@attrs.frozen
class ProviderConfig:
    name: str
    kind: str  # "openai-compatible" | "claude-cli"
    display_name: str
    models: tuple[ModelEntry, ...]
    default_model: str
    limits: ProviderLimits
    priority: int = 0
    accepts_prefixes: tuple[str, ...] = ()
    # openai-compatible
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    host_type: str = "openai"
    image_models: tuple[ModelEntry, ...] = ()
    image_api: str = "images"  # "images" (OpenAI's images API) or "chat" (image output from chat, OpenRouter)
    # claude-cli
    executable: str | None = None
    system_prompt: SystemPromptStrategy = SystemPromptStrategy.REPLACE
    child_env: dict[str, str] = attrs.field(factory=dict, repr=False)
    warm: int = 0  # claude-cli: processes started ahead of time, waiting on stdin (the warm pool)
    # `local = true/false` in the provider's section; unset: decided by `local`.
    local_setting: bool | None = None

    @property
    def local(self) -> bool:
        """On the user's own machine or subscription: what provider_mode = "local" keeps."""
        if self.local_setting is not None:
            return self.local_setting
        if self.kind in ("claude-cli", "gemini-cli", "ollama"):
            return True
        # An OpenAI-compatible server on this machine or the LAN (seed 000's local backend).
        host = urllib.parse.urlsplit(self.base_url or "").hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_private
        except ValueError:
            return False


@attrs.frozen
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    providers: tuple[ProviderConfig, ...] = ()
    default_provider: str | None = None
    aliases: dict[str, str] = attrs.field(factory=dict)
    max_body_bytes: int = 32 * 1024 * 1024
    breaker: BreakerPolicy = attrs.field(factory=BreakerPolicy)
    restart: RestartPolicy = attrs.field(factory=RestartPolicy)
    data_dir: str = ""
    database_url: str | None = attrs.field(default=None, repr=False)
    record_requests: bool = True  # RELAYBOX_RECORD=0 turns the request log off (for comparisons)
    routing: RoutingSettings = attrs.field(factory=RoutingSettings)
    # Identical requests within this many seconds of one in flight share its upstream call (0: off).
    dedup_seconds: float = 5.0
    # The response cache (web/answer_cache.py): its bound in bytes (0: off) and how long an answer is kept.
    cache_bytes: int = 64 * 1024 * 1024
    cache_ttl: float = 3600.0
    # Prompt compression (protocol/compression/): "off", "safe" (lossless stages) or "aggressive".
    compression: str = "safe"
    # `relaybox serve --insecure-no-auth`: serve beyond loopback with no client keys (warned at every start).
    insecure_no_auth: bool = False
    lan: bool = False  # `relaybox serve --lan`: every interface, and the addresses to use printed
    # `relaybox serve --workers N`: this process's index among N processes sharing the port.
    worker: int = 0
    workers: int = 1
    notes: tuple[str, ...] = ()
    # Providers configured explicitly (an executable or a base URL named) that could not be
    # activated: a note at start-up, a failure for `relaybox doctor`.
    unavailable: tuple[tuple[str, str], ...] = ()  # (provider, why)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def default_data_dir(env: Mapping[str, str]) -> str:
    if env.get("RELAYBOX_DATA_DIR"):
        return env["RELAYBOX_DATA_DIR"]
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", ".")) / ".local" / "share")
    return str(Path(base) / "relaybox")


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
    server = _table(file, "server")
    notes: list[str] = []
    unavailable: list[tuple[str, str]] = []
    providers = _providers(file, env, notes, unavailable)
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ConfigError(f"provider names must be unique, got {names}")
    routing = _table(file, "routing")
    default_provider = env.get("DEFAULT_PROVIDER") or routing.get("default_provider")
    if default_provider and default_provider not in names:
        notes.append(f"DEFAULT_PROVIDER={default_provider} is not an active provider; ignored")
        default_provider = None
    aliases = {str(k): str(v) for k, v in _table(file, "aliases").items()}
    breaker = _table(file, "breaker")
    try:
        breaker_policy = BreakerPolicy(**breaker)
        restart_policy = RestartPolicy(**_table(file, "supervisor"))
    except TypeError as error:
        raise ConfigError(f"unknown setting in [breaker] or [supervisor]: {error}") from None
    cache = _table(file, "cache")
    database_url = env.get("DATABASE_URL") or _table(file, "storage").get("database_url") or None
    if database_url and not str(database_url).startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "DATABASE_URL must be a postgresql:// URL (without it relaybox uses its SQLite file)"
        )
    return Settings(
        host=str(server.get("host", "127.0.0.1")),
        port=_int(server.get("port", 8080), "[server] port"),
        providers=tuple(providers),
        default_provider=default_provider,
        aliases=aliases,
        max_body_bytes=int(_float(server.get("max_body_mb", 32), "[server] max_body_mb") * 1024 * 1024),
        breaker=breaker_policy,
        restart=restart_policy,
        data_dir=str(server.get("data_dir") or default_data_dir(env)),
        database_url=database_url,
        record_requests=env.get("RELAYBOX_RECORD", str(_table(file, "storage").get("record", "1"))).lower()
        not in ("0", "false", "off", "no"),
        routing=_routing(file, env, providers, notes),
        dedup_seconds=_float(env.get("DEDUP_SECONDS", routing.get("dedup_seconds", 5)), "dedup_seconds"),
        cache_bytes=max(
            0,
            int(
                _float(env.get("RESPONSE_CACHE_MB", cache.get("max_mb", 64)), "[cache] max_mb") * 1024 * 1024
            ),
        ),
        compression=_compression_level(
            env.get("COMPRESSION_LEVEL", _table(file, "compression").get("level", "safe"))
        ),
        cache_ttl=_positive(
            env.get("RESPONSE_CACHE_TTL", cache.get("ttl_seconds", 3600)), "[cache] ttl_seconds"
        ),
        notes=tuple(notes),
        unavailable=tuple(unavailable),
    )


def _routing(
    file: Mapping[str, Any], env: Mapping[str, str], providers: list[ProviderConfig], notes: list[str]
) -> RoutingSettings:
    """[routing], [routes.NAME] and [[ab_tests]] from the file; seed 001's and 002's variables win."""
    routing = _table(file, "routing")

    def setting(env_name: str, key: str, default: object) -> object:
        return env.get(env_name) or routing.get(key, default)

    threshold = _float(setting("SUCCESS_THRESHOLD", "success_threshold", 0.8), "SUCCESS_THRESHOLD")
    refresh = _float(routing.get("refresh_seconds", 60), "[routing] refresh_seconds")
    if refresh <= 0:
        raise ConfigError("[routing] refresh_seconds must be positive")
    if not 0 <= threshold <= 1:
        raise ConfigError(f"SUCCESS_THRESHOLD must be between 0 and 1, got {threshold}")
    limit = _int(
        setting("CONSECUTIVE_FAILURE_LIMIT", "consecutive_failure_limit", 3), "CONSECUTIVE_FAILURE_LIMIT"
    )
    if limit < 1:
        raise ConfigError("CONSECUTIVE_FAILURE_LIMIT must be at least 1")
    thresholds = TierThresholds(
        _int(routing.get("economy_max", 25), "[routing] economy_max"),
        _int(routing.get("standard_max", 60), "[routing] standard_max"),
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
            min_volume=_float(routing.get("min_volume", 20), "[routing] min_volume"),
        ),
        selection=SelectionPolicy(
            budget_pressure=_float(routing.get("budget_pressure", 0.8), "[routing] budget_pressure")
        ),
        routes=_routes(file, env),
        mode=mode,
        unknown_models=unknown,
        ab_tests=_ab_tests(file, {p.name for p in providers}),
        refresh_seconds=refresh,
        llm_classifier=llm_classifier,
        cascade_below=_int(routing.get("cascade_below", 50), "[routing] cascade_below"),
        savings_baseline=_savings_baseline(routing.get("savings_baseline"), providers),
    )


def _savings_baseline(value: object, providers: list[ProviderConfig]) -> str | None:
    if value is None:
        return None
    provider, _, model = str(value).partition(":")
    config = next((p for p in providers if p.name == provider), None)
    if config is None or not any(m.id == model for m in config.models):
        raise ConfigError(
            f"[routing] savings_baseline must be 'provider:model' of a configured model, got {value!r}"
        )
    return f"{provider}:{model}"


def _routes(file: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, NamedRoute]:
    """The built-in routes, then [routes.NAME] (a `chain` list, or seed 002's primary/backup_N keys),
    then seed 002's ROLE_<NAME>=target variables, which put a target first in that route."""
    routes = dict(BUILTIN_ROUTES)
    for name, section in _table(file, "routes").items():
        if isinstance(section, list):
            chain = section
        elif isinstance(section, dict) and "chain" in section:
            chain = section["chain"]
        elif isinstance(section, dict):
            unknown = set(section) - set(CHAIN_KEYS)
            if unknown:
                raise ConfigError(
                    f"[routes.{name}]: unknown keys {sorted(unknown)}; use {', '.join(CHAIN_KEYS)}"
                )
            chain = [section[key] for key in CHAIN_KEYS if key in section]
        else:
            raise ConfigError(f"[routes.{name}] must be a list or a table")
        if not chain or not all(isinstance(target, str) and target for target in chain):
            raise ConfigError(f"[routes.{name}]: the chain must be a non-empty list of names")
        routes[str(name)] = NamedRoute(str(name), tuple(chain))
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
        split = _float(item.get("split", 0.1), f"{where} split")
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


def _table(file: Mapping[str, Any], name: str) -> dict[str, Any]:
    table = file.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    return dict(table)


def _int(value: object, name: str) -> int:
    try:
        if isinstance(value, float | bool):
            raise ValueError
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _local(section: Mapping[str, Any]) -> bool | None:
    value = section.get("local")
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"'local' must be true or false, got {value!r}")
    return value


def _float(value: object, name: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def _compression_level(value: object) -> str:
    level = str(value).lower()
    if level not in LEVELS:
        raise ConfigError(f"compression level must be one of {', '.join(LEVELS)}, got {value!r}")
    return level


def _positive(value: object, name: str) -> float:
    number = _float(value, name)
    if number <= 0:
        raise ConfigError(f"{name} must be above 0, got {value!r}")
    return number


def _models(raw: object, where: str) -> tuple[ModelEntry, ...]:
    """Models in seed 001's CUSTOM_PROVIDERS shape, or the TOML file's snake_case one."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'models' must be a non-empty list")
    models = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            models.append(ModelEntry(item))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise ConfigError(f"{where}: models[{i}] needs an 'id'")
        tier = item.get("tier", "standard")
        if tier not in TIERS:
            raise ConfigError(f"{where}: models[{i}].tier must be one of {', '.join(TIERS)}")
        price_in = item.get("costPerMInput", item.get("input_per_mtok"))
        price_out = item.get("costPerMOutput", item.get("output_per_mtok"))
        context = item.get("maxContext", item.get("context_window"))
        per_image = item.get("costPerImage", item.get("per_image"))
        models.append(
            ModelEntry(
                item["id"],
                tier,
                None if price_in is None else _float(price_in, f"{where}: models[{i}] input price"),
                None if price_out is None else _float(price_out, f"{where}: models[{i}] output price"),
                None if context is None else _int(context, f"{where}: models[{i}] context window"),
                None if per_image is None else _float(per_image, f"{where}: models[{i}] price per image"),
            )
        )
    return tuple(models)


def _limits(section: Mapping[str, Any], *, slots: int, mailbox: int, idle_timeout: float) -> ProviderLimits:
    return ProviderLimits(
        slots=_int(section.get("slots", slots), "slots"),
        mailbox=_int(section.get("mailbox", mailbox), "mailbox"),
        idle_timeout=_float(section.get("timeout", idle_timeout), "timeout"),
    )


def _providers(
    file: Mapping[str, Any], env: Mapping[str, str], notes: list[str], unavailable: list[tuple[str, str]]
) -> list[ProviderConfig]:
    sections = _table(file, "providers")
    providers: list[ProviderConfig] = []

    claude = _claude_cli(dict(sections.pop("claude-cli", {})), env, notes, unavailable)
    if claude is not None:
        providers.append(claude)
    gemini_cli = _gemini_cli(dict(sections.pop("gemini-cli", {})), env, notes, unavailable)
    if gemini_cli is not None:
        providers.append(gemini_cli)

    for builtin in BUILTIN_APIS:
        provider = _builtin_api(builtin, dict(sections.pop(builtin.name, {})), env, notes)
        if provider is not None:
            providers.append(provider)

    ollama = _ollama(dict(sections.pop("ollama", {})), env, notes, unavailable)
    if ollama is not None:
        providers.append(ollama)

    custom: list[dict[str, Any]] = []
    if env.get("CUSTOM_PROVIDERS"):
        try:
            parsed = json.loads(env["CUSTOM_PROVIDERS"])
        except ValueError as error:
            raise ConfigError(f"CUSTOM_PROVIDERS is not valid JSON: {error}") from None
        if not isinstance(parsed, list):
            raise ConfigError("CUSTOM_PROVIDERS must be a JSON list of providers")
        custom.extend(parsed)
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ConfigError(f"[providers.{name}] must be a table")
        kind = section.get("kind", "openai-compatible")
        if kind != "openai-compatible":
            raise ConfigError(
                f"[providers.{name}]: kind {kind!r} is not supported yet "
                "(openai-compatible, or the built-in [providers.claude-cli] and [providers.openai])"
            )
        custom.append({"id": name, **section})
    timeout_local = _float(env.get("TIMEOUT_LOCAL", 300), "TIMEOUT_LOCAL")
    for i, item in enumerate(custom):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise ConfigError(f"custom provider #{i + 1} needs an 'id'")
        where = f"custom provider {item['id']}"
        base_url = item.get("baseUrl", item.get("base_url"))
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: 'baseUrl' must be an http(s) URL")
        if item.get("enabled", True) is False:
            notes.append(f"{item['id']}: disabled in the configuration")
            continue
        host_type = item.get("hostType", item.get("host_type", "openai"))
        if host_type not in ("openai", "openwebui"):
            raise ConfigError(f"{where}: host_type must be 'openai' or 'openwebui'")
        api_key = item.get("apiKey", item.get("api_key"))
        if item.get("api_key_env"):
            api_key = env.get(str(item["api_key_env"]))
        models = _models(item.get("models"), where)
        providers.append(
            ProviderConfig(
                name=item["id"],
                kind="openai-compatible",
                display_name=str(item.get("displayName", item.get("display_name", item["id"]))),
                models=models,
                default_model=str(item.get("defaultModel", item.get("default_model", models[0].id))),
                limits=_limits(item, slots=64, mailbox=64, idle_timeout=timeout_local),
                priority=_int(item.get("priority", 0), "priority"),
                local_setting=_local(item),
                base_url=base_url,
                api_key=api_key,
                host_type=host_type,
                image_models=_models(item["image_models"], where) if item.get("image_models") else (),
                image_api=str(item.get("image_api", "images")),
            )
        )
        notes.append(f"{item['id']}: active (custom OpenAI-compatible provider at {base_url})")
    return providers


def _builtin_api(
    builtin: BuiltinApi, section: dict[str, Any], env: Mapping[str, str], notes: list[str]
) -> ProviderConfig | None:
    api_key = env.get(builtin.key_env) or section.get("api_key")
    if section.get("enabled", True) is False:
        notes.append(f"{builtin.name}: disabled in the configuration")
        return None
    if not api_key:
        notes.append(f"{builtin.name}: inactive (set {builtin.key_env} to enable)")
        return None
    where = f"[providers.{builtin.name}]"
    notes.append(f"{builtin.name}: active ({builtin.key_env} is set)")
    return ProviderConfig(
        name=builtin.name,
        kind=builtin.kind,
        display_name=builtin.display_name,
        models=_models(section["models"], where) if "models" in section else builtin.models,
        default_model=str(section.get("default_model", builtin.default_model)),
        limits=_limits(section, slots=256, mailbox=256, idle_timeout=120),
        priority=_int(section.get("priority", 0), "priority"),
        local_setting=_local(section),
        accepts_prefixes=builtin.prefixes,
        base_url=env.get(builtin.base_env) or section.get("base_url") or builtin.default_base,
        api_key=api_key,
        image_models=_models(section["image_models"], where)
        if "image_models" in section
        else builtin.image_models,
        image_api=builtin.image_api,
    )


def probe_ollama(base_url: str, timeout: float = 0.5) -> list[str] | None:
    """The models a running Ollama serves (`GET /api/tags`), or None when nothing answers."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/api/tags", timeout=timeout) as response:
            return model_names(json.loads(response.read()))
    except (OSError, ValueError):
        return None


def _ollama(
    section: dict[str, Any], env: Mapping[str, str], notes: list[str], unavailable: list[tuple[str, str]]
) -> ProviderConfig | None:
    if section.get("enabled", True) is False:
        notes.append("ollama: disabled in the configuration")
        return None
    configured = env.get("OLLAMA_BASE_URL") or section.get("base_url")
    base_url = str(configured or "http://localhost:11434")
    found = probe_ollama(base_url)
    if found is None:
        if configured:
            why = f"nothing answers at {base_url}; start it with `ollama serve`"
            notes.append(f"ollama: inactive ({why})")
            unavailable.append(("ollama", f"configured, but {why}"))
        else:
            notes.append(
                "ollama: inactive (not running on localhost:11434; set OLLAMA_BASE_URL if elsewhere)"
            )
        return None
    models = tuple(ModelEntry(name, "economy", 0.0, 0.0) for name in found)
    if "models" in section:
        models = _models(section["models"], "[providers.ollama]")
    if not models:
        notes.append(f"ollama: inactive (running at {base_url} but has no models; `ollama pull llama3.2`)")
        return None
    notes.append(f"ollama: active ({base_url}, {len(models)} local models)")
    return ProviderConfig(
        name="ollama",
        kind="ollama",
        display_name="Ollama (local)",
        models=models,
        default_model=str(section.get("default_model", models[0].id)),
        limits=_limits(
            section, slots=4, mailbox=32, idle_timeout=_float(env.get("TIMEOUT_LOCAL", 300), "TIMEOUT_LOCAL")
        ),
        priority=_int(section.get("priority", 0), "priority"),
        local_setting=_local(section),
        base_url=base_url,
    )


def _cli_executable(
    name: str,
    binary: str,
    variable: str,
    package: str,
    section: dict[str, Any],
    env: Mapping[str, str],
    notes: list[str],
    unavailable: list[tuple[str, str]],
) -> str | None:
    """Where a CLI provider's executable is (configured, or found on PATH), noting why if nowhere."""
    if section.get("enabled", True) is False:
        notes.append(f"{name}: disabled in the configuration")
        return None
    wanted = env.get(variable) or section.get("executable") or binary
    executable = shutil.which(wanted, path=env.get("PATH", os.defpath))
    if executable is None:
        where = variable if env.get(variable) else "PATH"
        why = f"{wanted!r} not found on {where}; install with `npm install -g {package}` or set {variable}"
        notes.append(f"{name}: inactive ({why})")
        if wanted != binary:  # named explicitly, not just looked for
            unavailable.append((name, f"configured, but {why}"))
    return executable


def _child_env(section: dict[str, Any], name: str) -> dict[str, str]:
    child_env = section.get("env", {})
    if not isinstance(child_env, dict):
        raise ConfigError(f"[providers.{name}] env must be a table of strings")
    return {str(k): str(v) for k, v in child_env.items()}


def _gemini_cli(
    section: dict[str, Any], env: Mapping[str, str], notes: list[str], unavailable: list[tuple[str, str]]
) -> ProviderConfig | None:
    executable = _cli_executable(
        "gemini-cli", "gemini", "GEMINI_CLI_PATH", "@google/gemini-cli", section, env, notes, unavailable
    )
    if executable is None:
        return None
    child_env = _child_env(section, "gemini-cli")
    notes.append(f"gemini-cli: active ({executable})")
    return ProviderConfig(
        name="gemini-cli",
        kind="gemini-cli",
        display_name="Gemini (CLI)",
        models=_models(section["models"], "[providers.gemini-cli]")
        if "models" in section
        else GEMINI_CLI_MODELS,
        default_model=str(section.get("default_model", "gemini-2.5-flash")),
        # Each spawn costs about 3 s of CPU: two at a time on a small machine.
        limits=ProviderLimits(
            slots=_int(section.get("slots", 2), "slots"),
            mailbox=_int(section.get("mailbox", 8), "mailbox"),
            idle_timeout=_float(env.get("TIMEOUT_GEMINI", section.get("timeout", 120)), "TIMEOUT_GEMINI"),
        ),
        priority=_int(section.get("priority", 0), "priority"),
        local_setting=_local(section),
        accepts_prefixes=("gemini-",),
        executable=executable,
        child_env=child_env,
    )


def _claude_cli(
    section: dict[str, Any], env: Mapping[str, str], notes: list[str], unavailable: list[tuple[str, str]]
) -> ProviderConfig | None:
    executable = _cli_executable(
        "claude-cli",
        "claude",
        "CLAUDE_CLI_PATH",
        "@anthropic-ai/claude-code",
        section,
        env,
        notes,
        unavailable,
    )
    if executable is None:
        return None
    strategy = section.get("system_prompt", "replace")
    try:
        system_prompt = SystemPromptStrategy(strategy)
    except ValueError:
        raise ConfigError("[providers.claude-cli] system_prompt must be replace, append or inline") from None
    child_env = _child_env(section, "claude-cli")
    idle = _float(env.get("TIMEOUT_CLAUDE", section.get("timeout", 60)), "TIMEOUT_CLAUDE")
    notes.append(f"claude-cli: active ({executable})")
    return ProviderConfig(
        name="claude-cli",
        kind="claude-cli",
        display_name="Claude (CLI)",
        models=_models(section["models"], "[providers.claude-cli]")
        if "models" in section
        else CLAUDE_CLI_MODELS,
        default_model=str(section.get("default_model", "sonnet")),
        # A request costs the CLI about 0.9 s of CPU (`python -m bench.cli_concurrency`): past one
        # process per core requests/s stop growing and time to first token doubles with each step.
        limits=ProviderLimits(
            slots=_int(section.get("slots", max(2, os.cpu_count() or 2)), "slots"),
            mailbox=_int(section.get("mailbox", 16), "mailbox"),
            idle_timeout=idle,
        ),
        priority=_int(section.get("priority", 0), "priority"),
        local_setting=_local(section),
        accepts_prefixes=("claude-",),
        executable=executable,
        system_prompt=system_prompt,
        child_env=child_env,
        warm=_int(section.get("warm", 1), "[providers.claude-cli] warm"),
    )
