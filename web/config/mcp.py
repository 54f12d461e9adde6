"""`[mcp]` and `[mcp.servers.NAME]`: the MCP servers relaybox runs tools on, and the tool loop's
limits. Only the operator's file names a server; nothing a client sends does. (Their keys are
checked with the rest of the file's, in `schema.py`.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relaybox.protocol.routing.routes import NamedRoute
from relaybox.protocol.tool_loop import McpServerSpec, McpSettings
from relaybox.web.config import schema
from relaybox.web.config.settings import ConfigError
from relaybox.web.config.values import ABOVE_ZERO, AT_LEAST_ONE


def mcp_settings(file: Mapping[str, Any]) -> McpSettings:
    section = schema.section(file, "mcp")
    servers = section.get("servers", {}).value
    if not isinstance(servers, dict):
        raise ConfigError("[mcp.servers] must be a table of servers")
    defaults = McpSettings()
    return McpSettings(
        servers=tuple(_server(str(name), raw) for name, raw in servers.items()),
        tool_timeout=section.number("tool_timeout", defaults.tool_timeout, within=ABOVE_ZERO),
        max_steps=section.integer("max_steps", defaults.max_steps, within=AT_LEAST_ONE),
        time_budget=section.number("time_budget_seconds", defaults.time_budget, within=ABOVE_ZERO),
    )


def check_route_tools(routes: Mapping[str, NamedRoute], mcp: McpSettings) -> None:
    """Every route's `tools` names a configured server."""
    for route in routes.values():
        unknown = [name for name in route.tools if mcp.server(name) is None]
        if unknown:
            configured = ", ".join(server.name for server in mcp.servers) or "none"
            raise ConfigError(
                f"[routes.{route.name}] tools: no [mcp.servers] named {unknown} (configured: {configured})"
            )


def _server(name: str, raw: object) -> McpServerSpec:
    where = f"[mcp.servers.{name}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    if not name.replace("-", "").replace("_", "").isalnum() or "__" in name:
        raise ConfigError(f"{where}: a server's name is letters, digits, '-' and single '_'")
    if ("command" in raw) == ("url" in raw):
        raise ConfigError(f"{where} needs either 'command' (a stdio server) or 'url' (streamable HTTP)")
    return McpServerSpec(
        name=name,
        command=_text(raw, "command", where),
        args=_texts(raw.get("args", []), f"{where} args"),
        env=_strings(raw.get("env", {}), f"{where} env"),
        cwd=_text(raw, "cwd", where),
        url=_text(raw, "url", where),
        headers=_strings(raw.get("headers", {}), f"{where} headers"),
        keys=_texts(raw["keys"], f"{where} keys") if "keys" in raw else None,
    )


def _text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where} {key} must be a non-empty string")
    return value


def _texts(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def _strings(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise ConfigError(f"{where} must be a table of strings")
    return {str(key): item for key, item in value.items()}
