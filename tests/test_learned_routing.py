"""The learned per-prompt router's pure core: prompt features and the per-model good-answer model."""

from __future__ import annotations

import math
import random

import pytest
from relaybox.protocol.routing.learned import (
    FEATURE_BITS,
    CorrectedModel,
    GoodAnswerModel,
    cheap_model_prior,
    features,
)


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
