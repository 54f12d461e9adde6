"""A provider actor: one upstream (an HTTP API or a CLI), its concurrency slots, health and breaker.

Jobs arrive in a bounded mailbox. The actor's loop takes a job, waits for a free slot (so a
busy provider's mailbox fills up, and a full mailbox tells the router to try elsewhere),
checks the circuit breaker, and runs the job in its own task. The job's events go straight
into the client's reply channel; the actor only steps in at the edges: `Answering` before
the first output, the terminal event after the last, and a report to the router either way.
"""

from __future__ import annotations

import contextlib
import enum
import math
import time
import uuid
from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from relaybox.actors.budget import BudgetActor, Reserve, Settle
from relaybox.actors.mailbox import Mailbox, MailboxFull, ask
from relaybox.actors.messages import AttemptEnded, AttemptResult, Job
from relaybox.actors.transports.base import Transport
from relaybox.protocol import tokens
from relaybox.protocol.chat import ImageRequest
from relaybox.protocol.errors import AttemptFailure, FailureKind, ProviderFailure, RelayError
from relaybox.protocol.events import (
    Answering,
    ContentDelta,
    Event,
    Failed,
    Finished,
    GeneratedImages,
    ToolCallDelta,
    TransportEvent,
    Usage,
)
from relaybox.protocol.routing.heuristics import score_answer
from relaybox.protocol.routing.pricing import Pricer
from relaybox.storage.records import AttemptRecord


class Health(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    NEEDS_LOGIN = "needs-login"


@attrs.frozen
class ProviderLimits:
    slots: int = 16
    mailbox: int = 32
    # Seconds without progress (no first token yet, or no new chunk) before an attempt is abandoned.
    idle_timeout: float = 120.0


# The idle timeout is exact to within this many seconds (see `_Forwarder._renew_idle_deadline`).
IDLE_RENEWAL_STEP = 1.0
# A client that reads nothing of its answer for this long is treated as gone.
CLIENT_STALL_LIMIT = 300.0


class ClientGone(Exception):
    """The client's reply channel is closed: nobody is listening any more."""


class _Forwarder:
    """Carries one attempt's events into the client's reply channel.

    Streaming: everything from the first content event on goes out as it comes, preceded by
    `Answering`; until then events are held, so a failure can still be retried invisibly.
    Non-streaming: everything is held until the upstream has finished, so any failure can be.
    """

    def __init__(self, job: Job, idle_timeout: float, pricer: Pricer | None = None) -> None:
        self.job = job
        self.pricer = pricer
        self.answered = False
        self.attempt_started = trio.current_time()
        self.idle_timeout = idle_timeout
        self.idle_scope = trio.CancelScope(deadline=self.attempt_started + idle_timeout)
        # What the attempt's record needs.
        self.usage: Usage | None = None
        self.text: list[str] = []
        self.text_chars = 0
        self.tool_calls = 0
        self.first_output_at: float | None = None
        self.finish_reason: str | None = None
        self.rejected_answer: tuple[Event, ...] = ()
        self._score: int | None = None
        self._held: list[TransportEvent] = []

    def _answering(self) -> Answering:
        state = self.job.state
        reason = state.route.reason
        if state.failures:
            last = state.failures[-1]
            reason += f"; fallback after {last.provider}/{last.model} failed ({last.kind.value})"
        return Answering(
            provider=self.job.candidate.provider,
            model=self.job.candidate.model,
            reason=reason,
            attempt=state.attempts,
            fallback_used=bool(state.failures),
            upstream_ms=state.failed_upstream_ms + (trio.current_time() - self.attempt_started) * 1000,
        )

    async def _send(self, event: Event) -> None:
        """Hand an event to the client's channel. Waiting on a slow client is not the upstream's
        fault: the idle timeout is suspended meanwhile, and a client that reads nothing for
        `CLIENT_STALL_LIMIT` seconds is treated as gone. Usually the channel has room: then no
        timeout is set up at all (this runs once per streamed chunk)."""
        try:
            self.job.reply.send_nowait(event)
            return
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ClientGone from None
        self.idle_scope.deadline = math.inf
        try:
            with trio.fail_after(CLIENT_STALL_LIMIT):
                await self.job.reply.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            raise ClientGone from None
        finally:
            self.idle_scope.deadline = trio.current_time() + self.idle_timeout

    def score(self) -> int:
        """The heuristic score of the finished answer (asked by the cascade, then by the record)."""
        if self._score is None:
            self._score = score_answer(
                "".join(self.text),
                finish_reason=self.finish_reason or "stop",
                tool_calls=self.tool_calls,
                category=self.job.state.category,
            )
        return self._score

    async def emit(self, event: TransportEvent) -> None:
        if isinstance(event, Usage):
            if self.pricer is not None:
                event = attrs.evolve(event, cost_usd=self.pricer(self.job.candidate.model, event))
            self.usage = event
        elif isinstance(event, ContentDelta | ToolCallDelta | GeneratedImages):
            if self.first_output_at is None:
                self.first_output_at = trio.current_time()
            if isinstance(event, ContentDelta) and self.text_chars < 8000:
                self.text.append(event.text)
                self.text_chars += len(event.text)
            elif isinstance(event, ToolCallDelta) and event.id is not None:
                self.tool_calls += 1
        if self.job.request.stream and (self.answered or isinstance(event, ContentDelta | ToolCallDelta)):
            if not self.answered:
                self.answered = True
                await self._send(self._answering())
                for held in self._held:
                    await self._send(held)
                self._held.clear()
            await self._send(event)
        else:
            self._held.append(event)
        self._renew_idle_deadline()

    def _renew_idle_deadline(self) -> None:
        """Progress: the idle timeout starts again. Renewed at most once a second: each change of a
        deadline is an entry in trio's deadline heap, and a stream makes progress per chunk."""
        renewed = trio.current_time() + self.idle_timeout
        if renewed - self.idle_scope.deadline >= IDLE_RENEWAL_STEP:
            self.idle_scope.deadline = renewed

    async def finish(self, finish_reason: str) -> None:
        self.finish_reason = finish_reason
        upstream_ms = (trio.current_time() - self.attempt_started) * 1000
        if not self.answered and self.job.escalate_below is not None:
            score = self.score()
            if score < self.job.escalate_below:
                # Kept whole: if no stronger model answers, the router sends this one after all.
                self.rejected_answer = (
                    self._answering(),
                    *_coalesce(self._held),
                    Finished(finish_reason, upstream_ms),
                )
                raise ProviderFailure(
                    FailureKind.POOR_ANSWER,
                    f"the answer scored {score} (below {self.job.escalate_below}): escalating",
                )
        if not self.answered:
            self.answered = True
            await self._send(self._answering())
            for event in _coalesce(self._held):
                await self._send(event)
            self._held.clear()
        await self._send(Finished(finish_reason, upstream_ms))


def _coalesce(events: list[TransportEvent]) -> list[TransportEvent]:
    """Merge adjacent text deltas: a non-streaming answer need not cross the channel in pieces."""
    merged: list[TransportEvent] = []
    for event in events:
        if isinstance(event, ContentDelta) and merged and isinstance(merged[-1], ContentDelta):
            merged[-1] = ContentDelta(merged[-1].text + event.text)
        else:
            merged.append(event)
    return merged


@attrs.define
class ModelTotals:
    """Running totals for one model of one provider (Prometheus counters)."""

    attempts: dict[str, int] = attrs.field(factory=dict)  # by outcome
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    ttft_seconds: float = 0.0
    ttft_count: int = 0


@attrs.define
class _Hold:
    """An attempt's budget reservation, if it made one."""

    reservation_id: str | None = None
    estimate: float = 0.0


class RecordSink(Protocol):
    def record(self, record: AttemptRecord) -> None: ...


def group_id(request_id: str) -> str:
    """The UUID of a request (its id ends in 32 hex digits), linking its attempts' records."""
    try:
        return str(uuid.UUID(request_id[-32:]))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, request_id))


def attempt_record(
    provider: str,
    job: Job,
    forwarder: _Forwarder,
    result: AttemptResult,
    failure: ProviderFailure | None,
    upstream_ms: float,
    baseline_pricer: Pricer | None = None,
) -> AttemptRecord:
    request = job.request
    usage = forwarder.usage or Usage(0, 0)
    if isinstance(request, ImageRequest):
        summary, messages = request.prompt, 1
    else:
        users = [m for m in request.messages if m.role == "user"]
        summary, messages = (users[-1].text() if users else ""), len(request.messages)
    status = result.value if failure is None else failure.kind.value
    heuristic = None
    if not isinstance(request, ImageRequest) and (
        result is AttemptResult.SUCCESS or (failure is not None and failure.kind is FailureKind.POOR_ANSWER)
    ):
        heuristic = forwarder.score()
    baseline = None
    if baseline_pricer is not None and result is AttemptResult.SUCCESS:
        baseline = baseline_pricer(request.model, usage)
    ttft = (
        None if forwarder.first_output_at is None else (forwarder.first_output_at - forwarder.attempt_started)
    )
    return AttemptRecord(
        id=str(uuid.uuid4()),
        created_at=time.time(),
        request_group_id=group_id(job.state.request_id),
        attempt=job.state.attempts,
        provider=provider,
        model_selected=job.candidate.model,
        model_requested=request.model,
        router_reason=job.state.route.reason[:300],
        task_category=job.state.category,
        complexity_score=job.state.complexity,
        prompt_summary=summary[:500],
        message_count=messages,
        status=status if result is not AttemptResult.SUCCESS else "success",
        tokens_in=usage.prompt_tokens,
        tokens_out=usage.completion_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_usd=usage.cost_usd or 0.0,
        baseline_cost_usd=baseline,
        latency_ms=round(upstream_ms),
        ttft_ms=None if ttft is None else round(ttft * 1000),
        streaming=request.stream,
        fallback_used=bool(job.state.failures),
        client=job.state.client,
        cli_success=result is AttemptResult.SUCCESS,
        heuristic_score=heuristic,
        error_message=None if failure is None else f"{failure.kind.value}: {failure.message}"[:500],
        ab_test=job.state.ab_test,
        ab_variant=job.state.ab_variant,
        # The prompt as sent is what the upstream counted; before it, what compression saved more.
        tokens_before_compression=None
        if job.state.tokens_saved is None
        else usage.prompt_tokens + job.state.tokens_saved,
        tokens_after_compression=None if job.state.tokens_saved is None else usage.prompt_tokens,
    )


class ProviderActor:
    kind = "provider"

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        limits: ProviderLimits,
        breaker_policy: BreakerPolicy,
        pricer: Pricer | None = None,
        recorder: RecordSink | None = None,
        budget: BudgetActor | None = None,
        baseline_pricer: Pricer | None = None,
    ) -> None:
        self.name = name
        self.pricer = pricer
        self.recorder = recorder
        self.budget = budget
        self.baseline_pricer = baseline_pricer
        self.transport = transport
        self.limits = limits
        self.mailbox: Mailbox[Job] = Mailbox(limits.mailbox)
        # Health knowledge about the upstream survives restarts of the actor; working state does not.
        self.breaker = CircuitBreaker(breaker_policy)
        self.needs_login = False
        self.gave_up = False
        self.completed = 0
        self.failed = 0
        self.last_failure: str | None = None
        self.totals: dict[str, ModelTotals] = {}  # per model, for /metrics
        self._running = False
        self._slots = trio.CapacityLimiter(limits.slots)
        self._inflight: dict[int, tuple[Job, _Forwarder]] = {}

    # --- what others may read -----------------------------------------------------

    def accepting(self, now: float) -> bool:
        return self._running and not self.gave_up and self.breaker.would_allow(now)

    def retry_after(self, now: float) -> float | None:
        return self.breaker.retry_after(now)

    def health(self, now: float | None = None) -> Health:
        now = trio.current_time() if now is None else now
        if self.gave_up or self.breaker.state is BreakerState.OPEN:
            return Health.DOWN
        if self.needs_login:
            return Health.NEEDS_LOGIN
        if self.breaker.state is BreakerState.HALF_OPEN or self.breaker.consecutive_failures:
            return Health.DEGRADED
        return Health.HEALTHY

    def statistics(self) -> dict[str, Any]:
        now = trio.current_time()
        mailbox = self.mailbox.statistics()
        return {
            "health": self.health(now).value,
            "mailbox": {"depth": mailbox.depth, "capacity": mailbox.capacity, "peak": mailbox.peak},
            "in_flight": len(self._inflight),
            "concurrency_limit": self.limits.slots,
            "idle_timeout_s": self.limits.idle_timeout,
            "breaker": self.breaker.statistics(now).to_json(),
            "completed": self.completed,
            "failed": self.failed,
            "last_failure": self.last_failure,
            "transport": self.transport.describe(),
        }

    # --- the actor ----------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._slots = trio.CapacityLimiter(self.limits.slots)
        self._inflight = {}
        async with self.transport.session(), trio.open_nursery() as nursery:
            self._running = True
            task_status.started()
            while True:
                # Take a slot before taking a job, so queued jobs wait in the mailbox, where
                # the router can see it is full, and not in this loop's hands.
                slot = object()
                await self._slots.acquire_on_behalf_of(slot)
                job = await self.mailbox.receive.receive()
                if job.cancel.cancelled:
                    self._slots.release_on_behalf_of(slot)
                    await self._report(job, AttemptResult.CANCELLED, 0.0, answered=False)
                    continue
                if not self.breaker.allow(trio.current_time()):
                    self._slots.release_on_behalf_of(slot)
                    failure = self._attempt_failure(
                        job,
                        ProviderFailure(
                            FailureKind.UNAVAILABLE,
                            "circuit breaker open",
                            retry_after=self.retry_after(trio.current_time()),
                        ),
                    )
                    await self._report(job, AttemptResult.FAILURE, 0.0, answered=False, failure=failure)
                    continue
                nursery.start_soon(self._run_job, job, slot)

    async def on_crash(self, error: BaseException) -> None:
        """Fail every job this incarnation held, and every queued one, so none waits forever."""
        self._running = False
        self.last_failure = f"actor crashed: {type(error).__name__}: {error}"[:300]
        held = list(self._inflight.values())
        self._inflight = {}
        queued = [(job, None) for job in self.mailbox.drain()]
        for job, forwarder in [*held, *queued]:
            answered = forwarder.answered if forwarder is not None else False
            failure = self._attempt_failure(
                job, ProviderFailure(FailureKind.CRASH, f"provider actor crashed: {type(error).__name__}")
            )
            if answered:
                self._end_client_stream(job, failure)
            await self._report(job, AttemptResult.FAILURE, 0.0, answered=answered, failure=failure)

    def on_give_up(self) -> None:
        self.gave_up = True

    # --- one job --------------------------------------------------------------------

    async def _run_job(self, job: Job, slot: object) -> None:
        forwarder = _Forwarder(job, self.limits.idle_timeout, self.pricer)
        self._inflight[id(job)] = (job, forwarder)
        try:
            result, failure = await self._attempt(job, forwarder)
        finally:
            self._slots.release_on_behalf_of(slot)
        # Reached only when the attempt ended by itself; a crash leaves the job to on_crash.
        del self._inflight[id(job)]
        upstream_ms = (trio.current_time() - forwarder.attempt_started) * 1000
        self._learn(result, failure)
        attempt_failure = None if failure is None else self._attempt_failure(job, failure)
        if attempt_failure is not None and forwarder.answered:
            self._end_client_stream(job, attempt_failure)
        self._count(job.candidate.model, forwarder, result, failure)
        record = attempt_record(self.name, job, forwarder, result, failure, upstream_ms, self.baseline_pricer)
        if self.recorder is not None:
            self.recorder.record(record)
        await self._report(
            job,
            result,
            upstream_ms,
            answered=forwarder.answered,
            failure=attempt_failure,
            score=record.heuristic_score,
            held_answer=forwarder.rejected_answer,
        )

    async def _attempt(self, job: Job, forwarder: _Forwarder) -> tuple[AttemptResult, ProviderFailure | None]:
        with trio.CancelScope() as client_scope:
            job.cancel.attach(client_scope)
            hold = _Hold()
            try:
                await self._reserve(job, hold)
                with forwarder.idle_scope:
                    finish_reason = await self.transport.run(job.request, job.candidate.model, forwarder.emit)
                    await forwarder.finish(finish_reason)
                    return AttemptResult.SUCCESS, None
                return AttemptResult.FAILURE, ProviderFailure(
                    FailureKind.TIMEOUT, f"no progress from the upstream for {self.limits.idle_timeout:g} s"
                )
            except ProviderFailure as failure:
                return AttemptResult.FAILURE, failure
            except ClientGone:
                return AttemptResult.CANCELLED, None
            finally:
                job.cancel.detach(client_scope)
                if hold.reservation_id is not None and self.budget is not None:
                    self._settle(hold, forwarder)
        return AttemptResult.CANCELLED, None

    async def _reserve(self, job: Job, hold: _Hold) -> None:
        """Hold the attempt's estimated cost against the budgets; raise OVER_BUDGET if it does not fit."""
        pricing = self.pricer
        key_budget = job.state.key_budget
        if (
            self.budget is None
            or (not self.budget.enforcing and key_budget is None)
            or pricing is None
            or getattr(pricing, "free", False)
        ):
            return
        request = job.request
        if isinstance(request, ImageRequest):
            usage = Usage(0, 0, images=request.n)
        else:
            usage = Usage(tokens.lower_bound(request) * 2, request.max_tokens or 1024)
        estimate = pricing(job.candidate.model, usage)
        if not estimate:
            return
        # Known before asking: if this task is cancelled mid-ask, the hold is still released.
        hold.reservation_id, hold.estimate = str(uuid.uuid4()), estimate
        answer = None
        with trio.move_on_after(self.budget.timeout * 2):
            try:
                answer = await ask(
                    self.budget.mailbox,
                    lambda reply: Reserve(hold.reservation_id or "", estimate, reply, key_budget),
                )
            except MailboxFull:
                answer = None
        if answer is not None and not answer.granted:
            whose = "" if answer.key_name is None else f"key {answer.key_name!r}'s "
            raise ProviderFailure(
                FailureKind.OVER_BUDGET,
                f"the {whose}{answer.period} budget of ${answer.limit_usd:.2f} is spent "
                f"(${answer.spent_usd:.2f}); free providers still serve",
            )

    def _settle(self, hold: _Hold, forwarder: _Forwarder) -> None:
        """Replace the estimate with the real cost; an answer that began without a usage report
        (cut off mid-stream) keeps its estimate rather than counting as free."""
        assert self.budget is not None and hold.reservation_id is not None
        if forwarder.usage is not None and forwarder.usage.cost_usd is not None:
            cost = forwarder.usage.cost_usd
        elif forwarder.first_output_at is not None:
            cost = hold.estimate
        else:
            cost = 0.0
        with contextlib.suppress(MailboxFull):
            self.budget.mailbox.tell(Settle(hold.reservation_id, cost))

    def _count(
        self, model: str, forwarder: _Forwarder, result: AttemptResult, failure: ProviderFailure | None
    ) -> None:
        totals = self.totals.setdefault(model, ModelTotals())
        outcome = result.value if failure is None else failure.kind.value
        totals.attempts[outcome] = totals.attempts.get(outcome, 0) + 1
        if forwarder.usage is not None:
            totals.tokens_in += forwarder.usage.prompt_tokens
            totals.tokens_out += forwarder.usage.completion_tokens
            totals.cost_usd += forwarder.usage.cost_usd or 0.0
        if forwarder.first_output_at is not None:
            totals.ttft_seconds += forwarder.first_output_at - forwarder.attempt_started
            totals.ttft_count += 1

    def _learn(self, result: AttemptResult, failure: ProviderFailure | None) -> None:
        now = trio.current_time()
        if result is AttemptResult.SUCCESS:
            self.completed += 1
            self.needs_login = False
            self.breaker.record_success(now)
            return
        if failure is None:
            self.breaker.record_neutral()
            return
        self.failed += 1
        self.last_failure = f"{failure.kind.value}: {failure.message}"[:300]
        if failure.kind.feeds_breaker:
            self.breaker.record_failure(now)
        elif failure.kind is FailureKind.RATE_LIMITED:
            self.breaker.open_for(now, failure.retry_after or self.breaker.policy.cooldown)
        else:
            if failure.kind is FailureKind.AUTH:
                self.needs_login = True
            self.breaker.record_neutral()

    def _attempt_failure(self, job: Job, failure: ProviderFailure) -> AttemptFailure:
        return AttemptFailure(
            provider=self.name,
            model=job.candidate.model,
            kind=failure.kind,
            message=failure.message,
            upstream_status=failure.upstream_status,
            retry_after=failure.retry_after,
        )

    def _end_client_stream(self, job: Job, failure: AttemptFailure) -> None:
        """The client already has part of the answer: end its stream with the error."""
        error = RelayError(
            502,
            f"{failure.provider}/{failure.model} failed mid-answer: {failure.kind.value}: {failure.message}",
            "upstream_error",
            code=failure.kind.value,
        )
        try:
            job.reply.send_nowait(Failed(error))
        except trio.WouldBlock:
            job.reply.close()  # a full channel: closing it tells the handler the stream broke
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _report(
        self,
        job: Job,
        result: AttemptResult,
        upstream_ms: float,
        *,
        answered: bool,
        failure: AttemptFailure | None = None,
        score: int | None = None,
        held_answer: tuple[Event, ...] = (),
    ) -> None:
        await job.report_to.send(
            AttemptEnded(job, result, upstream_ms, answered, failure, score, held_answer)
        )
