"""Named routes (seed 000's task types, seed 002's roles) and the provider mode over them.

A route is an ordered chain, `primary -> backup_1 ... backup_4`, each a model id, `provider:model`,
a provider id (its default model), an alias, a tier, or `auto` (smart routing for the request at
hand). The chain expands to one candidate list; the router walks it with the usual fallback, so a
retryable failure moves to the next target and a bad request does not.

The provider mode is one switch over every route (seed 000): `local` keeps only providers on the
user's machine or subscription (CLIs, Ollama, anything marked local), `cloud` only the others,
`hybrid` (the default) keeps both, and since local ones cost $0 they come first wherever cost decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
from relaybox.protocol.errors import RelayError
from relaybox.protocol.routing.catalog import SMART_ROUTE_NAMES, Candidate, Catalog, Route

ROUTE_PREFIX = "route:"
MODES = ("hybrid", "local", "cloud")
# Seed 002's chain positions, for reasons and the config file's keys.
CHAIN_KEYS = ("primary", "backup_1", "backup_2", "backup_3", "backup_4")


@attrs.frozen
class NamedRoute:
    name: str
    chain: tuple[str, ...]
    # MCP servers whose tools relaybox offers the model and runs itself (the tool loop).
    tools: tuple[str, ...] = ()


# The seeds' task types and roles, so `route:planning` works with no configuration;
# each is overridable (and more can be added) under [routes] in the config file.
BUILTIN_ROUTES: dict[str, NamedRoute] = {
    route.name: route
    for route in (
        NamedRoute("chat", ("auto",)),
        NamedRoute("clarity", ("economy", "auto")),
        NamedRoute("planning", ("premium", "auto")),
        NamedRoute("writing", ("standard", "auto")),
        NamedRoute("refinement", ("premium", "auto")),
        NamedRoute("orchestrator", ("premium", "auto")),
        NamedRoute("distill", ("economy", "auto")),
        NamedRoute("coder", ("standard", "auto")),
        NamedRoute("research", ("premium", "auto")),
    )
}


def requested_route(model: str, header: str | None, routes: Mapping[str, NamedRoute]) -> NamedRoute | None:
    """The route a request names: the `x-relaybox-route` header, `route:NAME`, or a bare route name.

    Raises 404 for a header or `route:` prefix naming no route (an explicit ask deserves an answer).
    """
    for explicit in (header, model[len(ROUTE_PREFIX) :] if model.startswith(ROUTE_PREFIX) else None):
        if explicit is None:
            continue
        route = routes.get(explicit.strip())
        if route is None:
            raise RelayError(
                404,
                f"There is no route named '{explicit}'; configured routes: {', '.join(sorted(routes)) or 'none'}",
                "invalid_request_error",
                code="route_not_found",
                param="model",
            )
        return route
    return routes.get(model)


def expand(route: NamedRoute, resolve: Callable[[str], Route]) -> Route:
    """The chain as one candidate list (each candidate once, in chain order); `resolve` turns a
    target into its candidates (the router's resolution, smart routing included)."""
    candidates: list[Candidate] = []
    steps: list[str] = []
    for position, target in enumerate(route.chain):
        key = CHAIN_KEYS[position] if position < len(CHAIN_KEYS) else f"backup_{position}"
        try:
            resolved = resolve(target)
        except RelayError:
            # A target whose provider is not active today (no key set): the chain goes on without it.
            steps.append(f"{key} {target}: not served here")
            continue
        added = [c for c in resolved.candidates if c not in candidates]
        candidates += added
        if added:
            via = f" ({resolved.reason})" if target in SMART_ROUTE_NAMES else ""
            steps.append(f"{key} {target} -> {added[0].provider}/{added[0].model}{via}")
    reason = f"route {route.name}: " + ", ".join(steps)
    if not candidates:
        raise RelayError(
            503,
            f"nothing in {reason} is served by an active provider",
            "service_unavailable",
            code="route_unavailable",
            retry_after=30,
        )
    return Route(tuple(candidates), reason)


def within_mode(route: Route, catalog: Catalog, mode: str) -> Route:
    """The route restricted to the provider mode; 400 when the mode leaves nothing."""
    if mode == "hybrid":
        return route
    keep_local = mode == "local"
    kept = tuple(c for c in route.candidates if _is_local(catalog, c) == keep_local)
    if kept:
        return route if len(kept) == len(route.candidates) else Route(kept, f"{route.reason}; {mode} mode")
    raise RelayError(
        400,
        f"provider_mode is '{mode}' and every provider for this request is "
        f"{'cloud' if keep_local else 'local'} ({', '.join(sorted({c.provider for c in route.candidates}))})",
        "invalid_request_error",
        code="provider_mode",
        param="model",
    )


def _is_local(catalog: Catalog, candidate: Candidate) -> bool:
    models = catalog.provider(candidate.provider)
    return models is not None and models.local
