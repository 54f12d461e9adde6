"""Per-prompt predictions of whether a model's answer will be good, learned from outcomes.

A prompt becomes a sparse vector of hashed word features (unigrams and bigrams of its user text,
the head and tail of a long one: cheap on the CPU, no network, the same on every instance); each
model has an online logistic regression over those features, trained with AdaGrad on every label
relaybox gets for it (an attempt's outcome, the cascade's verdict, a rating, a shadow comparison).
Pure state and arithmetic: the router actor owns the instances and feeds them.

Bounded: the priors are two tables of 2**FEATURE_BITS slots (hash collisions share one), read by
every model; a model's own learning is at most `CorrectedModel.max_slots` slots on top; and models
are kept per statistics key, which the catalog bounds. Memory does not grow with traffic.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
import zlib
from array import array
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path

import attrs
from relaybox.protocol.routing.catalog import TIERS

FEATURE_BITS = 18
_MASK = (1 << FEATURE_BITS) - 1
# Of a long prompt, its head and tail: where the task is usually stated, and a bound on the time.
HEAD_CHARS = 2000
TAIL_CHARS = 2000
_WORD = re.compile(r"[a-z0-9]+")

Features = tuple[tuple[int, float], ...]  # (slot, value), L2-normalised


def features(user_texts: Sequence[str]) -> Features:
    """The hashed features of a prompt's user text (the messages' texts, oldest first)."""
    text = "\n".join(user_texts)
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]
    # Whole lists through C-level map/Counter rather than a Python loop per word: a long prompt
    # has about 800 words in its head and tail, and this runs for every request routed `auto`.
    hashes = list(map(zlib.crc32, map(str.encode, _WORD.findall(text.lower()))))
    if not hashes:
        return ()
    counts = Counter([word_hash & _MASK for word_hash in hashes])
    # The bigram, from its words' hashes (no string built per pair).
    counts.update(
        [((first * _PAIR_MULTIPLIER) ^ second) & _MASK for first, second in itertools.pairwise(hashes)]
    )
    slots = sorted(counts)
    values = list(map(math.log1p, map(counts.__getitem__, slots)))
    norm = math.sqrt(sum(map(operator.mul, values, values)))
    return tuple(zip(slots, [value / norm for value in values], strict=True))


_PAIR_MULTIPLIER = 0x9E3779B1


@attrs.define
class GoodAnswerModel:
    """p(good answer | prompt) for one model: online logistic regression with AdaGrad steps."""

    learning_rate: float = 0.1
    weights: array = attrs.field(factory=lambda: array("d", bytes(8 << FEATURE_BITS)))
    squares: array = attrs.field(factory=lambda: array("d", bytes(8 << FEATURE_BITS)))
    bias: float = 0.0
    bias_square: float = 0.0
    seen: int = 0

    def copy(self) -> GoodAnswerModel:
        return attrs.evolve(self, weights=array("d", self.weights), squares=array("d", self.squares))

    def predict(self, x: Features) -> float:
        z = self.bias + sum(self.weights[slot] * value for slot, value in x)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def learn(self, x: Features, good: float, weight: float = 1.0) -> None:
        """One label: `good` in 0..1 (a judge's or scorer's verdict), `weight` how much it counts."""
        gradient = (self.predict(x) - good) * weight
        self.bias_square += gradient * gradient
        self.bias -= self.learning_rate * gradient / math.sqrt(self.bias_square + 1e-9)
        for slot, value in x:
            g = gradient * value
            self.squares[slot] += g * g
            self.weights[slot] -= self.learning_rate * g / math.sqrt(self.squares[slot] + 1e-9)
        self.seen += 1

    def to_bytes(self) -> bytes:
        """The weights compactly (the slots in use, as 32-bit floats; compressed): for a prior
        shipped in the package, or state kept in storage."""
        used = [slot for slot, weight in enumerate(self.weights) if weight]
        header = array("d", (self.bias, float(self.seen), float(len(used))))
        slots = array("I", used)
        weights = array("f", (self.weights[slot] for slot in used))
        squares = array("f", (self.squares[slot] for slot in used))
        return zlib.compress(header.tobytes() + slots.tobytes() + weights.tobytes() + squares.tobytes(), 9)

    @classmethod
    def from_bytes(cls, data: bytes, learning_rate: float = 0.1) -> GoodAnswerModel:
        raw = zlib.decompress(data)
        header = array("d", raw[:24])
        bias, seen, count = header[0], int(header[1]), int(header[2])
        offset = 24
        slots = array("I", raw[offset : offset + 4 * count])
        offset += 4 * count
        weights = array("f", raw[offset : offset + 4 * count])
        squares = array("f", raw[offset + 4 * count : offset + 8 * count])
        model = cls(learning_rate=learning_rate, bias=bias, seen=seen)
        for slot, weight, square in zip(slots, weights, squares, strict=True):
            model.weights[slot] = weight
            model.squares[slot] = square
        return model


@attrs.define
class CorrectedModel:
    """One model's own learning on top of a shared prior, which it reads and never writes: its
    corrections live in a table of at most `max_slots` slots (the least recently touched dropped
    first), so a catalog of many models costs little beyond the one prior. Until that bound is
    reached it predicts exactly what a copy of the prior trained on the same labels would."""

    prior: GoodAnswerModel
    max_slots: int = 20_000  # about 2.5 MB at most (a slot: its key and two floats in a dict)
    corrections: OrderedDict[int, tuple[float, float]] = attrs.field(factory=OrderedDict)  # (weight, squares)
    bias: float = attrs.field(default=attrs.Factory(lambda self: self.prior.bias, takes_self=True))
    bias_square: float = attrs.field(
        default=attrs.Factory(lambda self: self.prior.bias_square, takes_self=True)
    )
    seen: int = 0

    def predict(self, x: Features) -> float:
        weights, corrections = self.prior.weights, self.corrections
        z = self.bias
        for slot, value in x:
            corrected = corrections.get(slot)
            z += (weights[slot] if corrected is None else corrected[0]) * value
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def learn(self, x: Features, good: float, weight: float = 1.0) -> None:
        rate = self.prior.learning_rate
        gradient = (self.predict(x) - good) * weight
        self.bias_square += gradient * gradient
        self.bias -= rate * gradient / math.sqrt(self.bias_square + 1e-9)
        for slot, value in x:
            g = gradient * value
            w, square = self.corrections.pop(slot, None) or (
                self.prior.weights[slot],
                self.prior.squares[slot],
            )
            square += g * g
            self.corrections[slot] = (w - rate * g / math.sqrt(square + 1e-9), square)
        while len(self.corrections) > self.max_slots:
            self.corrections.popitem(last=False)
        self.seen += 1


CHEAP_PRIOR = Path(__file__).with_name("cheap_model_prior.bin")
STRONG_PRIOR = Path(__file__).with_name("strong_model_prior.bin")


def cheap_model_prior() -> GoodAnswerModel:
    """What relaybox knows on day one of whether a cheap model answers a prompt well: trained on
    public recorded outcomes (see `bench/routing_prior.py`), then taken over by live labels."""
    return GoodAnswerModel.from_bytes(CHEAP_PRIOR.read_bytes())


def strong_model_prior() -> GoodAnswerModel:
    """The same for a strong model (what the cheap one is compared against)."""
    return GoodAnswerModel.from_bytes(STRONG_PRIOR.read_bytes())


def good_enough(p_good: float, p_strongest: float, *, target: float, gap: float) -> bool:
    """Whether a cheaper model will do for a prompt: its predicted chance of a good answer clears the
    target, or falls short of the strongest candidate's by no more than `gap` (the strong model
    would not do much better). The live router and the replay both decide by this."""
    return p_good >= target or p_strongest - p_good <= gap


@attrs.frozen
class Label:
    """One verdict on one model's answer to one prompt: what the learner is fed, and what storage
    shares with the other instances. `good` in 0..1; `source`: "scorer" (the answer's own score,
    the cascade's verdict), "judge" (a judge model's, alone or against a shadow answer) or
    "rating" (a user's)."""

    provider: str
    model: str
    tier: str | None
    features: Features
    good: float
    source: str
    weight: float = 1.0
    request_id: str | None = None


def features_to_bytes(x: Features) -> bytes:
    """A prompt's features compactly, for storage: slots as 32-bit integers, values as 32-bit
    floats (about 8 bytes a feature, compressed)."""
    slots = array("I", (slot for slot, _ in x))
    values = array("f", (value for _, value in x))
    return zlib.compress(slots.tobytes() + values.tobytes())


def features_from_bytes(data: bytes) -> Features:
    raw = zlib.decompress(data)
    half = len(raw) // 2
    slots, values = array("I", raw[:half]), array("f", raw[half:])
    return tuple(zip(slots, values, strict=True))


class QualityModels:
    """Every model's p(good answer | prompt), each a `CorrectedModel` over the prior of its tier:
    the cheapest tier starts from the cheap-model prior, the strongest from the strong-model prior,
    the one between from the strong prior with its bias halfway to the cheap one's (public outcome
    data has no middle model to learn it from). Kept per (provider, model) statistics key."""

    def __init__(self) -> None:
        self._priors: dict[str, GoodAnswerModel] = {}
        self._models: dict[tuple[str, str], CorrectedModel] = {}
        self.labels: dict[tuple[str, str], int] = {}

    def _prior(self, tier: str | None) -> GoodAnswerModel:
        tier = tier if tier in TIERS else TIERS[0]
        if tier not in self._priors:
            if tier == TIERS[0]:
                self._priors[tier] = cheap_model_prior()
            elif tier == TIERS[-1]:
                self._priors[tier] = strong_model_prior()
            else:
                between = strong_model_prior()
                between.bias = (between.bias + self._prior(TIERS[0]).bias) / 2
                self._priors[tier] = between
        return self._priors[tier]

    def model(self, key: tuple[str, str], tier: str | None) -> CorrectedModel:
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = CorrectedModel(self._prior(tier))
        return model

    def p_good(self, key: tuple[str, str], tier: str | None, x: Features) -> float:
        return self.model(key, tier).predict(x)

    def learn(self, key: tuple[str, str], label: Label) -> None:
        self.model(key, label.tier).learn(label.features, label.good, label.weight)
        self.labels[key] = self.labels.get(key, 0) + 1
