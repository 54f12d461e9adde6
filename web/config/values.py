"""Reading values out of the TOML file and the environment: each reader names the setting it
read when the value will not do (a `ConfigError` saying what to fix)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relaybox.actors.provider import ProviderLimits
from relaybox.protocol.compression.pipeline import LEVELS
from relaybox.protocol.routing.catalog import TIERS, ModelEntry
from relaybox.web.config.settings import ConfigError


def table(file: Mapping[str, Any], name: str) -> dict[str, Any]:
    found = file.get(name, {})
    if not isinstance(found, dict):
        raise ConfigError(f"[{name}] must be a table")
    return dict(found)


def integer(value: object, name: str) -> int:
    try:
        if isinstance(value, float | bool):
            raise ValueError
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def flag(section: Mapping[str, Any], name: str) -> bool | None:
    """A true/false setting of a section; None when it is not set."""
    value = section.get(name)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"'{name}' must be true or false, got {value!r}")
    return value


def number(value: object, name: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def compression_level(value: object) -> str:
    level = str(value).lower()
    if level not in LEVELS:
        raise ConfigError(f"compression level must be one of {', '.join(LEVELS)}, got {value!r}")
    return level


def positive(value: object, name: str) -> float:
    found = number(value, name)
    if found <= 0:
        raise ConfigError(f"{name} must be above 0, got {value!r}")
    return found


def models(raw: object, where: str) -> tuple[ModelEntry, ...]:
    """Models in seed 001's CUSTOM_PROVIDERS shape, or the TOML file's snake_case one."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'models' must be a non-empty list")
    entries = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            entries.append(ModelEntry(item))
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
        entries.append(
            ModelEntry(
                item["id"],
                tier,
                None if price_in is None else number(price_in, f"{where}: models[{i}] input price"),
                None if price_out is None else number(price_out, f"{where}: models[{i}] output price"),
                None if context is None else integer(context, f"{where}: models[{i}] context window"),
                None if per_image is None else number(per_image, f"{where}: models[{i}] price per image"),
            )
        )
    return tuple(entries)


def limits(section: Mapping[str, Any], *, slots: int, mailbox: int, idle_timeout: float) -> ProviderLimits:
    return ProviderLimits(
        slots=integer(section.get("slots", slots), "slots"),
        mailbox=integer(section.get("mailbox", mailbox), "mailbox"),
        idle_timeout=number(section.get("timeout", idle_timeout), "timeout"),
    )
