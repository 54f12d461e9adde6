"""Which providers are active: those configured (an API key in the environment, a TOML section, a
`CUSTOM_PROVIDERS` entry) or present (a CLI on PATH, Ollama answering on localhost). Each decision
is noted; a provider named explicitly that cannot be activated is also listed as unavailable,
which `relaybox doctor` reports as a failure.

A built-in API pointed at another server (OPENAI_BASE_URL) is asked which models it serves, for
`PROBE_SECONDS` at most. When nothing answers there, it is configured but unreachable: like Ollama
it is not given models it may not have, but unlike Ollama, which is found by looking, it was
configured, so its actor runs and requests that name it reach it as soon as it answers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
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
from relaybox.web.config.schema import (
    BUILTIN_PROVIDERS,
    CUSTOM_ENTRY,
    nearest,
    provider_keys,
    unknown_entry_keys,
)
from relaybox.web.config.settings import ConfigError, ProviderConfig
from relaybox.web.config.values import ABOVE_ZERO, AT_LEAST_ONE, AT_LEAST_ZERO, Section, Setting, gathered

# An HTTP provider's answers in flight, and those queued for a slot, by default: an upstream API
# serves thousands at once, so relaybox does not throttle it. What bounds them is relaybox's
# memory: an open stream costs it about 50 KB (`python -m bench.streaming_fanout`), so 2,048 cost
# about 100 MB; past that a request is refused with 429 and a Retry-After that estimates.
HTTP_SLOTS = 1024
HTTP_MAILBOX = 1024


def discover_providers(
    file: Mapping[str, Any], env: Mapping[str, str], notes: list[str], unavailable: list[tuple[str, str]]
) -> list[ProviderConfig]:
    """Every active provider: the CLIs, the built-in APIs, Ollama, then the custom ones, in that
    order. Each provider is read on its own, so one start names every provider's problems."""
    sections = values.table(file, "providers")
    problems: list[str] = []
    found: list[ProviderConfig | None] = []
    for cli in BUILTIN_CLIS:
        with gathered(problems):
            found.append(_cli_provider(cli, _section(sections, cli.name, env), notes, unavailable))
    for api in BUILTIN_APIS:
        with gathered(problems):
            found.append(_builtin_api(api, _section(sections, api.name, env), notes))
    with gathered(problems):
        # Ollama's and custom providers' timeout, unless their table sets one.
        timeout_local = values.number(Setting(env.get("TIMEOUT_LOCAL") or 300, "TIMEOUT_LOCAL"), ABOVE_ZERO)
        with gathered(problems):
            found.append(_ollama(_section(sections, "ollama", env), notes, unavailable, timeout_local))
        for where, item in _custom_entries(sections, env, problems):
            with gathered(problems):
                found.append(_custom_provider(where, item, env, notes, timeout_local))
    if problems:
        raise ConfigError(*problems)
    return [provider for provider in found if provider is not None]


def _section(sections: dict[str, Any], name: str, env: Mapping[str, str]) -> Section:
    """A built-in provider's table (taken out of `sections`: what is left are the user's own)."""
    found = sections.pop(name, {})
    if not isinstance(found, dict):
        raise ConfigError(f"[providers.{name}] must be a table")
    return Section(f"[providers.{name}]", found, provider_keys(name), env)


def _custom_entries(
    sections: dict[str, Any], env: Mapping[str, str], problems: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """CUSTOM_PROVIDERS' entries, then the file's other [providers.NAME] tables, each with the
    name its messages give it."""
    custom: list[tuple[str, dict[str, Any]]] = []
    if env.get("CUSTOM_PROVIDERS"):
        try:
            parsed = json.loads(env["CUSTOM_PROVIDERS"])
        except ValueError as error:
            raise ConfigError(f"CUSTOM_PROVIDERS is not valid JSON: {error}") from None
        if not isinstance(parsed, list):
            raise ConfigError("CUSTOM_PROVIDERS must be a JSON list of providers")
        for i, item in enumerate(parsed):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                raise ConfigError(f"CUSTOM_PROVIDERS entry #{i + 1} needs an 'id'")
            where = f"CUSTOM_PROVIDERS entry {item['id']}"
            problems += unknown_entry_keys(where, item)
            custom.append((where, item))
    for name, section in sections.items():
        where = f"[providers.{name}]"
        if not isinstance(section, dict):
            raise ConfigError(f"{where} must be a table")
        kind = section.get("kind", "openai-compatible")
        if kind != "openai-compatible":
            raise ConfigError(
                f"{where}: kind {kind!r} is not supported yet "
                "(openai-compatible, or the built-in [providers.claude-cli] and [providers.openai])"
            )
        custom.append((where, {**section, "id": name}))
    return custom


def _custom_provider(
    where: str, item: dict[str, Any], env: Mapping[str, str], notes: list[str], timeout_local: float
) -> ProviderConfig | None:
    """An OpenAI-compatible endpoint of the user's, in the CUSTOM_PROVIDERS shape or the file's."""
    name = item["id"]
    if "/" in name or ":" in name:
        # It names the provider in `provider:model`, in URLs and in "provider/model" keys.
        raise ConfigError(f"{where}: the id may not contain '/' or ':'")
    url_key = "baseUrl" if "baseUrl" in item else "base_url"  # as the user wrote it
    base_url = item.get(url_key)
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        builtin = nearest(name, BUILTIN_PROVIDERS) if base_url is None else None
        also = f" (or did you mean the built-in [providers.{builtin}]?)" if builtin else ""
        raise ConfigError(f"{where}: {url_key} must be an http(s) URL, got {base_url!r}{also}")
    host_type = item.get("hostType", item.get("host_type", "openai"))
    if host_type not in ("openai", "openwebui"):
        raise ConfigError(f"{where}: host_type must be 'openai' or 'openwebui'")
    api_key = item.get("apiKey", item.get("api_key"))
    if item.get("api_key_env"):
        api_key = env.get(str(item["api_key_env"]))
    section = Section(where, item, CUSTOM_ENTRY)
    common = _common(section, slots=HTTP_SLOTS, mailbox=HTTP_MAILBOX, timeout=timeout_local)
    listed = _listed_models(section)
    if "models" not in listed:
        raise ConfigError(f"{where}: 'models' must be a non-empty list")
    models = listed["models"]
    if section.flag("enabled") is False:
        notes.append(f"{name}: disabled in the configuration")
        return None
    notes.append(f"{name}: active (custom OpenAI-compatible provider at {base_url})")
    return ProviderConfig(
        name=name,
        kind="openai-compatible",
        display_name=str(item.get("displayName", item.get("display_name", name))),
        models=models,
        default_model=str(item.get("defaultModel", item.get("default_model", models[0].id))),
        base_url=base_url,
        api_key=api_key,
        host_type=host_type,
        image_models=listed.get("image_models", ()),
        image_api=str(item.get("image_api", "images")),
        embedding_models=listed.get("embedding_models", ()),
        **common,
    )


def _common(
    section: Section, *, slots: int, mailbox: int, timeout: float, timeout_variable: str | None = None
) -> dict[str, Any]:
    """The settings of a provider's table that do not depend on what discovery finds: read, and so
    checked, first, whether or not the provider turns out to be active, so that a mistake in a
    table is found before the day the provider is enabled."""
    http2 = section.flag("http2") if "http2" in section.known else None
    return {
        "limits": ProviderLimits(
            slots=section.integer("slots", slots, within=AT_LEAST_ONE),
            mailbox=section.integer("mailbox", mailbox, within=AT_LEAST_ONE),
            idle_timeout=section.number("timeout", timeout, variable=timeout_variable, within=ABOVE_ZERO),
        ),
        "priority": section.integer("priority", 0),
        "local_setting": section.flag("local"),
        "http2": bool(http2),
    }


def _listed_models(section: Section) -> dict[str, tuple[ModelEntry, ...]]:
    """The model lists a provider's table gives (`models`, `image_models`, `embedding_models`)."""
    lists = [key for key in ("models", "image_models", "embedding_models") if key in section.known]
    return {key: values.models(section.get(key).value, section.where) for key in lists if section.has(key)}


def _builtin_api(builtin: BuiltinApi, section: Section, notes: list[str]) -> ProviderConfig | None:
    common = _common(section, slots=HTTP_SLOTS, mailbox=HTTP_MAILBOX, timeout=120)
    listed = _listed_models(section)
    api_key = _api_key(builtin, section)
    if section.flag("enabled") is False:
        notes.append(f"{builtin.name}: disabled in the configuration")
        return None
    if not api_key.value:
        notes.append(f"{builtin.name}: inactive (set {builtin.key_env} to enable)")
        return None
    base_url = str(section.get("base_url", variable=builtin.base_env).value or builtin.default_base)
    elsewhere = base_url.rstrip("/") != builtin.default_base and builtin.kind == "openai-compatible"
    listing = probe_models(base_url, str(api_key.value)) if elsewhere and "models" not in listed else None
    served = builtin
    if listing is not None and listing.unreachable is not None:
        notes.append(
            f"{builtin.name}: configured ({api_key.name} is set) but not reachable: nothing answers at "
            f"{base_url} ({listing.unreachable}). Which models it serves is not known, so it serves only "
            f"requests that name it ({builtin.name}:MODEL), as soon as it answers; list them in "
            f"[providers.{builtin.name}] models for smart routing to use it too"
        )
        served = attrs.evolve(builtin, models=(), image_models=(), embedding_models=())
    else:
        notes.append(f"{builtin.name}: active ({api_key.name} is set)")
        if listing is not None:
            served = _served_elsewhere(builtin, base_url, listing.models, notes)
    return ProviderConfig(
        name=builtin.name,
        kind=builtin.kind,
        display_name=builtin.display_name,
        models=listed.get("models", served.models),
        default_model=str(section.get("default_model", served.default_model).value),
        accepts_prefixes=builtin.prefixes,
        base_url=base_url,
        api_key=str(api_key.value),
        api_key_from=api_key.name,
        image_models=listed.get("image_models", served.image_models),
        image_api=builtin.image_api,
        embedding_models=listed.get("embedding_models", served.embedding_models),
        unreachable=None if listing is None else listing.unreachable,
        **common,
    )


def _api_key(builtin: BuiltinApi, section: Section) -> Setting:
    """The key: the built-in's own variable, else the one `api_key_env` names, else `api_key`."""
    own = section.get("api_key", variable=builtin.key_env)
    named = section.get("api_key_env").value
    if own.from_environment or not named or not section.env.get(str(named)):
        return own
    return Setting(section.env[str(named)], str(named), from_environment=True)


def _served_elsewhere(
    builtin: BuiltinApi, base_url: str, listed: tuple[str, ...], notes: list[str]
) -> BuiltinApi:
    """A built-in API pointed at another server (OPENAI_BASE_URL at vLLM, say): the models that server
    lists (`GET /models`), with the built-in's tiers and prices where an id is the same, rather
    than the vendor's own list, which that server would refuse. When it answers but lists nothing,
    the vendor's list is assumed, and the start-up notes say so."""
    if not listed:
        names = ", ".join(m.id for m in builtin.models)
        notes.append(
            f"{builtin.name}: {base_url} did not list its models (GET /models); assuming {names}: "
            f"set [providers.{builtin.name}] models to say which it serves"
        )
        return builtin
    known = {m.id: m for m in (*builtin.models, *builtin.image_models, *builtin.embedding_models)}
    notes.append(f"{builtin.name}: {base_url} lists {len(listed)} models: {', '.join(listed[:8])}")
    chat = tuple(known.get(name, ModelEntry(name, "standard")) for name in listed if "embed" not in name)
    return attrs.evolve(
        builtin,
        models=chat or builtin.models,
        default_model=builtin.default_model
        if builtin.default_model in listed
        else (chat or builtin.models)[0].id,
        image_models=tuple(m for m in builtin.image_models if m.id in listed),
        embedding_models=tuple(
            known.get(name, ModelEntry(name, "economy")) for name in listed if "embed" in name
        ),
    )


@attrs.frozen
class Listing:
    """What a server answered to `GET /models`: the ids it lists (none when it answered with an
    error or something else), or why nothing answered at all."""

    models: tuple[str, ...] = ()
    unreachable: str | None = None


# How long start-up waits for a built-in API's server at another address to list its models: a
# server on the LAN answers in milliseconds, and one that does not must not hold the start back.
PROBE_SECONDS = 1.0


def probe_models(base_url: str, api_key: str) -> Listing:
    """The model ids an OpenAI-compatible server lists, or why nothing answered."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/models", headers={"authorization": f"Bearer {api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=PROBE_SECONDS) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError:
        return Listing()  # it answered: a server that has no model list, or refused the key
    except OSError as error:
        return Listing(unreachable=_why_unreachable(error))
    except ValueError:
        return Listing()
    data = body.get("data") if isinstance(body, dict) else None
    return Listing(
        tuple(
            str(item["id"])
            for item in data or ()
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        )
    )


def _why_unreachable(error: OSError) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"no answer within {PROBE_SECONDS:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "its host name does not resolve"
    return str(reason)


def probe_ollama(base_url: str, timeout: float = 0.5) -> list[str] | None:
    """The models a running Ollama serves (`GET /api/tags`), or None when nothing answers."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/api/tags", timeout=timeout) as response:
            return model_names(json.loads(response.read()))
    except (OSError, ValueError):
        return None


def _ollama(
    section: Section, notes: list[str], unavailable: list[tuple[str, str]], timeout_local: float
) -> ProviderConfig | None:
    common = _common(section, slots=4, mailbox=32, timeout=timeout_local)
    listed = _listed_models(section)
    if section.flag("enabled") is False:
        notes.append("ollama: disabled in the configuration")
        return None
    configured = section.get("base_url", variable="OLLAMA_BASE_URL").value
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
    models = listed.get(
        "models", tuple(ModelEntry(n, "economy", 0.0, 0.0) for n in found if "embed" not in n)
    )
    embedders = listed.get(
        "embedding_models", tuple(ModelEntry(n, "economy", 0.0, 0.0) for n in found if "embed" in n)
    )
    if not models:
        notes.append(f"ollama: inactive (running at {base_url} but has no models; `ollama pull llama3.2`)")
        return None
    notes.append(f"ollama: active ({base_url}, {len(models)} local models)")
    return ProviderConfig(
        name="ollama",
        kind="ollama",
        display_name="Ollama (local)",
        models=models,
        default_model=str(section.get("default_model", models[0].id).value),
        base_url=base_url,
        embedding_models=embedders,
        **common,
    )


def _cli_executable(
    cli: BuiltinCli, section: Section, notes: list[str], unavailable: list[tuple[str, str]]
) -> str | None:
    """Where a CLI provider's executable is (configured, or found on PATH), noting why if nowhere."""
    if section.flag("enabled") is False:
        notes.append(f"{cli.name}: disabled in the configuration")
        return None
    wanted = section.get("executable", cli.binary, variable=cli.path_env)
    executable = shutil.which(str(wanted.value), path=section.env.get("PATH", os.defpath))
    if executable is None:
        named = wanted.value != cli.binary  # named explicitly, not just looked for
        if named and not wanted.from_environment:
            missing = f"{wanted.value!r} ({wanted.name}) not found"
        else:
            missing = f"{wanted.value!r} not found on {wanted.name if named else 'PATH'}"
        why = f"{missing}; install with `npm install -g {cli.package}` or set {cli.path_env}"
        notes.append(f"{cli.name}: inactive ({why})")
        if named:
            unavailable.append((cli.name, f"configured, but {why}"))
    return executable


def _child_env(section: Section) -> dict[str, str]:
    child_env = section.get("env", {}).value
    if not isinstance(child_env, dict):
        raise ConfigError(f"{section.where} env must be a table of strings")
    return {str(k): str(v) for k, v in child_env.items()}


def _cli_provider(
    cli: BuiltinCli, section: Section, notes: list[str], unavailable: list[tuple[str, str]]
) -> ProviderConfig | None:
    common = _common(
        section,
        slots=cli.slots or max(2, os.cpu_count() or 2),
        mailbox=cli.mailbox,
        timeout=cli.timeout,
        timeout_variable=cli.timeout_env,
    )
    listed = _listed_models(section)
    system_prompt = SystemPromptStrategy.REPLACE
    if cli.system_prompts:
        strategy = section.choice("system_prompt", "replace", tuple(s.value for s in SystemPromptStrategy))
        system_prompt = SystemPromptStrategy(strategy)
    child_env = _child_env(section)
    warm = 0 if cli.warm is None else section.integer("warm", cli.warm, within=AT_LEAST_ZERO)
    executable = _cli_executable(cli, section, notes, unavailable)
    if executable is None:
        return None
    notes.append(f"{cli.name}: active ({executable})")
    return ProviderConfig(
        name=cli.name,
        kind=cli.name,
        display_name=cli.display_name,
        models=listed.get("models", cli.models),
        default_model=str(section.get("default_model", cli.default_model).value),
        accepts_prefixes=cli.prefixes,
        executable=executable,
        system_prompt=system_prompt,
        child_env=child_env,
        warm=warm,
        **common,
    )
