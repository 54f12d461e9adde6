"""The learning actor: labels the learned router makes for itself, and labels shared between the
instances of relaybox that use one database.

A `Compare` from the router runs in the background, after the client already has its answer:
for a shadow comparison another model is asked the same (a non-streaming attempt through its
provider actor, so its slots, breaker, budget and record apply, with status `shadow`), then the
judge model grades the answers (status `judge`), presented in a random order so its verdicts
carry no bias for a position. The verdicts go to the router as labels, and to storage.

Storage holds the newest `LABELS_KEPT` labels and `COMPARISONS_KEPT` blind comparisons of every
instance (`shared_learning.py`). At start this actor hands the router all of them (so a restarted
or new instance knows what the others learned, and keeps the promise's evidence); then every
`refresh_seconds` the ones other instances wrote since. Nothing here ever delays a request: the
router's messages are dropped when this actor is busy, and a slow database delays only sharing.
"""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import Mailbox, MailboxFull, MailboxStatistics
from relaybox.actors.messages import (
    AttemptEnded,
    Compare,
    Compared,
    Job,
    Labelled,
    Learned,
    LearningMessage,
    RouterMessage,
)
from relaybox.actors.provider import ProviderActor
from relaybox.actors.shared_learning import Shelf
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.events import ContentDelta, Event, Failed, Finished
from relaybox.protocol.routing.catalog import Candidate, Catalog, Route
from relaybox.protocol.routing.judging import FollowUp, judge_request, question_of, read_verdict
from relaybox.protocol.routing.learned import Label
from relaybox.protocol.routing.promise import Comparison

log = logging.getLogger("relaybox.learning")

LABELS_KEPT = 10_000  # storage keeps this many of the newest labels, of every instance
# And this many comparisons: a few times the promise's window, for the dashboard's days.
COMPARISONS_KEPT = 20_000
UNSAVED_LIMIT = 2_000  # labels or comparisons waiting for the database; past this the oldest are lost


class LearningStore(Protocol):
    async def add_routing_labels(
        self, labels: list[Label], *, instance: str, now: float, keep: int
    ) -> None: ...

    async def routing_labels(self, *, after_id: int, limit: int) -> list[tuple[int, str, Label]]: ...

    async def add_routing_comparisons(
        self, comparisons: list[Comparison], *, instance: str, now: float, keep: int
    ) -> None: ...

    async def routing_comparisons(
        self, *, after_id: int, limit: int
    ) -> list[tuple[int, str, Comparison]]: ...


def _comparison(compare: Compare, answers: list[tuple[Candidate, str]], goods: list[bool]) -> Comparison:
    """The verdicts on the route's two ends, whichever order the judge saw them in."""
    served_good = next(good for (c, _), good in zip(answers, goods, strict=True) if c == compare.served)
    other_good = next(good for (c, _), good in zip(answers, goods, strict=True) if c != compare.served)
    strong_good, cheap_good = (
        (served_good, other_good) if compare.served_strong else (other_good, served_good)
    )
    assert compare.score is not None and compare.other is not None  # a PAIR has both
    served, other = (f"{c.provider}/{c.model}" for c in (compare.served, compare.other))
    strong, cheap = (served, other) if compare.served_strong else (other, served)
    return Comparison(
        compare.score,
        compare.served_strong,
        cheap_good,
        strong_good,
        cheap,
        strong,
        compare.state.request_id,
    )


class _EndsTheReply:
    """Where this actor's own attempts report their end, which is the last word on their reply
    channel: no router stands between (it would try the next candidate, or tell the client), so an
    attempt that failed before answering would otherwise leave `_ask` waiting out its timeout,
    holding one of the few places for comparisons meanwhile."""

    async def send(self, message: AttemptEnded) -> None:
        message.job.reply.close()


@attrs.frozen
class LearningStatistics:
    mailbox: MailboxStatistics
    instance: str
    comparisons: dict[str, int]  # per kind: started
    running: int  # comparisons under way
    busy_dropped: int  # comparisons not started: every slot was taken
    shadow_failed: int
    judge_failed: int  # no verdict: the judge's call failed, or its answer could not be read
    verdicts: dict[str, dict[str, int]]  # per "provider/model": {"good": n, "bad": n}
    labels_saved: int
    labels_loaded: int  # other instances' labels handed to the router
    comparisons_saved: int
    comparisons_loaded: int  # other instances' (or earlier runs') comparisons handed to the router
    storage_errors: int


class LearningActor:
    kind = "learning"
    name = "learning"

    def __init__(
        self,
        catalog: Catalog,
        providers: dict[str, ProviderActor],
        storage: LearningStore | None = None,
        *,
        router: Mailbox[RouterMessage] | None = None,
        share_labels: bool = True,
        refresh_seconds: float = 60.0,
        concurrency: int = 4,
        answer_timeout: float = 300.0,
        mailbox: int = 64,
        seed: int | None = None,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.router = router
        self.refresh_seconds = refresh_seconds
        self.concurrency = concurrency
        self.answer_timeout = answer_timeout
        self.mailbox: Mailbox[LearningMessage] = Mailbox(mailbox)
        self.instance = uuid.uuid4().hex
        self._rng = random.Random(seed)
        self._running = 0
        self._comparisons: dict[str, int] = {}
        self._busy_dropped = self._shadow_failed = self._judge_failed = 0
        self._verdicts: dict[str, dict[str, int]] = {}
        self.labels: Shelf[Label] | None = None
        self.compared: Shelf[Comparison] | None = None
        if storage is not None:
            labels, self.compared = self._shelves(storage)
            self.labels = labels if share_labels else None

    def statistics(self) -> LearningStatistics:
        return LearningStatistics(
            mailbox=self.mailbox.statistics(),
            instance=self.instance,
            comparisons=dict(self._comparisons),
            running=self._running,
            busy_dropped=self._busy_dropped,
            shadow_failed=self._shadow_failed,
            judge_failed=self._judge_failed,
            verdicts={k: dict(v) for k, v in sorted(self._verdicts.items())},
            labels_saved=0 if self.labels is None else self.labels.saved,
            labels_loaded=0 if self.labels is None else self.labels.loaded,
            comparisons_saved=0 if self.compared is None else self.compared.saved,
            comparisons_loaded=0 if self.compared is None else self.compared.loaded,
            storage_errors=sum(shelf.storage_errors for shelf in (self.labels, self.compared) if shelf),
        )

    def _shelves(self, storage: LearningStore) -> tuple[Shelf[Label], Shelf[Comparison]]:
        async def save_labels(labels: list[Label], instance: str, now: float) -> None:
            await storage.add_routing_labels(labels, instance=instance, now=now, keep=LABELS_KEPT)

        async def load_labels(after: int, limit: int) -> list[tuple[int, str, Label]]:
            return await storage.routing_labels(after_id=after, limit=limit)

        async def save_comparisons(comparisons: list[Comparison], instance: str, now: float) -> None:
            await storage.add_routing_comparisons(
                comparisons, instance=instance, now=now, keep=COMPARISONS_KEPT
            )

        async def load_comparisons(after: int, limit: int) -> list[tuple[int, str, Comparison]]:
            return await storage.routing_comparisons(after_id=after, limit=limit)

        async def learned(labels: tuple[Label, ...]) -> None:
            if self.router is not None:
                await self.router.send(Learned(labels))

        async def compared(comparisons: tuple[Comparison, ...]) -> None:
            if self.router is not None:
                await self.router.send(Compared(comparisons, stored=True))

        return (
            Shelf(
                "routing labels",
                self.instance,
                save_labels,
                load_labels,
                learned,
                unsaved_limit=UNSAVED_LIMIT,
            ),
            Shelf(
                "routing comparisons",
                self.instance,
                save_comparisons,
                load_comparisons,
                compared,
                unsaved_limit=UNSAVED_LIMIT,
            ),
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._running = 0
        async with trio.open_nursery() as nursery:
            for shelf in (self.labels, self.compared):
                if shelf is not None:
                    nursery.start_soon(shelf.save_forever)
                    nursery.start_soon(shelf.load_forever, self.refresh_seconds)
            task_status.started()
            async for message in self.mailbox.receive:
                if isinstance(message, Labelled):
                    if self.labels is not None:
                        self.labels.add(message.labels)
                elif self._running >= self.concurrency:
                    self._busy_dropped += 1
                else:
                    self._running += 1
                    self._comparisons[message.kind.value] = self._comparisons.get(message.kind.value, 0) + 1
                    nursery.start_soon(self._compare, message)
            nursery.cancel_scope.cancel()

    async def on_crash(self, error: BaseException) -> None:
        return None

    def on_give_up(self) -> None:
        log.error("the learning actor stopped: the learned router learns from scores alone")

    # --- one comparison ---------------------------------------------------------------

    async def _compare(self, compare: Compare) -> None:
        try:
            answers = [(compare.served, compare.answer)]
            if compare.other is not None:
                shadow = await self._ask(
                    compare, compare.other, "shadow", attrs.evolve(compare.request, stream=False)
                )
                if not shadow:
                    self._shadow_failed += 1
                    return
                answers.append((compare.other, shadow))
            self._rng.shuffle(answers)
            question = judge_request(
                question_of(compare.request), [a for _, a in answers], compare.judge.model
            )
            verdict = await self._ask(compare, compare.judge, "judge", question)
            goods = None if verdict is None else read_verdict(verdict, len(answers))
            if goods is None:
                self._judge_failed += 1
                log.info("%s: no verdict from the judge %s", compare.state.request_id, compare.judge.model)
                return
            labels = tuple(
                self._label(compare, candidate, good)
                for (candidate, _), good in zip(answers, goods, strict=True)
            )
            if compare.kind is FollowUp.PAIR:
                comparison = _comparison(compare, answers, goods)
                if self.compared is not None:
                    self.compared.add((comparison,))
                if self.router is not None:
                    with contextlib.suppress(MailboxFull):  # one comparison fewer biases nothing
                        self.router.tell(Compared((comparison,)))
            log.info(
                "%s: judged %s",
                compare.state.request_id,
                ", ".join(
                    f"{label.provider}/{label.model} {'good' if label.good else 'bad'}" for label in labels
                ),
            )
            for label in labels:
                counts = self._verdicts.setdefault(f"{label.provider}/{label.model}", {"good": 0, "bad": 0})
                counts["good" if label.good else "bad"] += 1
            if self.labels is not None:
                self.labels.add(labels)
            if self.router is not None:
                await self.router.send(Learned(labels))
        finally:
            self._running -= 1

    def _label(self, compare: Compare, candidate: Candidate, good: bool) -> Label:
        key = self.catalog.statistics_key(candidate)
        features = compare.state.features or ()
        tier = self.catalog.tier_of(candidate)
        return Label(*key, tier, features, float(good), "judge", 1.0, compare.state.request_id)

    async def _ask(
        self, compare: Compare, candidate: Candidate, purpose: str, request: ChatRequest
    ) -> str | None:
        """One attempt of relaybox's own at `candidate` (recorded with status `purpose`, linked to
        the client's request): its answer's text, or None when it could not be had."""
        provider = self.providers.get(candidate.provider)
        if provider is None or not provider.accepting(trio.current_time()):
            return None
        served = compare.served
        state = attrs.evolve(
            compare.state,
            route=Route((candidate,), f"{purpose} for {served.provider}/{served.model}'s answer"),
            next_index=1,
            attempts=0,  # not one of the request's attempts: not counted as a request either
            failures=(),
            failed_upstream_ms=0.0,
            held_answer=(),
            features=None,
            purpose=purpose,
            key_budget=None,  # relaybox's own spending: the global budgets count it, no key's
        )
        send, receive = trio.open_memory_channel[Event](64)
        cancel = CancelToken()
        job = Job(request, candidate, send, cancel, state, _EndsTheReply())
        if not provider.offer_background(job):  # spare capacity only: clients come first
            return None
        parts: list[str] = []
        with receive, trio.move_on_after(self.answer_timeout):
            async for event in receive:
                if isinstance(event, ContentDelta):
                    parts.append(event.text)
                elif isinstance(event, Finished):
                    return "".join(parts)
                elif isinstance(event, Failed):
                    return None
            return None  # the attempt ended without an answer
        cancel.cancel()
        return None
