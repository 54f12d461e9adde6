"""The model catalog and model-name resolution: which providers may serve a requested name.

Pure: the router calls `resolve` with the catalog it was built with and acts on the answer.
The names resolved here are exact model ids, `provider:model`, aliases, tier names and OpenAI's
legacy names, a provider's own id prefix (any `claude-*` id for the Claude CLI), a provider id
(its default model), and `default`. `auto` and names nothing serves (`UnknownModel`) are the
router's: it classifies the request and asks `selection` for the cheapest model that fits.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from relaybox.protocol.errors import RelayError

TIERS = ("economy", "standard", "premium")
# `default` takes the default provider's default model; `auto` (and, unless configured otherwise,
# any name nothing serves) goes to smart routing, which the router does with `selection`.
DEFAULT_ROUTE_NAMES = frozenset({"default"})
# Statistics of models the configuration does not list are kept together under this name.
OTHER_MODEL = "(other)"
SMART_ROUTE_NAMES = frozenset({"auto"})
# OpenAI's legacy names, kept working by mapping them to a tier (seed 001).
LEGACY_TIERS = {
    "gpt-4": "premium",
    "gpt-4-turbo": "premium",
    "gpt-4-32k": "premium",
    "gpt-3.5-turbo": "economy",
    "gpt-3.5-turbo-16k": "economy",
}


@attrs.frozen
class ModelEntry:
    id: str
    tier: str = "standard"
    input_per_mtok: float | None = None  # USD per million input tokens
    output_per_mtok: float | None = None
    context_window: int | None = None
    per_image: float | None = None  # USD per generated image (image models priced that way)


@attrs.frozen
class ProviderModels:
    provider: str
    models: tuple[ModelEntry, ...]
    default_model: str
    # Model ids outside the list that the provider still serves (passed through as they are).
    accepts_prefixes: tuple[str, ...] = ()
    priority: int = 0
    # Whether the provider can take images at all (the CLIs cannot).
    vision: bool = True
    # Models that generate images (POST /v1/images/generations).
    image_models: tuple[ModelEntry, ...] = ()
    # Models that embed (POST /v1/embeddings).
    embedding_models: tuple[ModelEntry, ...] = ()
    # Runs on the user's own machine or subscription (a CLI, Ollama): what provider_mode "local" keeps.
    local: bool = False

    def offers(self, model: str) -> bool:
        return any(m.id == model for m in self.models)

    def entry(self, model: str) -> ModelEntry | None:
        return next((m for m in self.models if m.id == model), None)


@attrs.frozen
class Candidate:
    provider: str
    model: str


@attrs.frozen
class Route:
    candidates: tuple[Candidate, ...]
    reason: str


@attrs.frozen
class Catalog:
    providers: tuple[ProviderModels, ...]
    default_provider: str | None = None
    aliases: dict[str, str] = attrs.field(factory=dict)
    # A comparable price per (provider, model): USD for a reference request (see `reference_cost`);
    # subscription CLIs and local models are 0, unknown prices sort last.
    costs: dict[tuple[str, str], float] = attrs.field(factory=dict)

    def provider(self, name: str) -> ProviderModels | None:
        # Seed 002 spells provider ids with underscores (claude_cli); both spellings work.
        return next((p for p in self.providers if p.provider in (name, name.replace("_", "-"))), None)

    def statistics_key(self, candidate: Candidate) -> tuple[str, str]:
        """The (provider, model) statistics are kept under: a model the configuration lists, or
        `OTHER_MODEL` for any name a client made up (`provider:anything`, a prefix's pass-through),
        so no client can grow relaybox's statistics without bound."""
        models = self.provider(candidate.provider)
        listed = models is not None and (
            models.offers(candidate.model)
            or any(m.id == candidate.model for m in (*models.image_models, *models.embedding_models))
        )
        return (candidate.provider, candidate.model if listed else OTHER_MODEL)

    def tier_of(self, candidate: Candidate) -> str | None:
        models = self.provider(candidate.provider)
        entry = None if models is None else models.entry(candidate.model)
        return None if entry is None else entry.tier

    def ordered(self) -> list[ProviderModels]:
        """Providers in preference order: the default first, then by priority, then as configured."""
        return sorted(
            self.providers,
            key=lambda p: (p.provider != self.default_provider, -p.priority),
        )

    def resolve(self, name: str) -> Route:
        """The candidates for a requested model name, best first; 404 when nothing serves it."""
        provider_name, sep, model = name.partition(":")
        pinned = self.provider(provider_name) if sep else None
        if pinned is not None:
            if not model:
                raise _unknown(name, "a model id must follow the provider name")
            return Route((Candidate(pinned.provider, model),), f"pinned to {pinned.provider}:{model}")
        exact = [Candidate(p.provider, name) for p in self.ordered() if p.offers(name)]
        if exact:
            return Route(tuple(exact), f"exact model id {name}")
        if name in self.aliases:
            target = self.aliases[name]
            route = self._resolve_target(target)
            return Route(route.candidates, f"alias {name} -> {target}")
        tier = name if name in TIERS else LEGACY_TIERS.get(name)
        if tier is not None:
            return self._tier_route(tier, name)
        prefixed = [
            Candidate(p.provider, name)
            for p in self.ordered()
            if any(name.startswith(prefix) for prefix in p.accepts_prefixes)
        ]
        if prefixed:
            return Route(tuple(prefixed), f"{prefixed[0].provider} serves {name}")
        whole_provider = self.provider(name)
        if whole_provider is not None:
            candidate = Candidate(whole_provider.provider, whole_provider.default_model)
            return Route((candidate,), f"provider {name}: its default model {candidate.model}")
        if name in DEFAULT_ROUTE_NAMES:
            defaults = tuple(Candidate(p.provider, p.default_model) for p in self.ordered())
            if not defaults:
                raise RelayError(
                    503,
                    "no provider is configured; see `relaybox serve` start-up output",
                    "service_unavailable",
                    code="no_providers",
                    retry_after=30,
                )
            return Route(defaults, f"default route: {defaults[0].provider}/{defaults[0].model}")
        raise UnknownModel(name)

    def resolve_image(self, name: str | None) -> Route:
        """Candidates for image generation: a pinned or exact image model, or every provider's first."""
        return self._resolve_special(
            name,
            "image",
            lambda p: p.image_models,
            "no active provider generates images (OpenAI or OpenRouter can)",
        )

    def resolve_embedding(self, name: str | None) -> Route:
        """Candidates for embeddings: a pinned or exact embedding model, or every provider's first."""
        return self._resolve_special(
            name,
            "embedding",
            lambda p: p.embedding_models,
            "no active provider embeds (OpenAI, Gemini, Ollama, OpenRouter, or a custom provider with "
            "embedding_models can)",
        )

    def _resolve_special(
        self,
        name: str | None,
        kind: str,
        models_of: Callable[[ProviderModels], tuple[ModelEntry, ...]],
        none: str,
    ) -> Route:
        makers = [p for p in self.ordered() if models_of(p)]
        if not makers:
            raise RelayError(404, none, "invalid_request_error", code="model_not_found", param="model")
        if name is None or name in DEFAULT_ROUTE_NAMES or name in SMART_ROUTE_NAMES:
            defaults = tuple(Candidate(p.provider, models_of(p)[0].id) for p in makers)
            return Route(defaults, f"default {kind} route: {defaults[0].provider}/{defaults[0].model}")
        provider_name, sep, model = name.partition(":")
        if sep and self.provider(provider_name) is not None and model:
            return Route((Candidate(provider_name, model),), f"pinned to {provider_name}:{model}")
        exact = [Candidate(p.provider, name) for p in makers if any(m.id == name for m in models_of(p))]
        if exact:
            return Route(tuple(exact), f"exact {kind} model {name}")
        models = ", ".join(f"{p.provider}:{m.id}" for p in makers for m in models_of(p))
        raise RelayError(
            404,
            f"The {kind} model '{name}' is not served here; available: {models}",
            "invalid_request_error",
            code="model_not_found",
            param="model",
        )

    def _tier_route(self, tier: str, name: str) -> Route:
        """Every model of the tier, cheapest first, then the tiers above it (escalation)."""
        ordered = self.ordered()
        rank = {p.provider: i for i, p in enumerate(ordered)}
        candidates: list[Candidate] = []
        for level in TIERS[TIERS.index(tier) :]:
            models = [(p.provider, m.id) for p in ordered for m in p.models if m.tier == level]
            models.sort(key=lambda pm: (self.costs.get(pm, float("inf")), rank[pm[0]]))
            candidates += [Candidate(provider, model) for provider, model in models]
        if not candidates:
            raise _unknown(name, f"no active provider has a model in the {tier} tier or above")
        first = candidates[0]
        via = f"{name} -> tier {tier}" if name != tier else f"tier {tier}"
        return Route(tuple(candidates), f"{via}: cheapest is {first.provider}/{first.model}")

    def _resolve_target(self, target: str) -> Route:
        if target in self.aliases:  # aliases do not chain: a loop would never end
            raise _unknown(target, "an alias may not point to another alias")
        return self.resolve(target)

    def model_ids(self) -> list[tuple[str, str]]:
        """(model id, provider) for every model of every provider, for `/v1/models`."""
        return [(m.id, p.provider) for p in self.ordered() for m in p.models]


class UnknownModel(RelayError):
    """Nothing serves this name. The router sends it to smart routing unless configured to refuse."""

    def __init__(self, name: str) -> None:
        error = _unknown(name, None)
        super().__init__(error.status, error.message, error.type, code=error.code, param=error.param)
        self.name = name


def _unknown(name: str, detail: str | None) -> RelayError:
    message = f"The model '{name}' is not served by this relaybox"
    if detail:
        message += f" ({detail})"
    message += (
        ". GET /v1/models lists the valid names; 'provider:model' pins a provider; "
        "'auto' picks the cheapest model for the task."
    )
    return RelayError(404, message, "invalid_request_error", code="model_not_found", param="model")
