"""Per-prompt predictions of whether a model's answer will be good, learned from outcomes.

A prompt becomes a sparse vector of hashed word features (unigrams and bigrams of its user text,
the head and tail of a long one: cheap on the CPU, no network, the same on every instance); each
model has an online logistic regression over those features, trained with AdaGrad on every label
relaybox gets for it (an attempt's outcome, the cascade's verdict, a rating, a shadow comparison).
Pure state and arithmetic: the router actor owns the instances and feeds them.

Bounded: a model's weights live in a table of 2**FEATURE_BITS slots (hash collisions share one),
so its memory does not grow with traffic.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import attrs

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
    counts: dict[int, float] = {}
    previous = None
    for word in _WORD.findall(text.lower()):
        word_hash = _hash(word)
        counts[word_hash & _MASK] = counts.get(word_hash & _MASK, 0.0) + 1.0
        if previous is not None:  # the bigram, from its words' hashes (no string built per pair)
            pair = ((previous * _PAIR_MULTIPLIER) ^ word_hash) & _MASK
            counts[pair] = counts.get(pair, 0.0) + 1.0
        previous = word_hash
    if not counts:
        return ()
    values = {slot: math.log1p(count) for slot, count in counts.items()}
    norm = math.sqrt(sum(v * v for v in values.values()))
    return tuple(sorted((slot, v / norm) for slot, v in values.items()))


_PAIR_MULTIPLIER = 0x9E3779B1


@functools.lru_cache(maxsize=1 << 16)  # most words recur; the cache is bounded whatever clients send
def _hash(word: str) -> int:
    return zlib.crc32(word.encode())


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


PRIOR = Path(__file__).with_name("cheap_model_prior.bin")


def cheap_model_prior() -> GoodAnswerModel:
    """What relaybox knows on day one of whether a cheap model answers a prompt well: trained on
    public recorded outcomes (see `bench/routing_prior.py`), then taken over by live labels."""
    return GoodAnswerModel.from_bytes(PRIOR.read_bytes())
