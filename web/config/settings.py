"""What relaybox runs with: `Settings` and each provider's `ProviderConfig`, as loaded from the
embedded defaults, the TOML file and the environment (`web/config/loading.py`)."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import attrs
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.provider import ProviderLimits
from relaybox.actors.supervisor import RestartPolicy
from relaybox.protocol.routing.catalog import ModelEntry
from relaybox.protocol.routing.plan import RoutingSettings
from relaybox.protocol.tool_loop import McpSettings
from relaybox.protocol.wire.claude_cli import SystemPromptStrategy


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix. It can carry several
    problems, so that one start names every one of them and one edit fixes them all."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems = problems

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(f"  - {problem}" for problem in self.problems)


@attrs.frozen
class ProviderConfig:
    name: str
    kind: str  # "openai-compatible", "anthropic", "gemini", "ollama", "claude-cli" or "gemini-cli"
    display_name: str
    models: tuple[ModelEntry, ...]
    default_model: str
    limits: ProviderLimits
    priority: int = 0
    accepts_prefixes: tuple[str, ...] = ()
    # openai-compatible
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    # Where the key was read, as the user wrote it (OPENAI_API_KEY, [providers.openai] api_key): what
    # the diagnosis of a refused key tells the user to check. None: not known.
    api_key_from: str | None = None
    host_type: str = "openai"
    image_models: tuple[ModelEntry, ...] = ()
    image_api: str = "images"  # "images" (OpenAI's images API) or "chat" (image output from chat, OpenRouter)
    embedding_models: tuple[ModelEntry, ...] = ()  # models that answer POST /v1/embeddings
    # HTTP/2 to the upstream: offered over https (HTTP/1.1 if the server declines), spoken from the
    # start over http:// (the server must speak HTTP/2 in cleartext).
    http2: bool = False
    # the CLIs (claude-cli, gemini-cli)
    executable: str | None = None
    system_prompt: SystemPromptStrategy = SystemPromptStrategy.REPLACE  # claude-cli
    child_env: dict[str, str] = attrs.field(factory=dict, repr=False)
    warm: int = 0  # claude-cli: processes started ahead of time, waiting on stdin (the warm pool)
    # `local = true/false` in the provider's section; unset: decided by `local`.
    local_setting: bool | None = None
    # Why nothing answered the start-up check of the provider's server (then it has only the models
    # its section lists: which ones it serves is not known); None: it answered, or was not checked.
    unreachable: str | None = None

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
    mcp: McpSettings = attrs.field(factory=McpSettings)  # MCP servers and the tool loop's limits
    tracing: bool = False  # OpenTelemetry traces to OTEL_EXPORTER_OTLP_ENDPOINT
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
    grace: float = 30.0  # seconds answers in flight get on SIGTERM ([server] grace_seconds, --grace)
    # Names relaybox answers to beyond its own (`*`: any) and web origins whose pages may call it
    # ([server] allowed_hosts / allowed_origins, RELAYBOX_ALLOWED_HOSTS / RELAYBOX_ALLOWED_ORIGINS).
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    # What the request log keeps of a prompt: "summary" (its last user message, 500 characters) or "none".
    log_prompts: str = "summary"
    # Budgets and key limits when the database does not answer in time: "allow" the request
    # (traffic never stops for a database hiccup; a budget can be overshot) or "deny" it.
    when_storage_slow: str = "allow"
    # When an answered request's record is safe ([storage] journal, RELAYBOX_JOURNAL): "os" (in the
    # journal before the answer ends: it survives a kill of relaybox), "fsync" (a machine crash
    # too) or "off" (answers do not wait; a kill can lose the last records).
    journal: str = "os"
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
