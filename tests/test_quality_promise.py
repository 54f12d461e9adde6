"""The quality promise on scripted streams with a known truth: the estimate's interval holds the
quality actually kept, and the threshold keeps the promise, whatever the order (pure, no I/O)."""

from __future__ import annotations

import math
import random

import pytest
from relaybox.protocol.routing.promise import MIN_COMPARISONS, START_MARGIN, Comparison, Promise, kept_share

JUDGE_WRONG = 0.15
PROBE_RATE = 0.1


def truth(score: float) -> tuple[float, float]:
    """The cheap and the strong model's chances of a good answer at a score (longer prompts are
    harder for the cheap one): the strong model adds more the higher the score."""
    cheap = 0.85 - 0.5 * score
    return cheap, min(1.0, cheap + 0.05 + 0.35 * score)


def judged(good: bool, rng: random.Random) -> bool:
    return good if rng.random() >= JUDGE_WRONG else not good


def run(promise: Promise, seed: int, prompts: int = 8000) -> tuple[float, float]:
    """Route a stream through the promise; return the true share of the advantage kept, and the
    strong share. Probes are drawn at random and judged blind by a judge wrong 15% of the time."""
    rng = random.Random(seed)
    kept = total = strong_served = 0.0
    for _ in range(prompts):
        score = rng.random()
        cheap_p, strong_p = truth(score)
        strong = promise.serves_strong(score)
        total += strong_p - cheap_p
        kept += (strong_p - cheap_p) if strong else 0.0
        strong_served += strong
        if rng.random() < PROBE_RATE:
            cheap_good, strong_good = rng.random() < cheap_p, rng.random() < strong_p
            promise.add(Comparison(score, strong, judged(cheap_good, rng), judged(strong_good, rng)))
    return kept / total, strong_served / prompts


@pytest.mark.parametrize("promised", [0.5, 0.8])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_promise_is_kept_and_the_estimate_holds_the_truth(promised: float, seed: int) -> None:
    promise = Promise(promised)
    true_kept, strong_share = run(promise, seed)
    estimate = promise.estimate()
    assert true_kept >= promised - 0.05, (true_kept, strong_share)
    assert estimate.low is not None and estimate.high is not None
    assert estimate.low - 0.02 <= true_kept <= estimate.high + 0.02, (estimate, true_kept)
    assert estimate.comparisons > 700 and estimate.promised == promised
    # The signal helps: less than everything goes up (random routing would need the promise itself).
    assert strong_share < 1.0


def test_before_any_evidence_it_errs_toward_the_promise() -> None:
    promise = Promise(0.5)
    assert [promise.serves_strong(0.1) for _ in range(19)] == [True] * 19, "no scores yet: all up"
    assert promise.strong_share() == pytest.approx(0.5 + START_MARGIN)
    assert promise.estimate().estimate is None
    rng = random.Random(5)
    shares = [promise.serves_strong(rng.random()) for _ in range(2000)]
    assert sum(shares) / len(shares) == pytest.approx(0.5 + START_MARGIN, abs=0.05)


def test_comparisons_that_show_no_advantage_send_no_less_up() -> None:
    """Noise alone (both models equal) is no evidence that the cheap model will do."""
    promise = Promise(0.5)
    rng = random.Random(6)
    for _ in range(MIN_COMPARISONS * 5):
        good = rng.random() < 0.7
        promise.add(Comparison(rng.random(), False, good, good))
    assert promise.strong_share() == pytest.approx(0.5 + START_MARGIN)


def test_the_ratio_and_its_error() -> None:
    assert kept_share([1, 1, 0, -1], [True, False, True, True]) == (0.0, pytest.approx(math.sqrt(2) / 1))
    share, error = kept_share([1, 1, 1, 0], [True, True, False, False])
    assert share == pytest.approx(2 / 3) and error > 0
    assert kept_share([0, -1, 0], [True, True, True]) is None
