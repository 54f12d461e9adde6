"""What the TOML file may say: its sections and the keys of each, and the check that finds every
section or key relaybox would not read, each named with the nearest one it would read.

A name relaybox does not know refuses the start (docs/configuration.md says why): a setting
silently ignored, `unknown_model = "reject"` for `unknown_models`, leaves the user believing
something that is not so, which is worse than a start that stops and says what to fix. Names the
user chooses (`[providers.NAME]`, `[routes.NAME]`, `[aliases]`, `[mcp.servers.NAME]`) are not
typos; the keys inside those tables are checked.

Where a table's keys are the fields of the class they fill (the breaker's and the supervisor's
policies, an MCP server, an A/B test), they are that class's attrs fields. Elsewhere the file has
names of its own (`max_body_mb` fills `Settings.max_body_bytes`, `[routing]` fills several policy
classes) and they are listed here; `values.Section` refuses to read a key missing from these lists,
so the check and the readers cannot drift apart.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.supervisor import RestartPolicy
from relaybox.protocol.routing.routes import CHAIN_KEYS
from relaybox.protocol.routing.selection import ABTest
from relaybox.protocol.tool_loop import McpServerSpec
from relaybox.web.config import values
from relaybox.web.config.catalogue import BUILTIN_APIS, BUILTIN_CLIS
from relaybox.web.config.values import Section


def fields_of(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in attrs.fields(cls))


# The learned router's shares, each between 0 and 1 (read in a loop by `loading._learned_policy`).
LEARNED_SHARES = (
    "quality_target",
    "quality_gap",
    "judge_rate",
    "shadow_rate",
    "shadow_up_rate",
    "probe_rate",
)

SECTIONS: Mapping[str, frozenset[str]] = {
    "server": frozenset(
        {"host", "port", "max_body_mb", "grace_seconds", "data_dir", "allowed_hosts", "allowed_origins"}
    ),
    "log": frozenset({"prompts"}),
    "storage": frozenset({"database_url", "record", "journal"}),
    "budget": frozenset({"when_storage_slow"}),
    "routing": frozenset(
        {
            "default_provider",
            "success_threshold",
            "consecutive_failure_limit",
            "min_volume",
            "economy_max",
            "standard_max",
            "budget_pressure",
            "provider_mode",
            "unknown_models",
            "dedup_seconds",
            "refresh_seconds",
            "cascade_below",
            "learned",
            "quality_kept",
            *LEARNED_SHARES,
            "judge_model",
            "savings_baseline",
            "llm_classifier",
        }
    ),
    "breaker": fields_of(BreakerPolicy),
    "supervisor": fields_of(RestartPolicy),
    "cache": frozenset({"max_mb", "ttl_seconds"}),
    "compression": frozenset({"level"}),
    "mcp": frozenset({"tool_timeout", "max_steps", "time_budget_seconds", "servers"}),
}
# Tables of names the user chooses ([[ab_tests]] is a list of tables).
NAMED = ("providers", "routes", "aliases", "ab_tests")

ROUTE = frozenset({"chain", *CHAIN_KEYS, "tools"})
AB_TEST = fields_of(ABTest)
MCP_SERVER = fields_of(McpServerSpec) - {"name"}  # the name is the table's
# A model in a provider's `models`, `image_models` or `embedding_models`, in the file's spelling or
# seed 001's CUSTOM_PROVIDERS one.
MODEL = frozenset(
    {
        "id",
        "tier",
        "input_per_mtok",
        "output_per_mtok",
        "context_window",
        "per_image",
        "costPerMInput",
        "costPerMOutput",
        "maxContext",
        "costPerImage",
    }
)

PROVIDER = frozenset(
    {"enabled", "models", "default_model", "slots", "mailbox", "timeout", "priority", "local"}
)
BUILTIN_API = PROVIDER | {"api_key", "api_key_env", "base_url", "image_models", "embedding_models", "http2"}
OLLAMA = PROVIDER | {"base_url", "embedding_models"}
# A provider of the user's own, in the file's spelling or seed 001's CUSTOM_PROVIDERS one (which
# adds `id`; in the file the table's name is the id).
CUSTOM = BUILTIN_API | {
    "kind",
    "host_type",
    "display_name",
    "image_api",
    "baseUrl",
    "apiKey",
    "hostType",
    "displayName",
    "defaultModel",
}
CUSTOM_ENTRY = CUSTOM | {"id"}
BUILTIN_PROVIDERS = (*(cli.name for cli in BUILTIN_CLIS), *(api.name for api in BUILTIN_APIS), "ollama")


def provider_keys(name: str) -> frozenset[str]:
    """The keys of `[providers.NAME]`: a built-in provider's own, or those of a provider of the
    user's. A CLI has `system_prompt` and `warm` only where it takes them."""
    cli = next((cli for cli in BUILTIN_CLIS if cli.name == name), None)
    if cli is not None:
        return (
            PROVIDER
            | {"executable", "env"}
            | ({"system_prompt"} if cli.system_prompts else set())
            | ({"warm"} if cli.warm is not None else set())
        )
    if any(api.name == name for api in BUILTIN_APIS):
        return BUILTIN_API
    return OLLAMA if name == "ollama" else CUSTOM


def section(file: Mapping[str, Any], name: str, env: Mapping[str, str] | None = None) -> Section:
    """A top-level table of the file, to be read key by key."""
    return Section(f"[{name}]", values.table(file, name), SECTIONS[name], env or {})


def unknown_names(file: Mapping[str, Any]) -> list[str]:
    """Every section and key of the file that relaybox would not read, each with the nearest name
    it would (or where the key belongs, or what the table's keys are)."""
    problems = []
    for name, value in file.items():
        if name in SECTIONS:
            problems += _unknown_keys(f"[{name}]", value, SECTIONS[name])
        elif name not in NAMED:
            problems.append(_unknown_top_level(name, value))
    for name, provider in _tables(file.get("providers")):
        problems += _unknown_provider_keys(name, provider)
    for name, route in _tables(file.get("routes")):
        problems += _unknown_keys(f"[routes.{name}]", route, ROUTE)
    tests = file.get("ab_tests")
    for i, test in enumerate(tests if isinstance(tests, list) else ()):
        problems += _unknown_keys(f"[[ab_tests]] #{i + 1}", test, AB_TEST)
    mcp = file.get("mcp")
    for name, server in _tables(mcp.get("servers") if isinstance(mcp, dict) else None):
        problems += _unknown_keys(f"[mcp.servers.{name}]", server, MCP_SERVER)
    return problems


def unknown_entry_keys(where: str, entry: Mapping[str, Any]) -> list[str]:
    """A CUSTOM_PROVIDERS entry's unknown keys (its JSON is as easy to misspell as the file)."""
    return _unknown_keys(where, entry, CUSTOM_ENTRY) + _unknown_model_keys(where, entry)


def nearest(name: str, known: Any) -> str | None:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return close[0] if close else None


def _tables(value: object) -> list[tuple[str, object]]:
    return list(value.items()) if isinstance(value, dict) else []


def _unknown_keys(
    where: str, table: object, known: frozenset[str], hint: Callable[[str], str] | None = None
) -> list[str]:
    if not isinstance(table, dict):
        return []  # not a table at all: its reader says so
    said = hint or (lambda key: _hint(key, known))
    return [f"unknown setting {where} {key}: {said(key)}" for key in table if key not in known]


def _unknown_provider_keys(name: str, provider: object) -> list[str]:
    """A built-in provider's table with a key only providers of the user's own take (`kind`,
    `host_type`) was meant as one of those: it needs a name of its own."""
    where = f"[providers.{name}]"
    known = provider_keys(name)

    def hint(key: str) -> str:
        if key in CUSTOM and known is not CUSTOM:
            return f"{where} is the built-in {name}; a provider of your own (with {key}) needs another name"
        return _hint(key, known)

    return _unknown_keys(where, provider, known, hint) + _unknown_model_keys(where, provider)


def _unknown_model_keys(where: str, provider: object) -> list[str]:
    if not isinstance(provider, Mapping):
        return []
    problems = []
    for kind in ("models", "image_models", "embedding_models"):
        listed = provider.get(kind)
        for i, model in enumerate(listed if isinstance(listed, list) else ()):
            problems += _unknown_keys(f"{where} {kind}[{i}]", model, MODEL)
    return problems


def _hint(key: str, known: frozenset[str]) -> str:
    """A key in the wrong table is said to belong elsewhere; a misspelt one gets the nearest."""
    home = next((name for name, keys in SECTIONS.items() if key in keys and keys is not known), None)
    if home is not None:
        return f"it belongs in [{home}]"
    near = nearest(key, known)
    if near is not None:
        return f"did you mean `{near}`?"
    return f"this table's settings are {', '.join(sorted(known))}"


def _unknown_top_level(name: str, value: object) -> str:
    array = isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)
    if not (isinstance(value, dict) or array):
        home = next((section for section, keys in SECTIONS.items() if name in keys), None)
        where = f"unknown setting {name} at the top of the file, outside any [section]"
        return f"{where}: it belongs in [{home}]" if home else where
    written = f"[[{name}]]" if array else f"[{name}]"
    near = nearest(name, [*SECTIONS, *NAMED])
    if near is not None:
        return f"unknown section {written}: did you mean {_header(near)}?"
    return f"unknown section {written}: the sections are {', '.join(map(_header, (*SECTIONS, *NAMED)))}"


def _header(name: str) -> str:
    return "[[ab_tests]]" if name == "ab_tests" else f"[{name}]"
