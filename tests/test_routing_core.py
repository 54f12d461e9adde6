"""The pure routing core: evidence, selection, named routes and the provider mode (no trio, no I/O)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from relaybox.protocol.errors import RelayError
from relaybox.protocol.routing.catalog import Candidate, Catalog, ModelEntry, ProviderModels, Route
from relaybox.protocol.routing.classifier import Classification
from relaybox.protocol.routing.evidence import DAY, Evidence, EvidencePolicy, Observation, RollupRow
from relaybox.protocol.routing.routes import NamedRoute, expand, requested_route, within_mode
from relaybox.protocol.routing.selection import ABTest, apply_ab_test, smart_route

CATALOG = Catalog(
    providers=(
        ProviderModels("ollama", (ModelEntry("llama", "economy"),), "llama", local=True),
        ProviderModels(
            "openai",
            (ModelEntry("mini", "economy"), ModelEntry("4o", "standard"), ModelEntry("o3", "premium")),
            "mini",
        ),
        ProviderModels(
            "anthropic", (ModelEntry("sonnet", "standard"), ModelEntry("opus", "premium")), "sonnet"
        ),
    ),
    costs={
        ("ollama", "llama"): 0.0,
        ("openai", "mini"): 0.0006,
        ("openai", "4o"): 0.01,
        ("anthropic", "sonnet"): 0.0135,
        ("openai", "o3"): 0.008 * 5,
        ("anthropic", "opus"): 0.0675,
    },
)


def needs(tier: str, category: str = "simple_qa") -> Classification:
    return Classification(category, {"economy": 10, "standard": 40, "premium": 80}[tier], tier)


def observe(evidence: Evidence, model: str, provider: str, good: float, n: int, at: float = 0.0) -> None:
    for _ in range(n):
        evidence.observe(Observation("simple_qa", provider, model, good, at, failed=good < 0.5))


def route(evidence: Evidence, tier: str = "economy", **options: object) -> Route:
    return smart_route(CATALOG, needs(tier), evidence, now=0.0, rng=random.Random(7), **options)  # type: ignore[arg-type]


# --- evidence ----------------------------------------------------------------------


def test_no_history_is_eligible_and_small_samples_are_not_evidence() -> None:
    evidence = Evidence(EvidencePolicy(consecutive_failure_limit=1000))
    assert evidence.standing("simple_qa", "openai", "mini", 0).eligible
    observe(evidence, "mini", "openai", 1.0, 8)
    observe(evidence, "mini", "openai", 0.0, 2)  # 8 of 10: below min_volume, no verdict
    assert evidence.standing("simple_qa", "openai", "mini", 0).eligible


def test_a_model_confidently_below_the_threshold_is_excluded_for_that_category_only() -> None:
    evidence = Evidence(EvidencePolicy(consecutive_failure_limit=1000))
    for i in range(60):  # 50% good, interleaved so no streak builds
        observe(evidence, "mini", "openai", float(i % 2), 1)
    standing = evidence.standing("simple_qa", "openai", "mini", 0)
    assert not standing.eligible and "below the 80% threshold" in standing.reason
    assert evidence.standing("code_gen", "openai", "mini", 0).eligible


def test_a_model_near_the_threshold_keeps_the_benefit_of_the_doubt() -> None:
    evidence = Evidence(EvidencePolicy(consecutive_failure_limit=1000))
    for i in range(30):  # 77% good of 30: the upper bound is above 80%
        observe(evidence, "mini", "openai", 0.0 if i % 13 == 0 or i % 7 == 0 else 1.0, 1)
    standing = evidence.standing("simple_qa", "openai", "mini", 0)
    assert 0.7 < standing.mean < 0.85 and standing.eligible


def test_evidence_decays_so_last_month_no_longer_counts() -> None:
    evidence = Evidence(EvidencePolicy(consecutive_failure_limit=1000))
    observe(evidence, "mini", "openai", 0.0, 100)
    assert not evidence.standing("simple_qa", "openai", "mini", 0).eligible
    assert evidence.standing("simple_qa", "openai", "mini", 30 * DAY).volume < 2
    assert evidence.standing("simple_qa", "openai", "mini", 30 * DAY).eligible


def test_consecutive_failures_exclude_then_a_probe_decides_and_exclusions_grow() -> None:
    evidence = Evidence(EvidencePolicy(consecutive_failure_limit=3, exclusion_seconds=60))
    observe(evidence, "mini", "openai", 0.0, 2)
    assert evidence.standing("simple_qa", "openai", "mini", 0).eligible
    observe(evidence, "mini", "openai", 0.0, 1)
    standing = evidence.standing("simple_qa", "openai", "mini", 59)
    assert not standing.eligible and "3 consecutive failures" in standing.reason
    assert evidence.standing("simple_qa", "openai", "mini", 60).eligible  # the probe
    observe(evidence, "mini", "openai", 0.0, 1, at=61)  # the probe fails: 120 s this time
    assert not evidence.standing("simple_qa", "openai", "mini", 61 + 119).eligible
    assert evidence.standing("simple_qa", "openai", "mini", 61 + 120).eligible
    observe(evidence, "mini", "openai", 1.0, 1, at=182)  # a good answer ends it all
    observe(evidence, "mini", "openai", 0.0, 2, at=183)
    assert evidence.standing("simple_qa", "openai", "mini", 183).eligible


def test_only_one_probe_goes_out_after_an_exclusion() -> None:
    evidence = Evidence(
        EvidencePolicy(consecutive_failure_limit=3, exclusion_seconds=60, probe_wait_seconds=120)
    )
    observe(evidence, "mini", "openai", 0.0, 3)
    assert evidence.standing("simple_qa", "openai", "mini", 60).eligible
    evidence.dispatched("simple_qa", "openai", "mini", 60)
    out = evidence.standing("simple_qa", "openai", "mini", 61)
    assert not out.eligible and "a probe after 3 failures is out" in out.reason
    assert evidence.standing("simple_qa", "openai", "mini", 180).eligible  # that probe never reported
    observe(evidence, "mini", "openai", 1.0, 1, at=181)
    assert evidence.standing("simple_qa", "openai", "mini", 181).eligible


def test_a_refresh_from_storage_keeps_what_storage_cannot_have_yet() -> None:
    evidence = Evidence()
    evidence.load([], wall_clock=0.0, now=0.0, keep_since=0.0)
    observe(evidence, "mini", "openai", 0.0, 5, at=10.0)  # written before the next read began
    observe(evidence, "mini", "openai", 1.0, 3, at=50.0)  # after: not in storage yet
    evidence.load([], wall_clock=60.0, now=60.0, keep_since=48.0)
    good, bad = evidence.posterior("simple_qa", "openai", "mini", 60.0)
    assert (round(good, 2), round(bad, 2)) == (3.0, 0.0)


def test_storage_rows_load_with_heuristics_ratings_and_age() -> None:
    now = 100 * DAY
    today = now - DAY / 2
    rows = [
        RollupRow(
            today, "openai", "mini", "simple_qa", "success", 40, heuristic_sum=40 * 30, heuristic_count=40
        ),
        RollupRow(today, "openai", "mini", "simple_qa", "server_error", 10),
        RollupRow(today, "openai", "mini", "simple_qa", "rate_limited", 500),  # not about answers
        RollupRow(today - 20 * DAY, "openai", "4o", "simple_qa", "server_error", 500),  # too old
        RollupRow(today, "openai", "4o", "simple_qa", "success", 10, rating_sum=50, rating_count=10),
    ]
    evidence = Evidence()
    evidence.load(rows, wall_clock=now, now=0.0, keep_since=0.0)
    mini = evidence.standing("simple_qa", "openai", "mini", 0.0)
    assert mini.volume == pytest.approx(50) and mini.mean == pytest.approx(13 / 52)
    assert not mini.eligible
    four = evidence.standing("simple_qa", "openai", "4o", 0.0)
    assert four.volume == pytest.approx(20) and four.mean == pytest.approx(21 / 22) and four.eligible


# --- selection ---------------------------------------------------------------------


def test_cheapest_of_the_tier_first_then_escalation_then_lower_tiers() -> None:
    picked = route(Evidence(), "standard")
    assert [(c.provider, c.model) for c in picked.candidates] == [
        ("openai", "4o"),
        ("anthropic", "sonnet"),
        ("openai", "o3"),
        ("anthropic", "opus"),
        ("ollama", "llama"),
        ("openai", "mini"),
    ]
    assert "openai/4o: cheapest standard, no history for simple_qa" in picked.reason


def test_an_excluded_model_escalates_but_stays_as_the_last_resort() -> None:
    evidence = Evidence()
    observe(evidence, "llama", "ollama", 0.0, 40)
    observe(evidence, "mini", "openai", 0.0, 40)
    picked = route(evidence, "economy")
    assert picked.candidates[0] == Candidate("openai", "4o")
    assert "no eligible economy model; escalated" in picked.reason
    assert picked.candidates[-2:] == (Candidate("ollama", "llama"), Candidate("openai", "mini"))


def test_a_model_below_the_threshold_still_gets_a_small_share_to_learn_from() -> None:
    evidence = Evidence(EvidencePolicy(consecutive_failure_limit=1000))
    for i in range(60):
        observe(evidence, "mini", "openai", float(i % 2), 1)  # 50%: excluded by the threshold
    firsts = Counter(
        smart_route(CATALOG, needs("economy"), evidence, now=0, rng=random.Random(seed)).candidates[0].model
        for seed in range(2000)
    )
    # llama (no history, $0) leads; mini is explored about 5% of the times it would be asked.
    assert firsts["llama"] == 2000
    only_mini = Catalog(providers=(CATALOG.providers[1],), costs=CATALOG.costs)
    routes = [
        smart_route(only_mini, needs("economy"), evidence, now=0, rng=random.Random(s)) for s in range(2000)
    ]
    explored = [r for r in routes if r.candidates[0].model == "mini"]
    assert 60 < len(explored) < 140
    assert "exploring (50% good of 60, below the threshold)" in explored[0].reason


def test_budget_pressure_asks_for_a_cheaper_tier() -> None:
    relaxed = route(Evidence(), "premium", pressure=0.5)
    pressed = route(Evidence(), "premium", pressure=0.85)
    assert relaxed.candidates[0] == Candidate("openai", "o3")
    assert pressed.candidates[0] == Candidate("openai", "4o")
    assert "budget 85% spent: premium -> standard" in pressed.reason


def test_ties_go_to_the_default_provider_then_priority_then_a_draw_that_explores() -> None:
    free = Catalog(
        providers=(
            ProviderModels("claude-cli", (ModelEntry("haiku", "economy"),), "haiku", local=True),
            ProviderModels("gemini-cli", (ModelEntry("flash", "economy"),), "flash", local=True),
        ),
        costs={("claude-cli", "haiku"): 0.0, ("gemini-cli", "flash"): 0.0},
    )
    evidence = Evidence()

    def first(catalog: Catalog, seed: int, **options: object) -> str:
        chosen = smart_route(catalog, needs("economy"), evidence, now=0, rng=random.Random(seed), **options)  # type: ignore[arg-type]
        return chosen.candidates[0].provider

    drawn = Counter(first(free, seed) for seed in range(200))
    assert 60 < drawn["claude-cli"] < 140, drawn  # no evidence: both get tried
    defaulted = Catalog(free.providers, default_provider="gemini-cli", costs=free.costs)
    assert {first(defaulted, seed) for seed in range(50)} == {"gemini-cli"}
    assert {first(free, seed, priorities={"claude-cli": 5}) for seed in range(50)} == {"claude-cli"}
    observe(evidence, "haiku", "claude-cli", 0.3, 15)  # worse, though not yet excluded
    observe(evidence, "flash", "gemini-cli", 1.0, 15)
    assert Counter(first(free, seed) for seed in range(200))["gemini-cli"] > 180


def test_ab_test_splits_only_its_categories_and_only_when_its_baseline_leads() -> None:
    test = ABTest("mini-vs-llama", Candidate("openai", "mini"), Candidate("ollama", "llama"), 0.3)
    base = Route((Candidate("openai", "mini"), Candidate("openai", "4o")), "auto")
    rng = random.Random(1)
    variants = Counter(apply_ab_test(base, (test,), "simple_qa", rng)[1][1] for _ in range(1000))  # type: ignore[index]
    assert 250 < variants["challenger"] < 350
    challenged = next(
        r
        for r, v in (apply_ab_test(base, (test,), "x", rng) for _ in range(50))
        if v and v[1] == "challenger"
    )
    assert challenged.candidates == (
        Candidate("ollama", "llama"),
        Candidate("openai", "mini"),
        Candidate("openai", "4o"),
    )
    narrow = ABTest("code-only", test.baseline, test.challenger, 0.5, frozenset({"code_gen"}))
    assert apply_ab_test(base, (narrow,), "simple_qa", rng) == (base, None)
    other_lead = Route((Candidate("openai", "4o"),), "auto")
    assert apply_ab_test(other_lead, (test,), "simple_qa", rng) == (other_lead, None)


# --- named routes and the provider mode ------------------------------------------------

ROUTES = {"planning": NamedRoute("planning", ("anthropic:opus", "nope:model", "premium", "auto"))}


def test_a_route_is_named_by_header_prefix_or_bare_name() -> None:
    assert requested_route("route:planning", None, ROUTES) is ROUTES["planning"]
    assert requested_route("planning", None, ROUTES) is ROUTES["planning"]
    assert requested_route("gpt-4o", "planning", ROUTES) is ROUTES["planning"]
    assert requested_route("gpt-4o", None, ROUTES) is None
    for model, header in (("route:nope", None), ("gpt-4o", "nope")):
        with pytest.raises(RelayError) as caught:
            requested_route(model, header, ROUTES)
        assert caught.value.status == 404 and caught.value.code == "route_not_found"


def test_a_chain_expands_in_order_once_each_skipping_what_is_not_served() -> None:
    def resolve(target: str) -> Route:
        if target == "auto":
            return Route((Candidate("ollama", "llama"), Candidate("openai", "o3")), "auto: cheapest")
        return CATALOG.resolve(target)

    expanded = expand(ROUTES["planning"], resolve)
    assert expanded.candidates == (
        Candidate("anthropic", "opus"),
        Candidate("openai", "o3"),
        Candidate("ollama", "llama"),
    )
    assert expanded.reason.startswith("route planning: primary anthropic:opus -> anthropic/opus")
    assert "backup_1 nope:model: not served here" in expanded.reason
    with pytest.raises(RelayError) as caught:
        expand(NamedRoute("dead", ("nope:a", "nope:b")), resolve)
    assert caught.value.status == 503 and caught.value.code == "route_unavailable"


def test_the_provider_mode_keeps_local_or_cloud_providers() -> None:
    mixed = Route((Candidate("openai", "mini"), Candidate("ollama", "llama")), "auto")
    assert within_mode(mixed, CATALOG, "hybrid") is mixed
    assert within_mode(mixed, CATALOG, "local").candidates == (Candidate("ollama", "llama"),)
    assert within_mode(mixed, CATALOG, "cloud").candidates == (Candidate("openai", "mini"),)
    with pytest.raises(RelayError) as caught:
        within_mode(Route((Candidate("openai", "mini"),), "pinned"), CATALOG, "local")
    assert caught.value.status == 400 and "provider_mode is 'local'" in caught.value.message
