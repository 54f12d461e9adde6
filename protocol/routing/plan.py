"""The route for one request: which models may serve it, in what order, and why.

The model name picks the route: a named route or role (`route:NAME`, a bare route name, or the
`x-relaybox-route` header), `auto` or a name nothing serves (smart routing: the learned router's
cheapest model predicted good enough for this prompt, `learned_route.py`; with it off, the cheapest
eligible model of the tier the classification asks for, from the evidence), a tier or legacy OpenAI name
(smart routing held to that tier), or an exact id, alias or `provider:model`. An A/B test may then
put its challenger first, and the provider mode narrows the result. The reason travels with the
route to the `x-router-reason` header and the log.

Pure: the router actor passes in what it knows (`RoutingContext`) and walks the route it gets.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import attrs
from relaybox.protocol.routing.catalog import (
    LEGACY_TIERS,
    SMART_ROUTE_NAMES,
    TIERS,
    Catalog,
    Route,
    UnknownModel,
)
from relaybox.protocol.routing.classifier import Classification, TierThresholds
from relaybox.protocol.routing.evidence import Evidence, EvidencePolicy
from relaybox.protocol.routing.learned import QualityModels
from relaybox.protocol.routing.learned_route import (
    LearnedPolicy,
    PromptFeatures,
    learned_route,
    promised_route,
)
from relaybox.protocol.routing.promise import Promise
from relaybox.protocol.routing.routes import BUILTIN_ROUTES, NamedRoute, expand, requested_route, within_mode
from relaybox.protocol.routing.selection import ABTest, SelectionPolicy, apply_ab_test, smart_route


@attrs.frozen
class RoutingSettings:
    thresholds: TierThresholds = attrs.field(factory=TierThresholds)
    evidence: EvidencePolicy = attrs.field(factory=EvidencePolicy)
    selection: SelectionPolicy = attrs.field(factory=SelectionPolicy)
    routes: Mapping[str, NamedRoute] = attrs.field(factory=lambda: dict(BUILTIN_ROUTES))
    mode: str = "hybrid"  # "hybrid" | "local" | "cloud"
    unknown_models: str = "route"  # "route" (smart routing) | "reject" (404)
    ab_tests: tuple[ABTest, ...] = ()
    refresh_seconds: float = 60.0
    # Cascade (non-streaming): an answer scoring below this escalates to a stronger candidate (0: off).
    cascade_below: int = 50
    # "provider:model" that requests naming no model are priced on for "cost saved" (None: the costliest paid one).
    savings_baseline: str | None = None
    llm_classifier: bool = False  # LLM_CLASSIFIER: the cheapest model classifies smart-routed requests
    classifier_timeout: float = 10.0
    seed: int | None = None  # for the Thompson draws and A/B splits; None: from the OS
    learned: LearnedPolicy = attrs.field(factory=LearnedPolicy)


@attrs.frozen(eq=False)
class RoutingContext:
    """What a routing decision reads, handed over by the router as it decides: the catalogs, the
    time and the budget's pressure as they are then; the evidence, the random generator and the
    priorities are the router's own (selection draws from the generator)."""

    catalog: Catalog  # every configured provider
    routable: Catalog  # what smart routing chooses from (see `routable_catalog`)
    settings: RoutingSettings
    evidence: Evidence
    now: float
    rng: random.Random
    pressure: float = 0.0  # the budget's: the highest share of an enabled budget spent
    priorities: Mapping[str, int] = attrs.field(factory=dict)
    # The learned router's models and this request's prompt (None: the tiers decide).
    quality: QualityModels | None = None
    prompt: PromptFeatures | None = None
    promise: Promise | None = None  # the quality promise, when `[routing] quality_kept` sets one


def routable_catalog(catalog: Catalog, disabled: frozenset[str] | set[str], mode: str) -> Catalog:
    """The catalog smart routing chooses from: enabled providers the mode allows."""
    return attrs.evolve(
        catalog,
        providers=tuple(
            p
            for p in catalog.providers
            if p.provider not in disabled and (mode == "hybrid" or p.local == (mode == "local"))
        ),
    )


def plan_route(
    model: str, header: str | None, classification: Classification, context: RoutingContext
) -> tuple[Route, bool]:
    """The route for a model name, and whether smart routing chose its order."""
    named = requested_route(model, header, context.settings.routes)
    if named is None:
        return resolve_name(model, classification, context)
    chain_is_smart = False

    def target(name: str) -> Route:
        nonlocal chain_is_smart
        route, smart = resolve_name(name, classification, context, unknown_to_smart=False)
        chain_is_smart |= smart
        return route

    return expand(named, target), chain_is_smart


def resolve_name(
    name: str, classification: Classification, context: RoutingContext, *, unknown_to_smart: bool = True
) -> tuple[Route, bool]:
    if name in SMART_ROUTE_NAMES:
        return smart_choice(classification, name, context), True
    tier = name if name in TIERS else LEGACY_TIERS.get(name)
    if tier is not None:
        label = f"tier {tier}" if name == tier else f"{name} -> tier {tier}"
        return cheapest_capable(attrs.evolve(classification, tier=tier), label, context), True
    try:
        return context.catalog.resolve(name), False
    except UnknownModel:
        if not unknown_to_smart or context.settings.unknown_models == "reject":
            raise
        return smart_choice(classification, f"{UNKNOWN_MODEL}{name}{TO_AUTO}", context), True


# How a route's reason begins when smart routing took a name nothing serves.
UNKNOWN_MODEL, TO_AUTO = "unknown model '", "' -> auto"


def unknown_name(reason: str) -> str | None:
    """The name a client asked for that nothing serves, when smart routing answered it instead."""
    if not reason.startswith(UNKNOWN_MODEL) or TO_AUTO not in reason:
        return None
    return reason[len(UNKNOWN_MODEL) :].rsplit(TO_AUTO, 1)[0]


def cheapest_capable(classification: Classification, label: str, context: RoutingContext) -> Route:
    """Smart routing over the routable catalog, from the evidence and the budget's pressure."""
    return smart_route(
        context.routable,
        classification,
        context.evidence,
        now=context.now,
        rng=context.rng,
        pressure=context.pressure,
        priorities=dict(context.priorities),
        policy=context.settings.selection,
        label=label,
    )


def smart_choice(classification: Classification, label: str, context: RoutingContext) -> Route:
    """`auto`: the learned router's choice when it is on, else the classifier's tier's cheapest."""
    policy = context.settings.learned
    if not policy.enabled or context.quality is None or context.prompt is None:
        return cheapest_capable(classification, label, context)
    every_tier = cheapest_capable(attrs.evolve(classification, tier=TIERS[0]), label, context)
    if context.promise is not None:
        return promised_route(
            context.routable,
            every_tier,
            classification,
            context.prompt.scored(),
            context.promise,
            label=label,
        )
    return learned_route(
        context.routable,
        every_tier,
        classification,
        context.prompt.get(),
        context.quality,
        policy,
        label=label,
        pressure=context.pressure,
        budget_pressure=context.settings.selection.budget_pressure,
    )


def finish_route(
    route: Route, smart: bool, category: str, context: RoutingContext
) -> tuple[Route, tuple[str, str] | None]:
    """A smart route's A/B test, if one applies (its name and variant), then the provider mode."""
    ab = None
    if smart and context.settings.ab_tests:
        route, ab = apply_ab_test(route, context.settings.ab_tests, category, context.rng)
    return within_mode(route, context.catalog, context.settings.mode), ab
