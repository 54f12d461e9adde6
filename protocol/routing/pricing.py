"""What a request cost: configured prices first, then genai-prices' maintained table.

Subscription CLIs and local models cost nothing per request (their tokens are still counted);
for the Claude CLI the CLI's own list-price estimate stays on `Usage.reported_cost_usd`.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import genai_prices
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import Usage
from relaybox.protocol.routing.catalog import Candidate, Catalog, ModelEntry

# relaybox provider kind -> genai-prices provider id
PRICE_TABLE_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
    "openrouter": "openrouter",
}
FREE_KINDS = frozenset({"claude-cli", "gemini-cli", "ollama"})

Pricer = Callable[[str, Usage], float | None]


def configured_cost(entry: ModelEntry, usage: Usage) -> float | None:
    if entry.input_per_mtok is None or entry.output_per_mtok is None:
        return None
    return (
        usage.prompt_tokens * entry.input_per_mtok + usage.completion_tokens * entry.output_per_mtok
    ) / 1e6


def table_cost(price_provider: str, model: str, usage: Usage) -> float | None:
    try:
        result = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.prompt_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                output_tokens=usage.completion_tokens,
            ),
            model,
            provider_id=price_provider,
        )
    except LookupError:
        return None
    return float(result.total_price)


@attrs.frozen
class ProviderPricing:
    """Prices for one provider: `kind` and `name` pick the table, `models` carry overrides."""

    kind: str
    name: str
    models: tuple[ModelEntry, ...] = ()

    @property
    def free(self) -> bool:
        return self.kind in FREE_KINDS

    def __call__(self, model: str, usage: Usage) -> float | None:
        if self.kind in FREE_KINDS:
            return 0.0
        entry = next((m for m in self.models if m.id == model), None)
        if entry is not None and usage.images and entry.per_image is not None:
            return entry.per_image * usage.images
        if entry is not None:
            cost = configured_cost(entry, usage)
            if cost is not None:
                return cost
        table = PRICE_TABLE_PROVIDERS.get(self.name) or PRICE_TABLE_PROVIDERS.get(self.kind)
        return None if table is None else table_cost(table, model, usage)


@attrs.frozen
class BaselinePricing:
    """What an attempt would have cost without routing: the yardstick for "cost saved".

    A request naming a model is priced on that model. One that names none (`auto`, a route, an
    unknown name sent to smart routing, `default`) is priced on `reference`: by default the
    costliest paid model configured, i.e. what sending everything to the best model would have
    cost (`[routing] savings_baseline` names another). None when there is nothing to compare with:
    a subscription CLI's model, or no paid model at all."""

    catalog: Catalog
    pricings: dict[str, ProviderPricing]
    reference: Candidate | None = None

    def __call__(self, requested: str, usage: Usage) -> float | None:
        try:
            route = self.catalog.resolve(requested)
            named = not route.reason.startswith("default route")
        except RelayError:
            named = False
        candidate = route.candidates[0] if named else self.reference
        if candidate is None:
            return None
        pricing = self.pricings.get(candidate.provider)
        if pricing is None or pricing.free:
            return None
        return pricing(candidate.model, usage)


def costliest_paid_model(catalog: Catalog) -> Candidate | None:
    """The default savings reference: the paid model with the highest reference cost."""
    priced = [(cost, provider, model) for (provider, model), cost in catalog.costs.items() if cost > 0]
    if not priced:
        return None
    _, provider, model = max(priced)
    return Candidate(provider, model)
