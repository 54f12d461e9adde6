"""The router actor: classifies each request, asks the pure route plan which models may serve it and
in what order (`protocol/routing/plan.py`), and walks that route.

It sends each attempt to a provider actor's mailbox and hears back once per attempt. A failed
attempt that the client has not seen goes to the next candidate (fallback); a poor non-streaming
answer climbs to a stronger one (the cascade); when none is left the client gets one error saying
what each candidate answered. A provider whose breaker is open, whose actor is down, or whose
mailbox is full is skipped at once, without waiting. Each outcome feeds the evidence; storage's copy
of it (shared by every instance) is reloaded at start and every `refresh_seconds`
(`actors/evidence_refresh.py`). An attempt of a request the learned router chose also teaches its
quality models (`actors/learned_routing.py`), now or after a judge's verdict.
"""

from __future__ import annotations

import contextlib
import functools
import random
from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.evidence_refresh import EvidenceSource, refresh_evidence
from relaybox.actors.learned_routing import LearnedRouting
from relaybox.actors.llm_classification import classify_then_dispatch
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.actors.messages import (
    AttemptEnded,
    Compared,
    Dispatch,
    EvidenceLoaded,
    Job,
    Learned,
    LearningMessage,
    OverheadObserved,
    Rated,
    RouterMessage,
    SetProviderEnabled,
)
from relaybox.actors.provider import ProviderActor
from relaybox.actors.router_statistics import Outcomes, OverheadHistogram, RouterStatistics
from relaybox.protocol.chat import ChatRequest, EmbeddingRequest, ImageRequest, ModelRequest
from relaybox.protocol.errors import (
    AttemptFailure,
    FailureKind,
    RelayError,
    final_error,
    router_down,
    worth_retrying_elsewhere,
)
from relaybox.protocol.events import Answering, Event, Failed
from relaybox.protocol.routing.cascade import escalation_threshold, first_stronger
from relaybox.protocol.routing.catalog import Candidate, Catalog, Route
from relaybox.protocol.routing.classifier import Classification, classify
from relaybox.protocol.routing.evidence import Evidence, attempt_observation
from relaybox.protocol.routing.fit import missing_capability, trimmed_to_fit
from relaybox.protocol.routing.plan import (
    RoutingContext,
    RoutingSettings,
    finish_route,
    plan_route,
    routable_catalog,
)
from relaybox.protocol.routing.progress import DispatchState

# Outcomes this recent may not be in storage yet when it is read (the recorder writes in batches).
RECORDING_LAG = 2.0


class PressureGauge(Protocol):
    pressure: float | None


@attrs.frozen(eq=False)
class _Request:
    """What the router needs to keep walking one request's route."""

    request: ModelRequest
    reply: trio.MemorySendChannel[Event]
    cancel: CancelToken


class RouterActor:
    kind = "router"
    name = "router"

    def __init__(
        self,
        catalog: Catalog,
        providers: dict[str, ProviderActor],
        *,
        settings: RoutingSettings | None = None,
        storage: EvidenceSource | None = None,
        budget: PressureGauge | None = None,
        learning: Mailbox[LearningMessage] | None = None,
        mailbox: int = 1024,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.settings = settings or RoutingSettings()
        self.storage = storage
        self.budget = budget
        self.mailbox: Mailbox[RouterMessage] = Mailbox(mailbox)
        self._outcomes = Outcomes()
        self._overhead = OverheadHistogram()
        # Configuration, not working state (it survives restarts): providers switched off through
        # the settings API, and priorities set there.
        self._disabled: set[str] = set()
        self._priorities: dict[str, int] = {}
        # Knowledge, not working state: it survives a restart of the actor.
        self._evidence = Evidence(self.settings.evidence)
        self._evidence_loaded_at: float | None = None
        self._rng = random.Random(self.settings.seed)
        self._learned = LearnedRouting(catalog, self.settings.learned, self._rng, learning)
        self._routable = routable_catalog(catalog, self._disabled, self.settings.mode)
        self._current: RouterMessage | None = None
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            mailbox=self.mailbox.statistics(),
            outcomes=self._outcomes.statistics(),
            mode=self.settings.mode,
            evidence_loaded_at=self._evidence_loaded_at,
            evidence=self._evidence.snapshot(trio.current_time()),
            disabled=tuple(sorted(self._disabled)),
            overhead=self._overhead.statistics(),
            learned=self._learned.statistics(),
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._outcomes = Outcomes()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.storage is not None:
                refresh = functools.partial(
                    refresh_evidence,
                    window_days=self.settings.evidence.window_days,
                    every=self.settings.refresh_seconds,
                )
                nursery.start_soon(refresh, self.storage, self.mailbox)
            task_status.started()
            async for message in self.mailbox.receive:
                self._current = message
                self._handle(message)
                self._current = None
            nursery.cancel_scope.cancel()

    def _handle(self, message: RouterMessage) -> None:
        if isinstance(message, Dispatch):
            self._dispatch(message)
        elif isinstance(message, AttemptEnded):
            self._attempt_ended(message)
        elif isinstance(message, OverheadObserved):
            self._overhead.observe(message.milliseconds)
        elif isinstance(message, Learned | Rated | Compared):
            self._learned.receive(message)
        elif isinstance(message, SetProviderEnabled):
            (self._disabled.discard if message.enabled else self._disabled.add)(message.provider)
            if message.priority is not None:
                self._priorities[message.provider] = message.priority
            self._routable = routable_catalog(self.catalog, self._disabled, self.settings.mode)
        elif isinstance(message, EvidenceLoaded):
            now = trio.current_time()
            # Under the keys live outcomes count under: names clients made up collapse into one.
            rows = [attrs.evolve(r, model=self.catalog.statistics_key(r.candidate)[1]) for r in message.rows]
            self._evidence.load(
                rows, wall_clock=message.at, now=now, keep_since=message.started - RECORDING_LAG
            )
            self._evidence_loaded_at = message.at

    async def on_crash(self, error: BaseException) -> None:
        """The message being handled when the router crashed would otherwise never be answered."""
        message, self._current = self._current, None
        if not isinstance(message, Dispatch | AttemptEnded):
            return
        reply = message.reply if isinstance(message, Dispatch) else message.job.reply
        _reply_failed(
            reply,
            RelayError(
                503,
                f"relaybox's router failed on this request ({type(error).__name__}); retry",
                "service_unavailable",
                code="router_crashed",
                retry_after=1,
            ),
        )

    def on_give_up(self) -> None:
        """Nobody will read the mailbox again: answer everything in it instead of leaving it waiting."""
        error = router_down()
        for message in self.mailbox.drain():
            if isinstance(message, Dispatch):
                _reply_failed(message.reply, error)
            elif isinstance(message, AttemptEnded) and not message.answered:
                _reply_failed(message.job.reply, error)

    # --- choosing the route -----------------------------------------------------------

    def _context(self, request: ModelRequest) -> RoutingContext:
        return RoutingContext(
            catalog=self.catalog,
            routable=self._routable,
            settings=self.settings,
            evidence=self._evidence,
            now=trio.current_time(),
            rng=self._rng,
            pressure=self._pressure(),
            priorities=self._priorities,
            quality=self._learned.models,
            prompt=self._learned.prompt(request),
            promise=self._learned.promise,
        )

    def _pressure(self) -> float:
        return (self.budget.pressure or 0.0) if self.budget is not None else 0.0

    def _dispatch(self, dispatch: Dispatch) -> None:
        request = dispatch.request
        context = self._context(request)
        classification: Classification | None = None
        try:
            if not isinstance(request, ChatRequest):
                route, smart = _media_route(self.catalog, request), False
            else:
                classification = dispatch.classification or classify(request, self.settings.thresholds)
                route, smart = plan_route(request.model, dispatch.route_header, classification, context)
                if smart and self.settings.llm_classifier and dispatch.classification is None:
                    assert self._nursery is not None
                    ask = (self.mailbox, dispatch, classification, context)
                    self._nursery.start_soon(classify_then_dispatch, *ask)
                    return
            category = classification.category if classification else _category_of(request)
            route, ab = finish_route(route, smart, category, context)
        except RelayError as error:
            _reply_failed(dispatch.reply, error)
            return
        state = dispatch.starting_state(
            route, category, classification.complexity if classification else 0, ab
        )
        if context.prompt is not None:  # what the learned router read of the prompt, to learn from
            state = attrs.evolve(state, features=context.prompt.value, promise_score=context.prompt.score)
        self._try_next(_Request(dispatch.request, dispatch.reply, dispatch.cancel), state)

    # --- walking the route -------------------------------------------------------------

    def _attempt_ended(self, ended: AttemptEnded) -> None:
        job = ended.job
        key = self.catalog.statistics_key(job.candidate)
        self._outcomes.count(ended, key)
        observation = attempt_observation(
            job.state.category, *key, trio.current_time(), outcome=ended.outcome, score=ended.score
        )
        if observation is not None and job.state.purpose is None:  # a connection test is not evidence
            self._evidence.observe(observation)
        self._learned.attempt_ended(ended, self._pressure())
        if ended.failure is None:
            return
        if ended.answered or job.cancel.cancelled:
            return  # the provider already ended the client's stream, or nobody is listening
        if not worth_retrying_elsewhere(ended.failure):
            _reply_failed(job.reply, final_error([*job.state.failures, ended.failure]))
            return
        state = job.state.after_failure(ended.failure, ended.upstream_ms, ended.held_answer)
        if ended.failure.kind is FailureKind.POOR_ANSWER:
            climb = first_stronger(self.catalog, state.route.candidates, job.state.next_index - 1)
            state = attrs.evolve(state, next_index=climb)
        self._try_next(_Request(job.request, job.reply, job.cancel), state)

    def _try_next(self, request: _Request, state: DispatchState) -> None:
        """The next candidate that can take it; at the end, the held answer, or what each said."""
        now = trio.current_time()
        failures = list(state.failures)
        for index in range(state.next_index, len(state.route.candidates)):
            refused = self._offer(index, request, state, tuple(failures), now)
            if refused is None:
                return
            failures.append(refused)
        if state.held_answer:
            _send_held_answer(request.reply, state.held_answer, failures)
            return
        _reply_failed(request.reply, final_error(failures))

    def _offer(
        self,
        index: int,
        request: _Request,
        state: DispatchState,
        failures: tuple[AttemptFailure, ...],
        now: float,
    ) -> AttemptFailure | None:
        """Send the attempt to the route's candidate `index`, or say why it cannot take it."""
        candidate = state.route.candidates[index]
        provider = self.providers.get(candidate.provider)
        if provider is None or candidate.provider in self._disabled:
            return _refused(candidate, FailureKind.UNAVAILABLE, "provider is not enabled")
        attempt_request, attempt_state, counted = request.request, state, None
        trimmed = trimmed_to_fit(self.catalog, candidate, request.request, state)
        if trimmed is not None:
            attempt_request, attempt_state, counted = trimmed
        missing = missing_capability(self.catalog, candidate, attempt_request, counted)
        if missing is not None:
            return _refused(candidate, FailureKind.UNSUPPORTED, missing)
        if not provider.accepting(now):
            why = f"provider is {provider.health(now).value}"
            return _refused(candidate, FailureKind.UNAVAILABLE, why, provider.retry_after(now))
        next_state = attrs.evolve(
            attempt_state, next_index=index + 1, attempts=state.attempts + 1, failures=failures
        )
        escalate_below = escalation_threshold(
            self.settings.cascade_below,
            self.catalog,
            request.request,
            state.route.candidates,
            index,
            self._available,
        )
        job = Job(
            attempt_request,
            candidate,
            request.reply,
            request.cancel,
            next_state,
            self.mailbox,
            escalate_below,
        )
        try:
            provider.mailbox.tell(job)
            provider.yield_to_clients()
        except MailboxFull:
            return _refused(candidate, FailureKind.SATURATED, FULL, provider.when_a_place_frees())
        self._evidence.dispatched(state.category, *self.catalog.statistics_key(candidate), now)
        return None

    def _available(self, candidate: Candidate) -> bool:
        """Whether a candidate could take work now (the cascade only climbs to one that can)."""
        provider = self.providers.get(candidate.provider)
        return (
            candidate.provider not in self._disabled
            and provider is not None
            and provider.accepting(trio.current_time())
        )


FULL = "all slots busy and the queue is full"


def _refused(
    candidate: Candidate, kind: FailureKind, why: str, retry_after: float | None = None
) -> AttemptFailure:
    return AttemptFailure(candidate.provider, candidate.model, kind, why, retry_after=retry_after)


def _send_held_answer(
    reply: trio.MemorySendChannel[Event], held: tuple[Event, ...], failures: list[AttemptFailure]
) -> None:
    """The cascade's held answer after all: every stronger candidate failed. A few events on a
    channel nothing was sent on yet, so they fit; closed means the client has gone."""
    first, *rest = held
    if isinstance(first, Answering):
        tried = ", ".join(
            f"{f.provider}/{f.model}: {f.kind.value}"
            for f in failures
            if f.kind is not FailureKind.POOR_ANSWER
        )
        first = attrs.evolve(first, reason=f"{first.reason}; kept: no stronger model answered ({tried})")
    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        for event in (first, *rest):
            reply.send_nowait(event)


def _reply_failed(reply: trio.MemorySendChannel[Event], error: RelayError) -> None:
    # Nothing was sent on this channel before (no answer began), so it cannot be full;
    # closed means the client has gone.
    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        reply.send_nowait(Failed(error))


def _media_route(catalog: Catalog, request: ImageRequest | EmbeddingRequest) -> Route:
    """Images and embeddings go to the models that make them, by name or in turn, never smart-routed."""
    if isinstance(request, ImageRequest):
        return catalog.resolve_image(request.model or None)
    return catalog.resolve_embedding(request.model or None)


def _category_of(request: ModelRequest) -> str:
    """The log's category of a request that is not a chat (which the classifier does not see)."""
    return "embedding" if isinstance(request, EmbeddingRequest) else "image"
