"""The router actor: decides which models may serve a request, in order, and walks them.

Every chat request is classified (category, complexity, tier). The model name then picks the
route: a named route or role (`route:NAME`, a bare route name, or the `x-relaybox-route` header),
`auto` or a name nothing serves (smart routing: the cheapest eligible model of the tier, from the
evidence), a tier or legacy OpenAI name (smart routing held to that tier), or an exact id, alias
or `provider:model`. The provider mode narrows the result, an A/B test may put its challenger
first, and the reason travels with the request to the `x-router-reason` header and the log.

It sends each attempt to a provider actor's mailbox and hears back once per attempt. A failed
attempt that the client has not seen goes to the next candidate (fallback); when none is left
the client gets one error saying what each candidate answered. A provider whose breaker is
open, whose actor is down, or whose mailbox is full is skipped at once, without waiting.
Each outcome feeds the evidence; storage's copy of it (shared by every instance) is reloaded
at start and every `refresh_seconds`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.actors.messages import AttemptEnded, AttemptResult, Dispatch, DispatchState, Job, RouterMessage
from relaybox.actors.provider import ProviderActor
from relaybox.protocol import tokens
from relaybox.protocol.chat import ChatRequest, ImageRequest
from relaybox.protocol.compression.pipeline import tokens_saved
from relaybox.protocol.compression.trimming import trim
from relaybox.protocol.errors import (
    AttemptFailure,
    FailureKind,
    RelayError,
    final_error,
    worth_retrying_elsewhere,
)
from relaybox.protocol.events import Answering, ContentDelta, Event, Failed, Finished
from relaybox.protocol.routing.catalog import (
    LEGACY_TIERS,
    SMART_ROUTE_NAMES,
    TIERS,
    Candidate,
    Catalog,
    Route,
    UnknownModel,
)
from relaybox.protocol.routing.classifier import Classification, TierThresholds, classify
from relaybox.protocol.routing.evidence import (
    DAY,
    NOT_ABOUT_QUALITY,
    Evidence,
    EvidencePolicy,
    Observation,
    RollupRow,
)
from relaybox.protocol.routing.llm_classifier import classification_request, read_classification
from relaybox.protocol.routing.routes import BUILTIN_ROUTES, NamedRoute, expand, requested_route, within_mode
from relaybox.protocol.routing.selection import ABTest, SelectionPolicy, apply_ab_test, smart_route

log = logging.getLogger("relaybox.router")

# An answer scored below this counts as a failure toward the consecutive-failure streak.
POOR_ANSWER_SCORE = 50
# Tokens left for the answer when trimming a prompt to a window and the request sets no max_tokens.
ANSWER_ROOM = 4096
# A slow database delays the next refresh, never routing.
REFRESH_TIMEOUT = 10.0
# Outcomes this recent may not be in storage yet when it is read (the recorder writes in batches).
RECORDING_LAG = 2.0


@attrs.frozen
class RoutingSettings:
    thresholds: TierThresholds = attrs.field(factory=TierThresholds)
    evidence: EvidencePolicy = attrs.field(factory=EvidencePolicy)
    selection: SelectionPolicy = attrs.field(factory=SelectionPolicy)
    routes: Mapping[str, NamedRoute] = attrs.field(factory=lambda: dict(BUILTIN_ROUTES))
    mode: str = "hybrid"  # "hybrid" | "local" | "cloud"
    unknown_models: str = "route"  # "route" (seed 001: smart routing) | "reject" (404)
    ab_tests: tuple[ABTest, ...] = ()
    refresh_seconds: float = 60.0
    # Cascade (non-streaming): an answer scoring below this escalates to a stronger candidate (0: off).
    cascade_below: int = 50
    # "provider:model" that requests naming no model are priced on for "cost saved" (None: the costliest paid one).
    savings_baseline: str | None = None
    llm_classifier: bool = False  # LLM_CLASSIFIER: the cheapest model classifies smart-routed requests
    classifier_timeout: float = 10.0
    seed: int | None = None  # for the Thompson draws and A/B splits; None: from the OS


class EvidenceSource(Protocol):
    async def routing_evidence(self, *, since: float) -> list[RollupRow]: ...


class PressureGauge(Protocol):
    pressure: float | None


@attrs.define
class OutcomeCounts:
    successes: int = 0
    failures: Counter[str] = attrs.field(factory=Counter)
    cancelled: int = 0
    served_as_fallback: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "successes": self.successes,
            "failures": dict(self.failures),
            "cancelled": self.cancelled,
            "served_as_fallback": self.served_as_fallback,
        }


@attrs.frozen(eq=False)
class _Request:
    """What the router needs to keep walking one request's route."""

    request: ChatRequest | ImageRequest
    reply: trio.MemorySendChannel[Event]
    cancel: CancelToken


@attrs.frozen
class SetProviderEnabled:
    """From the settings API: stop or resume sending work to a provider, and its priority."""

    provider: str
    enabled: bool
    priority: int | None = None


@attrs.frozen
class EvidenceLoaded:
    """From the router's own refresh task: storage's evidence, read at wall-clock `at`."""

    rows: tuple[RollupRow, ...]
    at: float
    started: float  # the router's clock when the read began


@attrs.frozen
class OverheadObserved:
    """From the HTTP layer, once per answered request: the milliseconds relaybox itself added."""

    milliseconds: float


# Histogram bucket bounds for relaybox's own overhead, in milliseconds.
OVERHEAD_BUCKETS_MS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0)


_Control = SetProviderEnabled | OverheadObserved | EvidenceLoaded


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
        mailbox: int = 1024,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.settings = settings or RoutingSettings()
        self.storage = storage
        self.budget = budget
        self.mailbox: Mailbox[RouterMessage | _Control] = Mailbox(mailbox)
        self.counts: dict[tuple[str, str], OutcomeCounts] = {}
        # Providers switched off through the settings API (configuration, not working state:
        # it survives restarts), and priorities set there.
        self.disabled: set[str] = set()
        self.priorities: dict[str, int] = {}
        # Knowledge, not working state: it survives a restart of the actor.
        self.evidence = Evidence(self.settings.evidence)
        self.evidence_loaded_at: float | None = None
        self.rng = random.Random(self.settings.seed)
        self._routable = self._routable_catalog()
        self._current: RouterMessage | _Control | None = None
        self._nursery: trio.Nursery | None = None
        self.overhead_buckets = [0] * (len(OVERHEAD_BUCKETS_MS) + 1)  # the last one is +Inf
        self.overhead_sum_ms = 0.0

    def statistics(self) -> dict[str, Any]:
        mailbox = self.mailbox.statistics()
        return {
            "mailbox": {"depth": mailbox.depth, "capacity": mailbox.capacity, "peak": mailbox.peak},
            "outcomes": {f"{p}/{m}": c.to_json() for (p, m), c in sorted(self.counts.items())},
            "mode": self.settings.mode,
            "evidence_loaded_at": self.evidence_loaded_at,
            "evidence": self.evidence.snapshot(trio.current_time()),
        }

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.counts = {}
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.storage is not None:
                nursery.start_soon(self._refresh_evidence, self.storage)
            task_status.started()
            async for message in self.mailbox.receive:
                self._current = message
                if isinstance(message, Dispatch):
                    self._dispatch(message)
                elif isinstance(message, AttemptEnded):
                    self._attempt_ended(message)
                else:
                    self._control(message)
                self._current = None
            nursery.cancel_scope.cancel()

    def _control(self, message: _Control) -> None:
        if isinstance(message, OverheadObserved):
            self._observe_overhead(message.milliseconds)
        elif isinstance(message, SetProviderEnabled):
            (self.disabled.discard if message.enabled else self.disabled.add)(message.provider)
            if message.priority is not None:
                self.priorities[message.provider] = message.priority
            self._routable = self._routable_catalog()
        else:
            self.evidence.load(
                message.rows,
                wall_clock=message.at,
                now=trio.current_time(),
                keep_since=message.started - RECORDING_LAG,
            )
            self.evidence_loaded_at = message.at

    async def _refresh_evidence(self, storage: EvidenceSource) -> None:
        """Read storage's evidence now and every `refresh_seconds`; a failed read keeps what is known."""
        while True:
            at, started = time.time(), trio.current_time()
            rows = None
            with trio.move_on_after(REFRESH_TIMEOUT):
                try:
                    rows = await storage.routing_evidence(since=at - self.settings.evidence.window_days * DAY)
                except Exception as error:  # storage down: routing goes on with what it has
                    log.warning("could not load routing evidence from storage: %s", error)
            if rows is not None:
                with contextlib.suppress(MailboxFull):
                    self.mailbox.tell(EvidenceLoaded(tuple(rows), at, started))
            await trio.sleep(self.settings.refresh_seconds)

    async def on_crash(self, error: BaseException) -> None:
        """The message being handled when the router crashed would otherwise never be answered."""
        message, self._current = self._current, None
        if message is None or not isinstance(message, Dispatch | AttemptEnded):
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
        error = RelayError(
            503,
            "relaybox's router is down; see /actors",
            "service_unavailable",
            code="router_down",
            retry_after=5,
        )
        for message in self.mailbox.drain():
            if isinstance(message, Dispatch):
                _reply_failed(message.reply, error)
            elif isinstance(message, AttemptEnded) and not message.answered:
                _reply_failed(message.job.reply, error)

    def _observe_overhead(self, milliseconds: float) -> None:
        self.overhead_sum_ms += milliseconds
        for i, bound in enumerate(OVERHEAD_BUCKETS_MS):
            if milliseconds <= bound:
                self.overhead_buckets[i] += 1
                return
        self.overhead_buckets[-1] += 1

    # --- routing ------------------------------------------------------------------

    def _dispatch(self, dispatch: Dispatch) -> None:
        request = dispatch.request
        classification: Classification | None = None
        ab: tuple[str, str] | None = None
        try:
            if isinstance(request, ImageRequest):
                route = self.catalog.resolve_image(request.model or None)
            else:
                classification = dispatch.classification or classify(request, self.settings.thresholds)
                route, smart = self._route(request.model, dispatch.route_header, classification)
                if smart and self.settings.llm_classifier and dispatch.classification is None:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._classify_by_model, dispatch, classification)
                    return
                if smart and self.settings.ab_tests:
                    route, ab = apply_ab_test(
                        route, self.settings.ab_tests, classification.category, self.rng
                    )
            route = within_mode(route, self.catalog, self.settings.mode)
        except RelayError as error:
            _reply_failed(dispatch.reply, error)
            return
        state = DispatchState(
            request_id=dispatch.request_id,
            route=route,
            client=dispatch.client,
            category=classification.category if classification else "image",
            complexity=classification.complexity if classification else 0,
            ab_test=ab[0] if ab else None,
            ab_variant=ab[1] if ab else None,
            compression_level=dispatch.compression_level,
            tokens_saved=dispatch.tokens_saved,
            key_budget=dispatch.key_budget,
        )
        self._try_next(_Request(dispatch.request, dispatch.reply, dispatch.cancel), state)

    async def _classify_by_model(self, dispatch: Dispatch, builtin: Classification) -> None:
        """Seed 001's LLM classifier: ask the cheapest economy model, then dispatch the request
        again with its verdict (the built-in one when it gives none in time)."""
        handed_on = False
        try:
            with trio.move_on_after(self.settings.classifier_timeout):
                classification = await self._ask_classifier(dispatch, builtin)
            if classification is None:
                classification = attrs.evolve(
                    builtin, signals=(*builtin.signals, "llm classifier: no verdict")
                )
            if not dispatch.cancel.cancelled:
                self.mailbox.tell(attrs.evolve(dispatch, classification=classification))
            handed_on = True
        except MailboxFull:
            pass
        except Exception:  # a bug here must not take the router down with every request in it
            log.exception("the LLM classifier step failed; the request was answered 503")
        finally:
            if not handed_on:  # the router is overloaded or stopping: answer rather than leave it waiting
                _reply_failed(
                    dispatch.reply,
                    RelayError(
                        503,
                        "relaybox could not route this request (router busy or stopping); retry",
                        "service_unavailable",
                        code="overloaded",
                        retry_after=1,
                    ),
                )

    async def _ask_classifier(self, dispatch: Dispatch, builtin: Classification) -> Classification | None:
        assert isinstance(dispatch.request, ChatRequest)
        try:
            cheapest = self._smart(attrs.evolve(builtin, tier="economy"), "classifier").candidates[0]
        except RelayError:  # nothing to ask (providers switched off meanwhile): the request will say so
            return None
        question = classification_request(dispatch.request, f"{cheapest.provider}:{cheapest.model}")
        send, receive = trio.open_memory_channel[Event](64)
        token = CancelToken()
        text: list[str] = []
        try:
            try:
                self.mailbox.tell(
                    Dispatch(f"chatcmpl-{uuid.uuid4().hex}", question, send, token, "relaybox-classifier")
                )
            except MailboxFull:
                return None
            async with receive:
                async for event in receive:
                    if isinstance(event, ContentDelta):
                        text.append(event.text)
                    elif isinstance(event, Finished):
                        return read_classification("".join(text), builtin, self.settings.thresholds)
                    elif isinstance(event, Failed):
                        return None
            return None
        finally:
            token.cancel()

    def _route(self, model: str, header: str | None, classification: Classification) -> tuple[Route, bool]:
        """The route for a model name, and whether smart routing chose its order."""
        named = requested_route(model, header, self.settings.routes)
        if named is not None:
            chain_is_smart = False

            def target(name: str) -> Route:
                nonlocal chain_is_smart
                route, smart = self._resolve(name, classification, unknown_to_smart=False)
                chain_is_smart |= smart
                return route

            return expand(named, target), chain_is_smart
        return self._resolve(model, classification)

    def _resolve(
        self, name: str, classification: Classification, *, unknown_to_smart: bool = True
    ) -> tuple[Route, bool]:
        if name in SMART_ROUTE_NAMES:
            return self._smart(classification, name), True
        tier = name if name in TIERS else LEGACY_TIERS.get(name)
        if tier is not None:
            label = f"tier {tier}" if name == tier else f"{name} -> tier {tier}"
            return self._smart(attrs.evolve(classification, tier=tier), label), True
        try:
            return self.catalog.resolve(name), False
        except UnknownModel:
            if not unknown_to_smart or self.settings.unknown_models == "reject":
                raise
            return self._smart(classification, f"unknown model {name!r} -> auto"), True

    def _smart(self, classification: Classification, label: str) -> Route:
        return smart_route(
            self._routable,
            classification,
            self.evidence,
            now=trio.current_time(),
            rng=self.rng,
            pressure=(self.budget.pressure or 0.0) if self.budget is not None else 0.0,
            priorities=self.priorities,
            policy=self.settings.selection,
            label=label,
        )

    def _routable_catalog(self) -> Catalog:
        """The catalog smart routing chooses from: enabled providers the mode allows."""
        mode = self.settings.mode
        return attrs.evolve(
            self.catalog,
            providers=tuple(
                p
                for p in self.catalog.providers
                if p.provider not in self.disabled and (mode == "hybrid" or p.local == (mode == "local"))
            ),
        )

    def _attempt_ended(self, ended: AttemptEnded) -> None:
        job = ended.job
        counts = self.counts.setdefault((job.candidate.provider, job.candidate.model), OutcomeCounts())
        self._learn(ended)
        if ended.result is AttemptResult.SUCCESS:
            counts.successes += 1
            if job.state.failures:
                counts.served_as_fallback += 1
            return
        if ended.result is AttemptResult.CANCELLED:
            counts.cancelled += 1
            return
        assert ended.failure is not None
        counts.failures[ended.failure.kind.value] += 1
        if ended.answered or job.cancel.cancelled:
            return  # the provider already ended the client's stream, or nobody is listening
        if not worth_retrying_elsewhere(ended.failure):
            _reply_failed(job.reply, final_error([*job.state.failures, ended.failure]))
            return
        state = attrs.evolve(
            job.state,
            failures=(*job.state.failures, ended.failure),
            failed_upstream_ms=job.state.failed_upstream_ms + ended.upstream_ms,
            held_answer=ended.held_answer or job.state.held_answer,
        )
        if ended.failure.kind is FailureKind.POOR_ANSWER:
            # The cascade climbs: a peer of the same tier is no better bet than the one that failed.
            state = attrs.evolve(
                state, next_index=self._first_stronger(state.route.candidates, job.state.next_index - 1)
            )
        self._try_next(_Request(job.request, job.reply, job.cancel), state)

    def _first_stronger(self, candidates: tuple[Candidate, ...], index: int) -> int:
        rank = _tier_rank(self.catalog.tier_of(candidates[index]))
        for later in range(index + 1, len(candidates)):
            if _tier_rank(self.catalog.tier_of(candidates[later])) > rank:
                return later
        return len(candidates)

    def _learn(self, ended: AttemptEnded) -> None:
        """Feed the outcome to the evidence: an answer by its heuristic score, a failure that
        says something about the model as a bad outcome; the rest (rate limits, cancellations,
        a full queue, the client's own bad request) says nothing about answers."""
        job = ended.job
        scored = ended.result is AttemptResult.SUCCESS or (
            ended.failure is not None and ended.failure.kind is FailureKind.POOR_ANSWER
        )
        if scored:
            score = 100 if ended.score is None else ended.score
            good, failed = score / 100, score < POOR_ANSWER_SCORE
        elif ended.failure is not None and ended.failure.kind.value not in NOT_ABOUT_QUALITY:
            good, failed = 0.0, True
        else:
            return
        self.evidence.observe(
            Observation(
                job.state.category,
                job.candidate.provider,
                job.candidate.model,
                good,
                trio.current_time(),
                failed=failed,
            )
        )

    def _try_next(self, request: _Request, state: DispatchState) -> None:
        now = trio.current_time()
        failures = list(state.failures)
        candidates = state.route.candidates
        for index in range(state.next_index, len(candidates)):
            candidate = candidates[index]
            provider = self.providers.get(candidate.provider)
            if provider is None or candidate.provider in self.disabled:
                failures.append(
                    AttemptFailure(
                        candidate.provider,
                        candidate.model,
                        FailureKind.UNAVAILABLE,
                        "provider is not enabled",
                    )
                )
                continue
            attempt_request, attempt_state = request.request, state
            trimmed = self._trimmed_to_fit(candidate, request.request, state)
            if trimmed is not None:
                attempt_request, attempt_state, _ = trimmed
            missing = self._missing_capability(
                candidate, attempt_request, None if trimmed is None else trimmed[2]
            )
            if missing is not None:
                failures.append(
                    AttemptFailure(candidate.provider, candidate.model, FailureKind.UNSUPPORTED, missing)
                )
                continue
            if not provider.accepting(now):
                failures.append(
                    AttemptFailure(
                        candidate.provider,
                        candidate.model,
                        FailureKind.UNAVAILABLE,
                        f"provider is {provider.health(now).value}",
                        retry_after=provider.retry_after(now),
                    )
                )
                continue
            next_state = attrs.evolve(
                attempt_state, next_index=index + 1, attempts=state.attempts + 1, failures=tuple(failures)
            )
            job = Job(
                attempt_request,
                candidate,
                request.reply,
                request.cancel,
                next_state,
                self.mailbox,
                escalate_below=self._escalate_below(request.request, candidates, index),
            )
            try:
                provider.mailbox.tell(job)
                self.evidence.dispatched(state.category, candidate.provider, candidate.model, now)
            except MailboxFull:
                failures.append(
                    AttemptFailure(
                        candidate.provider,
                        candidate.model,
                        FailureKind.SATURATED,
                        "all slots busy and the queue is full",
                        retry_after=1.0,
                    )
                )
                continue
            return
        if state.held_answer:
            _send_held_answer(request.reply, state.held_answer, failures)
            return
        _reply_failed(request.reply, final_error(failures))

    def _escalate_below(
        self, request: ChatRequest | ImageRequest, candidates: tuple[Candidate, ...], index: int
    ) -> int | None:
        """The cascade: a non-streaming answer is held until complete anyway, so a poor one can
        still give way to a stronger candidate further down the route (never to a peer)."""
        if not self.settings.cascade_below or request.stream or isinstance(request, ImageRequest):
            return None
        rank = _tier_rank(self.catalog.tier_of(candidates[index]))
        if rank < 0:
            return None
        now = trio.current_time()
        stronger_up = any(
            _tier_rank(self.catalog.tier_of(c)) > rank
            and c.provider not in self.disabled
            and (provider := self.providers.get(c.provider)) is not None
            and provider.accepting(now)
            for c in candidates[index + 1 :]
        )
        return self.settings.cascade_below if stronger_up else None

    def _trimmed_to_fit(
        self, candidate: Candidate, request: ChatRequest | ImageRequest, state: DispatchState
    ) -> tuple[ChatRequest, DispatchState, int] | None:
        """Compression's last stage, at level "aggressive": the oldest turns trimmed so the prompt
        fits this candidate's context window (with room for the answer), with the tokens it may
        now take at most; None when it fits as it is, or cannot be made to."""
        if state.compression_level != "aggressive" or isinstance(request, ImageRequest):
            return None
        models = self.catalog.provider(candidate.provider)
        entry = None if models is None else models.entry(candidate.model)
        if entry is None or entry.context_window is None:
            return None
        room = entry.context_window - (request.max_tokens or ANSWER_ROOM)
        if tokens.lower_bound(request) * 2 < room:  # certainly fits: no need to count
            return None
        messages = trim(request.messages, room, tokens.count_message)
        if messages == request.messages:
            return None
        saved = (state.tokens_saved or 0) + tokens_saved(request.messages, messages)
        return attrs.evolve(request, messages=messages), attrs.evolve(state, tokens_saved=saved), room

    def _missing_capability(
        self, candidate: Candidate, request: ChatRequest | ImageRequest, counted: int | None = None
    ) -> str | None:
        """Why this candidate cannot take the request at all, or None. `counted`: the prompt's
        tokens when they are known exactly (a trimmed prompt), else a cheap lower bound decides."""
        models = self.catalog.provider(candidate.provider)
        if models is None or isinstance(request, ImageRequest):
            return None
        if not models.vision and request.has_images():
            return "does not take images"
        entry = models.entry(candidate.model)
        if entry is not None and entry.context_window is not None:
            needed = tokens.lower_bound(request) if counted is None else counted
            if needed > entry.context_window:
                return (
                    f"the prompt needs at least {needed} tokens; the context window is {entry.context_window}"
                )
        return None


def _tier_rank(tier: str | None) -> int:
    return TIERS.index(tier) if tier in TIERS else -1


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
