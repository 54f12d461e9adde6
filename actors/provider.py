"""A provider actor: one upstream (an HTTP API or a CLI), its concurrency slots, health and breaker.

Jobs arrive in a bounded mailbox. The actor's loop takes a job, waits for a free slot (so a
busy provider's mailbox fills up, and a full mailbox tells the router to try elsewhere),
checks the circuit breaker, and runs the job in its own task. The job's events go straight
into the client's reply channel through a `Forwarder` (`actors/forwarder.py`); the actor only
steps in at the edges: the budget reservation before, and after the last event the record, the
breaker and a report to the router.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio
from relaybox.actors.background_lane import BackgroundLane
from relaybox.actors.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from relaybox.actors.budget import BudgetActor, BudgetHold
from relaybox.actors.forwarder import ClientGone, Forwarder
from relaybox.actors.mailbox import Mailbox
from relaybox.actors.messages import AttemptEnded, AttemptResult, Job
from relaybox.actors.provider_statistics import Health, ProviderStatistics, RunningTotals
from relaybox.actors.transports.base import Transport
from relaybox.protocol.errors import AttemptFailure, FailureKind, ProviderFailure, RelayError, router_down
from relaybox.protocol.events import Event, Failed
from relaybox.protocol.routing.catalog import OTHER_MODEL
from relaybox.protocol.routing.pricing import Pricer
from relaybox.storage.records import AttemptRecord

log = logging.getLogger("relaybox.provider")
# How long an attempt's end waits, at most, for room in the router's mailbox.
REPORT_WAIT = 2.0
# The weight of the newest attempt in the running average of attempts' length.
ATTEMPT_AVERAGE_WEIGHT = 0.1


@attrs.frozen
class ProviderLimits:
    slots: int = 16
    mailbox: int = 32
    # Seconds without progress (no first token yet, or no new chunk) before an attempt is abandoned.
    idle_timeout: float = 120.0


class RecordSink(Protocol):
    async def recorded(self, record: AttemptRecord) -> None: ...


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
        listed_models: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        # Totals are kept per listed model; any other name a client sends counts as OTHER_MODEL.
        self.listed_models = listed_models
        self.pricer = pricer
        self.recorder = recorder
        self.budget = budget
        self.baseline_pricer = baseline_pricer
        self.transport = transport
        self.limits = limits
        # A job whose client hung up while it waited for a slot gives its place to a live one.
        self.mailbox: Mailbox[Job] = Mailbox(limits.mailbox, is_stale=lambda job: job.cancel.cancelled)
        # Health knowledge about the upstream survives restarts of the actor; working state does not.
        self.breaker = CircuitBreaker(breaker_policy)
        self._tally = _Tally()
        self._gave_up = False
        self._totals: dict[str, RunningTotals] = {}  # per model, for /metrics
        self._running = False
        self._slots = trio.CapacityLimiter(limits.slots)
        self._inflight: dict[int, tuple[Job, Forwarder]] = {}
        self._attempt_seconds: float | None = None  # how long an attempt takes, on recent average
        self.background = BackgroundLane()  # relaybox's own attempts, on spare capacity only

    # --- what the router asks, and what others may read ------------------------------

    def accepting(self, now: float) -> bool:
        return self._running and not self._gave_up and self.breaker.would_allow(now)

    def retry_after(self, now: float) -> float | None:
        return self.breaker.retry_after(now)

    def when_a_place_frees(self) -> float:
        """Seconds until this provider can likely take one more job, for a `Retry-After` when its
        slots and mailbox are full: the queue ahead drains at `slots` attempts per attempt's
        length (a running average of recent attempts)."""
        ahead = (self.mailbox.statistics().depth + 1) * (self._attempt_seconds or 1.0) / self.limits.slots
        return min(max(1.0, math.ceil(ahead)), 60.0)

    def offer_background(self, job: Job) -> bool:
        return self.background.admit(job, self.mailbox, self.limits.slots - len(self._inflight))

    def yield_to_clients(self) -> None:
        """A client's job was queued: with every slot busy, a background attempt gives its up."""
        if len(self._inflight) >= self.limits.slots:
            self.background.yield_one()

    def health(self, now: float | None = None) -> Health:
        now = trio.current_time() if now is None else now
        if self._gave_up or self.breaker.state is BreakerState.OPEN:
            return Health.DOWN
        if self._tally.needs_login:
            return Health.NEEDS_LOGIN
        if self.breaker.state is BreakerState.HALF_OPEN or self.breaker.consecutive_failures:
            return Health.DEGRADED
        return Health.HEALTHY

    def statistics(self) -> ProviderStatistics:
        now = trio.current_time()
        return ProviderStatistics(
            health=self.health(now),
            accepting=self.accepting(now),
            mailbox=self.mailbox.statistics(),
            in_flight=len(self._inflight),
            concurrency_limit=self.limits.slots,
            idle_timeout_s=self.limits.idle_timeout,
            breaker=self.breaker.statistics(now),
            completed=self._tally.completed,
            failed=self._tally.failed,
            last_failure=self._tally.last_failure,
            transport=self.transport.statistics(),
            totals={model: totals.statistics() for model, totals in self._totals.items()},
            background=self.background.statistics(),
        )

    # --- the actor ----------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._slots = trio.CapacityLimiter(self.limits.slots)
        self._inflight = {}
        self._gave_up = False  # started again after an escalation
        async with self.transport.session(), trio.open_nursery() as nursery:
            self._running = True
            task_status.started()
            while True:
                # Take a slot before taking a job, so queued jobs wait in the mailbox, where
                # the router can see it is full, and not in this loop's hands.
                slot = _Slot(self._slots)
                await slot.take()
                job = await self.mailbox.receive.receive()
                now = trio.current_time()
                if job.cancel.cancelled:
                    slot.release()
                    await self._report(job, AttemptResult.CANCELLED, 0.0, answered=False)
                elif not self.breaker.allow(now):
                    slot.release()
                    refused = ProviderFailure(
                        FailureKind.UNAVAILABLE, "circuit breaker open", retry_after=self.retry_after(now)
                    )
                    failure = _attempt_failure(self.name, job, refused)
                    await self._report(job, AttemptResult.FAILURE, 0.0, answered=False, failure=failure)
                else:
                    nursery.start_soon(self._run_job, job, slot, name=f"actor {self.name}: an attempt")

    async def on_crash(self, error: BaseException) -> None:
        """Fail every job this incarnation held, and every queued one, so none waits forever."""
        self._running = False
        self._tally.last_failure = f"actor crashed: {type(error).__name__}: {error}"[:300]
        held = list(self._inflight.values())
        self._inflight = {}
        # A probe lost with this incarnation must not hold the breaker half-open for good.
        self.breaker.record_neutral()
        queued = [(job, None) for job in self.mailbox.drain()]
        for job, forwarder in [*held, *queued]:
            answered = forwarder.answered if forwarder is not None else False
            failure = _attempt_failure(
                self.name,
                job,
                ProviderFailure(FailureKind.CRASH, f"provider actor crashed: {type(error).__name__}"),
            )
            if answered:
                _end_client_stream(job, failure)
            await self._report(job, AttemptResult.FAILURE, 0.0, answered=answered, failure=failure)

    def on_give_up(self) -> None:
        self._gave_up = True

    # --- one job --------------------------------------------------------------------

    async def _run_job(self, job: Job, slot: _Slot) -> None:
        forwarder = Forwarder(job, self.limits.idle_timeout, self.pricer)
        self._inflight[id(job)] = (job, forwarder)
        try:
            with self.background.running(job):
                result, failure = await self._attempt(job, forwarder, slot.release)
        finally:
            slot.release()
        upstream_ms = (trio.current_time() - forwarder.attempt_started) * 1000
        self._attempt_seconds = _averaged(self._attempt_seconds, upstream_ms / 1000)
        self._tally.learn(self.breaker, result, failure)
        attempt_failure = None if failure is None else _attempt_failure(self.name, job, failure)
        outcome = result.value if failure is None else failure.kind.value
        model = job.candidate.model
        if self.listed_models is not None and model not in self.listed_models:
            model = OTHER_MODEL
        self._totals.setdefault(model, RunningTotals()).add(
            outcome, forwarder.usage, forwarder.time_to_first_output()
        )
        record = forwarder.record(
            self.name,
            outcome,
            upstream_ms,
            error=None if failure is None else f"{failure.kind.value}: {failure.message}",
            baseline_pricer=self.baseline_pricer,
        )
        if self.recorder is not None:
            # Before the answer ends: an answered request's record must outlive a kill of relaybox.
            await self.recorder.recorded(record)
        if attempt_failure is not None and forwarder.answered:
            _end_client_stream(job, attempt_failure)
        with contextlib.suppress(ClientGone):
            await forwarder.conclude()
        # Reached only when the attempt ended by itself: a crash leaves the job to on_crash.
        del self._inflight[id(job)]
        await self._report(
            job,
            result,
            upstream_ms,
            answered=forwarder.answered,
            failure=attempt_failure,
            score=record.heuristic_score,
            held_answer=forwarder.rejected_answer,
            answer=forwarder.answer_text() if job.state.learned and failure is None else None,
        )

    async def _attempt(
        self, job: Job, forwarder: Forwarder, release_slot: Callable[[], None]
    ) -> tuple[AttemptResult, ProviderFailure | None]:
        """The attempt, its slot released as soon as the upstream has answered: what the client
        has not read yet is the client's to take, not the upstream's to wait for."""
        with trio.CancelScope() as client_scope:
            job.cancel.attach(client_scope)
            hold = None if self.budget is None else BudgetHold(self.budget, self.pricer)
            try:
                if hold is not None:
                    await hold.reserve(job)
                finish_reason = None
                with forwarder.idle_scope:
                    finish_reason = await self.transport.run(job.request, job.candidate.model, forwarder.emit)
                if finish_reason is None:
                    return AttemptResult.FAILURE, ProviderFailure(
                        FailureKind.TIMEOUT,
                        f"no progress from the upstream for {self.limits.idle_timeout:g} s",
                    )
                release_slot()
                await forwarder.finish(finish_reason)
                await forwarder.flush()
                return AttemptResult.SUCCESS, None
            except ProviderFailure as failure:
                return AttemptResult.FAILURE, failure
            except ClientGone:
                return AttemptResult.CANCELLED, None
            except Exception as error:  # a bug met by this attempt: it fails, its siblings go on
                log.exception(
                    "%s: an attempt of %s failed on an internal error", self.name, job.state.request_id
                )
                return AttemptResult.FAILURE, ProviderFailure(
                    FailureKind.CRASH,
                    f"relaybox failed on this attempt: {type(error).__name__}: {error}"[:300],
                )
            finally:
                job.cancel.detach(client_scope)
                if hold is not None:
                    await hold.settle(forwarder.cost_for_budget(hold.estimate))
        return AttemptResult.CANCELLED, None

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
        answer: str | None = None,
    ) -> None:
        await report(
            job, AttemptEnded(job, result, upstream_ms, answered, failure, score, held_answer, answer)
        )


def _averaged(average: float | None, seconds: float) -> float:
    return seconds if average is None else average + (seconds - average) * ATTEMPT_AVERAGE_WEIGHT


def _attempt_failure(provider: str, job: Job, failure: ProviderFailure) -> AttemptFailure:
    return AttemptFailure(
        provider=provider,
        model=job.candidate.model,
        kind=failure.kind,
        message=failure.message,
        upstream_status=failure.upstream_status,
        retry_after=failure.retry_after,
    )


@attrs.define
class _Tally:
    """What a provider's attempts taught it about the upstream: counts, the last failure, whether
    it wants a login; and the breaker fed."""

    completed: int = 0
    failed: int = 0
    last_failure: str | None = None
    needs_login: bool = False

    def learn(self, breaker: CircuitBreaker, result: AttemptResult, failure: ProviderFailure | None) -> None:
        now = trio.current_time()
        if result is AttemptResult.SUCCESS:
            self.completed += 1
            self.needs_login = False
            breaker.record_success(now)
            return
        if failure is None:
            breaker.record_neutral()
            return
        self.failed += 1
        self.last_failure = f"{failure.kind.value}: {failure.message}"[:300]
        if failure.kind.feeds_breaker:
            breaker.record_failure(now)
        elif failure.kind is FailureKind.RATE_LIMITED:
            breaker.open_for(now, failure.retry_after or breaker.policy.cooldown)
        else:
            if failure.kind is FailureKind.AUTH:
                self.needs_login = True
            breaker.record_neutral()


class _Slot:
    """One of a provider's concurrency slots, taken for one attempt and given back once: as soon
    as the upstream has answered, or when the attempt ends, whichever comes first."""

    def __init__(self, slots: trio.CapacityLimiter) -> None:
        self._slots = slots
        self._held = False

    async def take(self) -> None:
        await self._slots.acquire_on_behalf_of(self)
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release_on_behalf_of(self)


async def report(job: Job, ended: AttemptEnded) -> bool:
    """Tell the router an attempt ended, waiting a moment for room in its mailbox. A router that
    takes no reports (escalated, its mailbox full) will not try the next candidate either: the
    caller of a failed attempt hears the end now rather than at its own timeout, and the attempt
    frees its slot. False when the report was not delivered."""
    with trio.move_on_after(REPORT_WAIT):
        await job.report_to.send(ended)
        return True
    log.warning("the router took no report for %s within %.0f s", job.state.request_id, REPORT_WAIT)
    if ended.failure is not None and not ended.answered:
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            job.reply.send_nowait(Failed(router_down()))
    return False


def _end_client_stream(job: Job, failure: AttemptFailure) -> None:
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
