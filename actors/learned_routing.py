"""The router's part in learned routing: the per-model quality models it decides by, and what it
learns from each attempt the learned router chose.

An empty answer is a bad label at once (the scorer's other rules do not fit every task, so they
make none), and so is a rating of 1 or 2 (4 or 5 a good one) for one of the latest `RATED_LATER`
answers; an answer may be sent to the learning actor (`actors/learning.py`) for a judge's verdict,
alone or against a shadow answer. With a quality promise (`[routing] quality_kept`), a random share
of answers is compared blind with the route's other end instead, and nothing else moves it.
Labels from the judge, and other instances' labels from storage, come back as `Learned`.
Owned by the router actor (no locks); the models are knowledge, kept across its restarts.
"""

from __future__ import annotations

import contextlib
import random
from collections import OrderedDict

import attrs
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.actors.messages import (
    AttemptEnded,
    Compare,
    Compared,
    Labelled,
    Learned,
    LearningMessage,
    Rated,
)
from relaybox.protocol.chat import ChatRequest, ModelRequest
from relaybox.protocol.routing.catalog import TIERS, Candidate, Catalog
from relaybox.protocol.routing.judging import FollowUp, follow_up
from relaybox.protocol.routing.learned import Features, Label, QualityModels, features
from relaybox.protocol.routing.learned_route import LearnedPolicy, PromptFeatures
from relaybox.protocol.routing.promise import KeptEstimate, Promise
from relaybox.storage.records import group_id

RATED_LATER = 512  # answers whose rating can still become a label
# The only score the scorer gives that is right for every kind of task: an empty answer. Its other
# rules (no final number in a maths answer, a refusal's wording, an error message) misjudge a correct
# answer to a task they do not fit: they may trigger the cascade, but they make no label.
EMPTY_ANSWER_SCORE = 0


@attrs.frozen
class LearnedRoutingStatistics:
    enabled: bool
    quality_kept: KeptEstimate | None  # the quality promise's estimate; None: no promise made
    labels: dict[str, int]  # per "provider/model": labels learned (own, judged, other instances')
    follow_ups: dict[str, int]  # per kind: sent to the learning actor
    follow_ups_dropped: int  # the learning actor's mailbox was full


class LearnedRouting:
    def __init__(
        self,
        catalog: Catalog,
        policy: LearnedPolicy,
        rng: random.Random,
        learning: Mailbox[LearningMessage] | None = None,
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.rng = rng
        self.learning = learning
        self.models = QualityModels()
        self.promise = None if policy.quality_kept is None else Promise(policy.quality_kept)
        self._follow_ups: dict[str, int] = {}
        self._dropped = 0
        # The latest answers' prompts, for a rating that comes after (a few kB each).
        self._answered: OrderedDict[str, tuple[tuple[str, str], str | None, Features]] = OrderedDict()
        # The verdict each answer's ratings last taught (good or not): rating an answer again the
        # same way teaches nothing more, so a key rating its answer 300 times counts once.
        self._rated: dict[str, bool] = {}

    def statistics(self) -> LearnedRoutingStatistics:
        return LearnedRoutingStatistics(
            enabled=self.policy.enabled,
            quality_kept=None if self.promise is None else self.promise.estimate(),
            labels={f"{p}/{m}": n for (p, m), n in sorted(self.models.labels.items())},
            follow_ups=dict(self._follow_ups),
            follow_ups_dropped=self._dropped,
        )

    def prompt(self, request: ModelRequest) -> PromptFeatures | None:
        """The request's prompt, for the learned router to read if smart routing decides it."""
        if not self.policy.enabled or not isinstance(request, ChatRequest):
            return None
        return PromptFeatures(
            lambda: features([m.text() for m in request.messages if m.role == "user"]),
            lambda: "\n".join(m.text() for m in request.messages if m.role == "user"),
        )

    def receive(self, message: Learned | Rated | Compared) -> None:
        """Labels from the learning actor, a blind comparison for the quality promise, or a user's
        rating of a recent answer: 4 or 5 says it was good, 1 or 2 that it was not (3 says nothing)."""
        if isinstance(message, Compared):
            if self.promise is not None:
                for comparison in message.comparisons:
                    self.promise.add(comparison, stored=message.stored)
            return
        if isinstance(message, Learned):
            self.learn(message.labels)
            return
        answered = self._answered.get(message.group)
        if answered is None or message.rating == 3:
            return
        good = message.rating > 3
        if self._rated.get(message.group) is good:
            return
        self._rated[message.group] = good
        key, tier, x = answered
        label = Label(*key, tier, x, float(good), "rating", 1.0, message.group)
        self.models.learn(key, label)
        self._tell(Labelled((label,)))

    def learn(self, labels: tuple[Label, ...]) -> None:
        for label in labels:
            key = self.catalog.statistics_key(Candidate(label.provider, label.model))
            tier = self.catalog.tier_of(Candidate(*key)) or label.tier
            self.models.learn(key, attrs.evolve(label, tier=tier))

    def attempt_ended(self, ended: AttemptEnded, pressure: float) -> None:
        """What an attempt of a learned-routed request teaches, now or after a judge's verdict."""
        state, candidate = ended.job.state, ended.job.candidate
        if state.promise_score is not None and state.purpose is None:
            self._maybe_compare(ended, pressure)
            return
        if state.features is None or state.purpose is not None:
            return
        key = self.catalog.statistics_key(candidate)
        if ended.failure is None and ended.score == EMPTY_ANSWER_SCORE:
            label = Label(
                *key, self.catalog.tier_of(candidate), state.features, 0.0, "scorer", 1.0, state.request_id
            )
            self.models.learn(key, label)
            self._tell(Labelled((label,)))
            return
        request = ended.job.request
        if ended.failure is not None or not ended.answer or not isinstance(request, ChatRequest):
            return
        self._answered[group_id(state.request_id)] = (key, self.catalog.tier_of(candidate), state.features)
        while len(self._answered) > RATED_LATER:
            group, _ = self._answered.popitem(last=False)
            self._rated.pop(group, None)
        cheapest, strongest = self._ends(state.route.candidates)
        kind = follow_up(self.policy, self.rng, served_strongest=candidate == strongest, pressure=pressure)
        other = {FollowUp.SHADOW_DOWN: cheapest, FollowUp.SHADOW_UP: strongest}.get(kind) if kind else None
        if kind is None or other == candidate:
            return
        judge = self._judge(cheapest)
        if self._tell(Compare(kind, request, state, candidate, ended.answer, judge, other)):
            self._follow_ups[kind.value] = self._follow_ups.get(kind.value, 0) + 1

    def _maybe_compare(self, ended: AttemptEnded, pressure: float) -> None:
        """The quality promise's evidence: a share of its answers (`probe_rate`), drawn whatever
        they scored or whoever served them, is answered by the route's other end too and both
        are judged blind. Nothing about the answer itself decides whether it is drawn."""
        state, candidate, request = ended.job.state, ended.job.candidate, ended.job.request
        if ended.failure is not None or not ended.answer or not isinstance(request, ChatRequest):
            return
        if pressure >= self.policy.stop_at_pressure or self.rng.random() >= self.policy.probe_rate:
            return
        cheapest, strongest = self._ends(state.route.candidates)
        if candidate not in (cheapest, strongest) or cheapest == strongest:
            return  # a middle model served (a fallback): not a comparison of the ends
        other = strongest if candidate == cheapest else cheapest
        pair = FollowUp.PAIR
        compare = Compare(
            pair,
            request,
            state,
            candidate,
            ended.answer,
            self._judge(cheapest),
            other,
            score=state.promise_score,
            served_strong=candidate == strongest,
        )
        if self._tell(compare):
            self._follow_ups[pair.value] = self._follow_ups.get(pair.value, 0) + 1

    def _ends(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, Candidate]:
        """The route's cheapest candidate and its strongest (the cheapest of the highest tier)."""

        def rank(candidate: Candidate) -> int:
            tier = self.catalog.tier_of(candidate)
            return TIERS.index(tier) if tier in TIERS else 0

        def cost(candidate: Candidate) -> float:
            return self.catalog.costs.get((candidate.provider, candidate.model), float("inf"))

        cheapest = min(candidates, key=lambda c: (rank(c), cost(c)))
        strongest = min(candidates, key=lambda c: (-rank(c), cost(c)))
        return cheapest, strongest

    def _judge(self, cheapest: Candidate) -> Candidate:
        if self.policy.judge_model:
            provider, _, model = self.policy.judge_model.partition(":")
            return Candidate(provider, model)
        return cheapest

    def _tell(self, message: LearningMessage) -> bool:
        """Learning never waits, and never holds up a client: a full mailbox drops the message."""
        if self.learning is None:
            return False
        with contextlib.suppress(MailboxFull):
            self.learning.tell(message)
            return True
        self._dropped += 1
        return False
