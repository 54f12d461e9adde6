"""Cost: configured prices override genai-prices' table; CLIs and local models cost nothing."""

from __future__ import annotations

from pathlib import Path

import attrs
import httpx
import pytest
from relaybox.protocol import tokens
from relaybox.protocol.chat import ChatMessage, ChatRequest
from relaybox.protocol.events import Usage
from relaybox.protocol.routing.catalog import ModelEntry
from relaybox.protocol.routing.pricing import ProviderPricing, table_cost

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import api_provider, openai_provider, serve, settings_for

USAGE = Usage(prompt_tokens=1_000_000, completion_tokens=100_000)


def test_configured_prices_win() -> None:
    pricing = ProviderPricing("openai-compatible", "groq", (ModelEntry("llama", "standard", 0.59, 0.79),))
    assert pricing("llama", USAGE) == pytest.approx(0.59 + 0.079)


def test_table_prices_from_genai_prices_including_cache_discounts() -> None:
    pricing = ProviderPricing("openai-compatible", "openai")
    full = pricing("gpt-4o-mini", Usage(1000, 0))
    cached = pricing("gpt-4o-mini", Usage(1000, 0, cache_read_tokens=1000))
    assert full == pytest.approx(table_cost("openai", "gpt-4o-mini", Usage(1000, 0)))
    assert full is not None and cached is not None and cached < full
    assert ProviderPricing("anthropic", "anthropic")("claude-sonnet-4-5", Usage(1000, 1000)) == pytest.approx(
        0.018
    )


def test_free_and_unknown() -> None:
    assert ProviderPricing("claude-cli", "claude-cli")("sonnet", USAGE) == 0.0
    assert ProviderPricing("ollama", "ollama")("llama3.2:3b", USAGE) == 0.0
    assert ProviderPricing("openai-compatible", "my-vllm")("anything", USAGE) is None
    assert ProviderPricing("openai-compatible", "openai")("no-such-model", USAGE) is None


async def test_non_streaming_answers_carry_their_cost(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.replies.push(Reply(prompt_tokens=1000, completion_tokens=1000))
    fake_anthropic.replies.push(Reply(prompt_tokens=1000, completion_tokens=1000))
    # No price configured for the Anthropic model: genai-prices' table decides.
    anthropic = attrs.evolve(
        api_provider("anthropic", "anthropic", fake_anthropic.base_url, models=("claude-sonnet-4-5",)),
        models=(ModelEntry("claude-sonnet-4-5"),),
    )
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), anthropic)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        configured = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        from_table = await client.post(
            "/v1/chat/completions",
            json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert float(configured.headers["x-cost-usd"]) == pytest.approx((1000 * 0.15 + 1000 * 0.60) / 1e6)
    assert float(from_table.headers["x-cost-usd"]) == pytest.approx(0.018)


def test_baseline_is_the_price_of_the_model_the_client_asked_for() -> None:
    from relaybox.protocol.routing.catalog import Catalog, ProviderModels
    from relaybox.protocol.routing.pricing import BaselinePricing

    catalog = Catalog(
        (
            ProviderModels("openai", (ModelEntry("gpt-4o", "standard", 2.5, 10.0),), "gpt-4o"),
            ProviderModels("claude-cli", (ModelEntry("sonnet"),), "sonnet"),
        ),
        default_provider="claude-cli",
    )
    pricings = {
        "openai": ProviderPricing("openai-compatible", "openai", catalog.providers[0].models),
        "claude-cli": ProviderPricing("claude-cli", "claude-cli"),
    }
    baseline = BaselinePricing(catalog, pricings)
    assert baseline("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(2.5)
    assert baseline("sonnet", USAGE) is None  # a subscription CLI has no per-request price
    assert baseline("auto", USAGE) is None and baseline("nonsense", USAGE) is None


def test_requests_naming_no_model_are_priced_on_the_savings_reference() -> None:
    from relaybox.protocol.routing.catalog import Candidate, Catalog, ProviderModels
    from relaybox.protocol.routing.pricing import BaselinePricing, costliest_paid_model

    models = (ModelEntry("gpt-4o-mini", "economy", 0.15, 0.6), ModelEntry("gpt-4o", "premium", 2.5, 10.0))
    catalog = Catalog(
        (
            ProviderModels("openai", models, "gpt-4o-mini"),
            ProviderModels("claude-cli", (ModelEntry("sonnet"),), "sonnet"),
        ),
        costs={("openai", "gpt-4o-mini"): 0.0006, ("openai", "gpt-4o"): 0.01, ("claude-cli", "sonnet"): 0.0},
    )
    pricings = {
        "openai": ProviderPricing("openai-compatible", "openai", models),
        "claude-cli": ProviderPricing("claude-cli", "claude-cli"),
    }
    reference = costliest_paid_model(catalog)
    assert reference == Candidate("openai", "gpt-4o")
    baseline = BaselinePricing(catalog, pricings, reference)
    million_in = Usage(1_000_000, 0)
    assert baseline("auto", million_in) == pytest.approx(2.5)  # what gpt-4o would have cost
    assert baseline("route:coder", million_in) == pytest.approx(2.5)
    assert baseline("gpt-4o-mini", million_in) == pytest.approx(0.15)  # the model the client named
    assert baseline("sonnet", million_in) is None
    free_only = Catalog((catalog.providers[1],), costs={("claude-cli", "sonnet"): 0.0})
    assert costliest_paid_model(free_only) is None


@pytest.mark.parametrize(
    "texts",
    [
        ("hi",),
        ("0-12 hello",),
        ("You are terse.", "Say hello in one short sentence."),
        ("def f(x):\n    return {k: v for k, v in x.items() if v}\n",),
        ("Summarise the following log.", "ERROR 2026-11-30 12:00:01 worker 3: timeout after 30 s\n" * 20),
    ],
    ids=["one word", "short", "system and user", "code", "log"],
)
def test_a_budgets_prompt_estimate_is_not_below_the_real_count(texts: tuple[str, ...]) -> None:
    # Short messages are mostly framing: an estimate without it let budgets be overshot.
    roles = ["system", "user"] if len(texts) == 2 else ["user"]
    request = ChatRequest(
        "m", tuple(ChatMessage(role, text) for role, text in zip(roles, texts, strict=True))
    )
    assert tokens.high_estimate(request) >= tokens.count_request(request)
