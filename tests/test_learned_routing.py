"""The learned per-prompt router's pure core: prompt features and the per-model good-answer model."""

from __future__ import annotations

import math
import random

import pytest
from relaybox.protocol.routing.catalog import Candidate, Catalog, ModelEntry, ProviderModels, Route
from relaybox.protocol.routing.classifier import Classification
from relaybox.protocol.routing.judging import FollowUp, follow_up, judge_request, read_verdict
from relaybox.protocol.routing.learned import (
    FEATURE_BITS,
    CorrectedModel,
    GoodAnswerModel,
    Label,
    QualityModels,
    cheap_model_prior,
    features,
)
from relaybox.protocol.routing.learned_route import LearnedPolicy, learned_route


def test_features_are_the_same_everywhere_and_normalised() -> None:
    x = features(["What is the derivative of x squared?"])
    assert x == features(["What is the derivative of x squared?"])  # no per-process hash salt
    assert x != features(["What is the capital of France?"])
    assert all(0 <= slot < 2**FEATURE_BITS for slot, _ in x)
    assert math.isclose(sum(v * v for _, v in x), 1.0)
    assert features([""]) == ()


def test_a_long_prompt_is_read_by_its_head_and_tail() -> None:
    def slots(text: str) -> set[int]:
        return {slot for slot, _ in features([text])}

    middle = " ".join(f"word{i}" for i in range(20_000))
    long = slots("Prove the theorem. " + middle + " Answer in Lean.")
    assert slots("Prove the theorem.") <= long and slots("Answer in Lean.") <= long
    assert not slots("word10000") <= long, "the middle of a long prompt is not read"


def test_the_model_learns_which_kind_of_prompt_the_cheap_model_fails() -> None:
    rng = random.Random(0)
    hard = [
        "Integrate {} over the unit sphere in spherical coordinates",
        "Solve the differential equation {}",
    ]
    easy = ["Say hello to {} in one sentence", "Translate {} into French"]
    model = GoodAnswerModel()
    for i in range(600):
        kind = rng.random() < 0.5
        template = rng.choice(hard if kind else easy)
        good = 0.0 if kind else 1.0
        if rng.random() < 0.15:  # a judge that is sometimes wrong
            good = 1.0 - good
        model.learn(features([template.format(f"item {i}")]), good)
    assert model.predict(features(["Solve the differential equation y' = y"])) < 0.3
    assert model.predict(features(["Say hello to my neighbour in one sentence"])) > 0.7


def test_a_copy_learns_on_its_own() -> None:
    prior = GoodAnswerModel()
    prior.learn(features(["a question"]), 1.0)
    copy = prior.copy()
    for _ in range(20):
        copy.learn(features(["a question"]), 0.0)
    assert prior.predict(features(["a question"])) > 0.5 > copy.predict(features(["a question"]))


def test_a_model_survives_its_bytes() -> None:
    model = GoodAnswerModel()
    for i in range(50):
        model.learn(features([f"question {i} about {'maths' if i % 2 else 'poems'}"]), float(i % 2 == 0))
    again = GoodAnswerModel.from_bytes(model.to_bytes())
    for text in ("a question about maths", "a question about poems", "something else"):
        assert math.isclose(again.predict(features([text])), model.predict(features([text])), abs_tol=1e-5)
    assert again.seen == model.seen == 50


def test_the_shipped_prior_is_the_one_its_build_makes() -> None:
    from bench.routing_prior import build
    from bench.routing_replay import DATA

    if not DATA.exists():
        pytest.skip(f"the recorded outcomes the prior is built from are not at {DATA}")
    built, count = build(DATA, epochs=1)
    shipped = cheap_model_prior()
    assert shipped.seen == built.seen == count
    for text in ("Natalia sold clips to 48 of her friends in April", "Write a haiku about autumn"):
        assert math.isclose(shipped.predict(features([text])), built.predict(features([text])), abs_tol=1e-4)


def trained_prior() -> GoodAnswerModel:
    prior = GoodAnswerModel()
    for i in range(200):
        prior.learn(features([f"prior question {i} on topic {i % 7}"]), float(i % 3 == 0))
    return prior


def test_a_corrected_model_learns_as_a_copy_of_its_prior_would() -> None:
    prior = trained_prior()
    before = prior.to_bytes()
    copy, corrected = prior.copy(), CorrectedModel(prior)
    rng = random.Random(1)
    for _ in range(300):
        x = features([f"live question {rng.randrange(50)} on topic {rng.randrange(9)}"])
        good = float(rng.random() < 0.4)
        copy.learn(x, good)
        corrected.learn(x, good)
    for text in ("live question 3 on topic 4", "prior question 5 on topic 5", "unrelated words"):
        assert math.isclose(corrected.predict(features([text])), copy.predict(features([text])), rel_tol=1e-9)
    assert prior.to_bytes() == before, "the shared prior is read, never written"


def test_a_corrected_models_table_is_bounded() -> None:
    corrected = CorrectedModel(trained_prior(), max_slots=500)
    for i in range(400):
        corrected.learn(features([f"distinct{i} words{i} here{i}"]), 1.0)
    assert len(corrected.corrections) == 500
    latest = {slot for slot, _ in features(["distinct399 words399 here399"])}
    assert latest <= set(corrected.corrections), "the least recently touched slots go first"


# --- the decision and the judge ----------------------------------------------------------------

CHESS = "In chess, can a {} capture a {} standing {} squares away on its diagonal?"
CAPITALS = "What is the capital city of {}? Answer in one sentence."


def three_tiers() -> tuple[Catalog, Route]:
    entries = (ModelEntry("small", "economy"), ModelEntry("mid", "standard"), ModelEntry("big", "premium"))
    catalog = Catalog(
        (ProviderModels("p", entries, "small"),),
        costs={("p", "small"): 1.0, ("p", "mid"): 5.0, ("p", "big"): 20.0},
    )
    return catalog, Route((Candidate("p", "small"), Candidate("p", "mid"), Candidate("p", "big")), "auto")


def taught(rounds: int = 30) -> tuple[QualityModels, random.Random]:
    """Models that learned the cheap model fails chess and answers capitals well."""
    rng = random.Random(3)
    models = QualityModels()
    for _ in range(rounds):
        chess = features([CHESS.format(*rng.sample(["rook", "queen", "pawn", "king"], 2), rng.randint(2, 7))])
        capital = features([CAPITALS.format(rng.choice(["Peru", "Chile", "Laos", "Ghana"]))])
        models.learn(("p", "small"), Label("p", "small", "economy", chess, 0.0, "judge"))
        models.learn(("p", "small"), Label("p", "small", "economy", capital, 1.0, "judge"))
    return models, rng


def decide(models: QualityModels, text: str, **changes: object) -> Route:
    catalog, route = three_tiers()
    classification = changes.pop("classification", Classification("simple_qa", 10, "economy"))
    return learned_route(
        catalog,
        route,
        classification,  # type: ignore[arg-type]
        features([text]),
        models,
        LearnedPolicy(quality_kept=None, quality_target=0.7, quality_gap=0.0),
        label="auto",
        **changes,  # type: ignore[arg-type]
    )


def test_auto_takes_the_cheapest_model_predicted_good_enough_and_says_why() -> None:
    models, _ = taught()
    capital = decide(models, CAPITALS.format("Kenya"))
    assert capital.candidates[0] == Candidate("p", "small")
    assert (
        capital.reason.startswith("auto: learned: p/small p(good)=0.")
        and "labels of its own" in capital.reason
    )
    chess = decide(models, CHESS.format("bishop", "knight", 4))
    assert chess.candidates[0] != Candidate("p", "small")
    assert chess.candidates[-1] == Candidate("p", "small"), "passed over, it stays as a last resort"
    assert set(chess.candidates) == set(three_tiers()[1].candidates)


def test_tool_loops_keep_the_classifiers_tier_as_a_floor_and_budget_pressure_steps_down() -> None:
    models, _ = taught()
    agentic = Classification("code_gen", 40, "standard", agentic=True)
    floor = decide(models, CAPITALS.format("Kenya"), classification=agentic)
    assert floor.candidates[0] != Candidate("p", "small")
    untaught = QualityModels()
    chess = decide(untaught, CHESS.format("bishop", "knight", 4))
    pressed = decide(untaught, CHESS.format("bishop", "knight", 4), pressure=0.9)
    catalog = three_tiers()[0]
    rank = ("economy", "standard", "premium").index
    assert (
        rank(catalog.tier_of(pressed.candidates[0]) or "")
        == rank(catalog.tier_of(chess.candidates[0]) or "") - 1
    )
    assert "budget 90% spent" in pressed.reason


def test_follow_ups_keep_to_their_rates_and_stop_first_under_budget_pressure() -> None:
    policy = LearnedPolicy(
        quality_kept=None, judge_rate=0.3, shadow_rate=0.5, shadow_up_rate=0.05, stop_at_pressure=0.5
    )
    rng = random.Random(0)
    cheap = [follow_up(policy, rng, served_strongest=False, pressure=0.0) for _ in range(20_000)]
    strong = [follow_up(policy, rng, served_strongest=True, pressure=0.0) for _ in range(20_000)]
    assert abs(cheap.count(FollowUp.JUDGE) / 20_000 - 0.3) < 0.02
    assert abs(cheap.count(FollowUp.SHADOW_UP) / 20_000 - 0.05) < 0.01
    assert FollowUp.SHADOW_DOWN not in cheap and FollowUp.JUDGE not in strong
    assert abs(strong.count(FollowUp.SHADOW_DOWN) / 20_000 - 0.5) < 0.02
    pressed = [follow_up(policy, rng, served_strongest=s, pressure=0.5) for s in (True, False) * 500]
    assert pressed == [None] * 1000


def test_the_judges_question_and_the_reading_of_its_verdict() -> None:
    question = judge_request("Which is larger, 2**10 or 10**3?", ["2**10 = 1024", "x" * 20_000], "small")
    asked = question.messages[-1].text()
    assert "Answer A:\n2**10 = 1024" in asked and "Answer B:\n" in asked and len(asked) < 8_000
    assert "A: GOOD" in question.messages[0].text() and question.model == "small" and not question.stream
    assert read_verdict("A: GOOD\nB: BAD", 2) == [True, False]
    assert read_verdict("b - good\n a=bad", 2) == [False, True]
    assert read_verdict("A: GOOD", 2) is None, "a verdict on every answer, or none is learned"
    assert read_verdict("I cannot tell.", 1) is None
