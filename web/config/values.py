"""Reading values out of the TOML file and the environment. Each value is read together with the
name the user gave it (a `Setting`): the environment variable that set it, or the file's
`[section] key`. A value that will not do is refused with that name, the value and what is allowed
(a `ConfigError`), and a note about a setting names the one the user wrote, not another spelling
of it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from relaybox.protocol.routing.catalog import TIERS, ModelEntry
from relaybox.web.config.settings import ConfigError


@attrs.frozen
class Range:
    """The numbers a setting may take. `above` leaves `low` itself out: a timeout of 0 s, or a
    cache of 0 entries' lifetime, is no setting at all."""

    low: float
    high: float | None = None
    above: bool = False

    def admits(self, value: float) -> bool:
        over_low = value > self.low if self.above else value >= self.low
        return over_low and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        low = f"above {self.low:g}" if self.above else f"at least {self.low:g}"
        if self.high is None:
            return low
        return f"{low} and at most {self.high:g}" if self.above else f"between {self.low:g} and {self.high:g}"


ABOVE_ZERO = Range(0, above=True)  # durations, sizes and rates that must be something
AT_LEAST_ZERO = Range(0)  # where 0 switches a feature off
AT_LEAST_ONE = Range(1)  # counts of slots, steps, failures
SHARE = Range(0, 1)  # probabilities and shares
PERCENT = Range(0, 100)  # the classifier's complexity scale
PORT = Range(1, 65535)


@attrs.frozen
class Setting:
    """A value and the name the user gave it."""

    value: Any
    name: str  # "SUCCESS_THRESHOLD", or "[routing] success_threshold"
    from_environment: bool = False

    def written(self) -> str:
        """The setting as the user wrote it, for a note about it (never for a secret's)."""
        if self.from_environment:
            return f"{self.name}={self.value}"
        return f"{self.name} = {json.dumps(self.value)}"


@attrs.frozen
class Section:
    """One table of the file, read key by key; where an environment variable stands for a key, a
    non-empty one wins. `known` is what `schema.py` lets that table say: reading any other key is
    a mistake in relaybox, so the check of the file and its readers cannot drift apart."""

    where: str  # as the user wrote it: "[routing]", "[providers.openai]"
    entries: Mapping[str, Any]
    known: frozenset[str]
    env: Mapping[str, str] = attrs.field(factory=dict)

    def get(self, key: str, default: Any = None, variable: str | None = None) -> Setting:
        if key not in self.known:
            raise AssertionError(f"{self.where} {key} is read, but web/config/schema.py does not list it")
        if variable is not None and self.env.get(variable):
            return Setting(self.env[variable], variable, from_environment=True)
        return Setting(self.entries.get(key, default), f"{self.where} {key}")

    def has(self, key: str) -> bool:
        return self.get(key).value is not None

    def number(self, key: str, default: float, *, variable: str | None = None, within: Range) -> float:
        return number(self.get(key, default, variable), within)

    def integer(
        self, key: str, default: int, *, variable: str | None = None, within: Range | None = None
    ) -> int:
        return integer(self.get(key, default, variable), within)

    def choice(self, key: str, default: str, choices: tuple[str, ...], *, variable: str | None = None) -> str:
        found = self.get(key, default, variable)
        if found.value not in choices:
            raise ConfigError(f"{found.name} must be one of {', '.join(choices)}, got {found.value!r}")
        return str(found.value)

    def flag(self, key: str) -> bool | None:
        """A true/false setting; None when it is not set."""
        found = self.get(key)
        if found.value is not None and not isinstance(found.value, bool):
            raise ConfigError(f"{self.where} '{key}' must be true or false, got {found.value!r}")
        return found.value


@contextlib.contextmanager
def gathered(problems: list[str]) -> Iterator[None]:
    """One step of reading the configuration; the problems it refuses with join `problems`, and
    reading goes on with the next step, so that one start names every problem."""
    try:
        yield
    except ConfigError as error:
        problems.extend(error.problems)


def table(file: Mapping[str, Any], name: str) -> dict[str, Any]:
    found = file.get(name, {})
    if not isinstance(found, dict):
        raise ConfigError(f"[{name}] must be a table")
    return dict(found)


def integer(found: Setting, within: Range | None = None) -> int:
    value = found.value
    try:
        if isinstance(value, float | bool):
            raise ValueError
        whole = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{found.name} must be an integer, got {value!r}") from None
    _check(found, whole, within)
    return whole


def number(found: Setting, within: Range | None = None) -> float:
    value = found.value
    try:
        if isinstance(value, bool):
            raise ValueError
        real = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{found.name} must be a number, got {value!r}") from None
    _check(found, real, within)
    return real


def _check(found: Setting, value: float, within: Range | None) -> None:
    if within is not None and not within.admits(value):
        raise ConfigError(f"{found.name} must be {within}, got {found.value!r}")


def models(raw: object, where: str) -> tuple[ModelEntry, ...]:
    """Models in seed 001's CUSTOM_PROVIDERS shape, or the TOML file's snake_case one."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'models' must be a non-empty list")
    return tuple(_model(item, f"{where}: models[{i}]") for i, item in enumerate(raw))


def _model(item: object, where: str) -> ModelEntry:
    if isinstance(item, str):
        return ModelEntry(item)
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise ConfigError(f"{where} needs an 'id'")
    tier = item.get("tier", "standard")
    if tier not in TIERS:
        raise ConfigError(f"{where}.tier must be one of {', '.join(TIERS)}")

    def given(*keys: str, name: str) -> Setting | None:
        value = next((item[key] for key in keys if key in item), None)
        return None if value is None else Setting(value, f"{where} {name}")

    price_in = given("costPerMInput", "input_per_mtok", name="input price")
    price_out = given("costPerMOutput", "output_per_mtok", name="output price")
    context = given("maxContext", "context_window", name="context window")
    per_image = given("costPerImage", "per_image", name="price per image")
    return ModelEntry(
        item["id"],
        tier,
        None if price_in is None else number(price_in, AT_LEAST_ZERO),
        None if price_out is None else number(price_out, AT_LEAST_ZERO),
        None if context is None else integer(context, AT_LEAST_ONE),
        None if per_image is None else number(per_image, AT_LEAST_ZERO),
    )
