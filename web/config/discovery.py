"""Which providers are active: those configured (an API key in the environment, a TOML section, a
`CUSTOM_PROVIDERS` entry) or present (a CLI on PATH, Ollama answering on localhost). Each decision
is noted; a provider named explicitly that cannot be activated is also listed as unavailable,
which `relaybox doctor` reports as a failure."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Mapping
from typing import Any

import attrs
from relaybox.actors.provider import ProviderLimits
from relaybox.protocol.routing.catalog import ModelEntry
from relaybox.protocol.wire.claude_cli import SystemPromptStrategy
from relaybox.protocol.wire.ollama import model_names
from relaybox.web.config import values
from relaybox.web.config.catalogue import BUILTIN_APIS, BUILTIN_CLIS, BuiltinApi, BuiltinCli
from relaybox.web.config.settings import ConfigError, ProviderConfig


def discover_providers(
    file: Mapping[str, Any], env: Mapping[str, str], notes: list[str], unavailable: list[tuple[str, str]]
) -> list[ProviderConfig]:
    """Every active provider: the CLIs, the built-in APIs, Ollama, then the custom ones, in that order."""
    sections = values.table(file, "providers")
    providers: list[ProviderConfig] = []

    for cli in BUILTIN_CLIS:
        provider = _cli_provider(cli, dict(sections.pop(cli.name, {})), env, notes, unavailable)
        if provider is not None:
            providers.append(provider)

    for builtin in BUILTIN_APIS:
        provider = _builtin_api(builtin, dict(sections.pop(builtin.name, {})), env, notes)
        if provider is not None:
            providers.append(provider)

    ollama = _ollama(dict(sections.pop("ollama", {})), env, notes, unavailable)
    if ollama is not None:
        providers.append(ollama)

    timeout_local = values.number(env.get("TIMEOUT_LOCAL", 300), "TIMEOUT_LOCAL")
    for i, item in enumerate(_custom_entries(sections, env)):
        provider = _custom_provider(i, item, env, notes, timeout_local)
        if provider is not None:
            providers.append(provider)
    return providers


def _custom_entries(sections: dict[str, Any], env: Mapping[str, str]) -> list[Any]:
    """CUSTOM_PROVIDERS' entries, then the file's other [providers.NAME] tables as entries."""
    custom: list[Any] = []
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
    return custom


def _custom_provider(
    i: int, item: Any, env: Mapping[str, str], notes: list[str], timeout_local: float
) -> ProviderConfig | None:
    """An OpenAI-compatible endpoint of the user's, in the CUSTOM_PROVIDERS shape or the file's."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        raise ConfigError(f"custom provider #{i + 1} needs an 'id'")
    where = f"custom provider {item['id']}"
    if "/" in item["id"] or ":" in item["id"]:
        # It names the provider in `provider:model`, in URLs and in "provider/model" keys.
        raise ConfigError(f"{where}: the id may not contain '/' or ':'")
    base_url = item.get("baseUrl", item.get("base_url"))
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'baseUrl' must be an http(s) URL")
    if item.get("enabled", True) is False:
        notes.append(f"{item['id']}: disabled in the configuration")
        return None
    host_type = item.get("hostType", item.get("host_type", "openai"))
    if host_type not in ("openai", "openwebui"):
        raise ConfigError(f"{where}: host_type must be 'openai' or 'openwebui'")
    api_key = item.get("apiKey", item.get("api_key"))
    if item.get("api_key_env"):
        api_key = env.get(str(item["api_key_env"]))
    models = values.models(item.get("models"), where)
    notes.append(f"{item['id']}: active (custom OpenAI-compatible provider at {base_url})")
    return ProviderConfig(
        name=item["id"],
        kind="openai-compatible",
        display_name=str(item.get("displayName", item.get("display_name", item["id"]))),
        models=models,
        default_model=str(item.get("defaultModel", item.get("default_model", models[0].id))),
        limits=values.limits(item, slots=64, mailbox=64, idle_timeout=timeout_local),
        priority=values.integer(item.get("priority", 0), "priority"),
        local_setting=values.flag(item, "local"),
        base_url=base_url,
        api_key=api_key,
        host_type=host_type,
        image_models=values.models(item["image_models"], where) if item.get("image_models") else (),
        image_api=str(item.get("image_api", "images")),
        embedding_models=values.models(item["embedding_models"], where)
        if item.get("embedding_models")
        else (),
        http2=bool(values.flag(item, "http2")),
    )


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
    base_url = env.get(builtin.base_env) or section.get("base_url") or builtin.default_base
    served = builtin
    elsewhere = base_url.rstrip("/") != builtin.default_base and builtin.kind == "openai-compatible"
    if elsewhere and "models" not in section:
        served = _served_elsewhere(builtin, base_url, api_key, notes)
    return ProviderConfig(
        name=builtin.name,
        kind=builtin.kind,
        display_name=builtin.display_name,
        models=values.models(section["models"], where) if "models" in section else served.models,
        default_model=str(section.get("default_model", served.default_model)),
        limits=values.limits(section, slots=256, mailbox=256, idle_timeout=120),
        priority=values.integer(section.get("priority", 0), "priority"),
        local_setting=values.flag(section, "local"),
        accepts_prefixes=builtin.prefixes,
        base_url=base_url,
        api_key=api_key,
        image_models=values.models(section["image_models"], where)
        if "image_models" in section
        else served.image_models,
        image_api=builtin.image_api,
        embedding_models=values.models(section["embedding_models"], where)
        if "embedding_models" in section
        else served.embedding_models,
        http2=bool(values.flag(section, "http2")),
    )


def _served_elsewhere(builtin: BuiltinApi, base_url: str, api_key: str, notes: list[str]) -> BuiltinApi:
    """A built-in API pointed at another server (OPENAI_BASE_URL at vLLM, say): the models that server
    lists (`GET /models`), with the built-in's tiers and prices where an id is the same, rather
    than the vendor's own list, which that server would refuse. When it lists nothing, the vendor's
    list is assumed, and the start-up notes say so."""
    listed = probe_models(base_url, api_key)
    if not listed:
        names = ", ".join(m.id for m in builtin.models)
        notes.append(
            f"{builtin.name}: {base_url} did not list its models (GET /models); assuming {names}: "
            f"set [providers.{builtin.name}] models to say which it serves"
        )
        return builtin
    known = {m.id: m for m in (*builtin.models, *builtin.image_models, *builtin.embedding_models)}
    ids = set(listed)
    notes.append(f"{builtin.name}: {base_url} lists {len(listed)} models: {', '.join(listed[:8])}")
    chat = tuple(known.get(name, ModelEntry(name, "standard")) for name in listed if "embed" not in name)
    return attrs.evolve(
        builtin,
        models=chat or builtin.models,
        default_model=builtin.default_model
        if builtin.default_model in ids
        else (chat or builtin.models)[0].id,
        image_models=tuple(m for m in builtin.image_models if m.id in ids),
        embedding_models=tuple(
            known.get(name, ModelEntry(name, "economy")) for name in listed if "embed" in name
        ),
    )


def probe_models(base_url: str, api_key: str, timeout: float = 1.0) -> list[str]:
    """The model ids an OpenAI-compatible server lists, or none when it does not answer."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/models", headers={"authorization": f"Bearer {api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return []
    data = body.get("data") if isinstance(body, dict) else None
    return [
        str(item["id"]) for item in data or () if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


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
    # Ollama's embedding models answer /api/embed, not chat: their names say what they are.
    embedders = tuple(ModelEntry(name, "economy", 0.0, 0.0) for name in found if "embed" in name)
    models = tuple(ModelEntry(name, "economy", 0.0, 0.0) for name in found if "embed" not in name)
    if "models" in section:
        models = values.models(section["models"], "[providers.ollama]")
    if "embedding_models" in section:
        embedders = values.models(section["embedding_models"], "[providers.ollama]")
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
        limits=values.limits(
            section,
            slots=4,
            mailbox=32,
            idle_timeout=values.number(env.get("TIMEOUT_LOCAL", 300), "TIMEOUT_LOCAL"),
        ),
        priority=values.integer(section.get("priority", 0), "priority"),
        local_setting=values.flag(section, "local"),
        base_url=base_url,
        embedding_models=embedders,
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


def _cli_provider(
    cli: BuiltinCli,
    section: dict[str, Any],
    env: Mapping[str, str],
    notes: list[str],
    unavailable: list[tuple[str, str]],
) -> ProviderConfig | None:
    executable = _cli_executable(
        cli.name, cli.binary, cli.path_env, cli.package, section, env, notes, unavailable
    )
    if executable is None:
        return None
    where = f"[providers.{cli.name}]"
    system_prompt = SystemPromptStrategy.REPLACE
    if cli.system_prompts:
        try:
            system_prompt = SystemPromptStrategy(section.get("system_prompt", "replace"))
        except ValueError:
            raise ConfigError(f"{where} system_prompt must be replace, append or inline") from None
    child_env = _child_env(section, cli.name)
    models = values.models(section["models"], where) if "models" in section else cli.models
    limits = ProviderLimits(
        slots=values.integer(section.get("slots", cli.slots or max(2, os.cpu_count() or 2)), "slots"),
        mailbox=values.integer(section.get("mailbox", cli.mailbox), "mailbox"),
        idle_timeout=values.number(
            env.get(cli.timeout_env, section.get("timeout", cli.timeout)), cli.timeout_env
        ),
    )
    notes.append(f"{cli.name}: active ({executable})")
    return ProviderConfig(
        name=cli.name,
        kind=cli.name,
        display_name=cli.display_name,
        models=models,
        default_model=str(section.get("default_model", cli.default_model)),
        limits=limits,
        priority=values.integer(section.get("priority", 0), "priority"),
        local_setting=values.flag(section, "local"),
        accepts_prefixes=cli.prefixes,
        executable=executable,
        system_prompt=system_prompt,
        child_env=child_env,
        warm=0 if cli.warm is None else values.integer(section.get("warm", cli.warm), f"{where} warm"),
    )
