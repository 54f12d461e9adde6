"""The router actor: resolves a request's model name to candidates and walks them.

It sends each attempt to a provider actor's mailbox and hears back once per attempt. A failed
attempt that the client has not seen goes to the next candidate (fallback); when none is left
the client gets one error saying what each candidate answered. A provider whose breaker is
open, whose actor is down, or whose mailbox is full is skipped at once, without waiting.

Per-(provider, model) outcome counts live here: smart routing will choose from them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.actors.messages import AttemptEnded, AttemptResult, Dispatch, DispatchState, Job, RouterMessage
from relaybox.actors.provider import ProviderActor
from relaybox.protocol import tokens
from relaybox.protocol.catalog import Candidate, Catalog
from relaybox.protocol.chat import ChatRequest, ImageRequest
from relaybox.protocol.errors import AttemptFailure, FailureKind, RelayError, final_error
from relaybox.protocol.events import Event, Failed


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
    """From the settings API: stop or resume sending work to a provider."""

    provider: str
    enabled: bool


@attrs.frozen
class OverheadObserved:
    """From the HTTP layer, once per answered request: the milliseconds relaybox itself added."""

    milliseconds: float


# Histogram bucket bounds for relaybox's own overhead, in milliseconds.
OVERHEAD_BUCKETS_MS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0)


class RouterActor:
    kind = "router"
    name = "router"

    def __init__(self, catalog: Catalog, providers: dict[str, ProviderActor], *, mailbox: int = 1024) -> None:
        self.catalog = catalog
        self.providers = providers
        self.mailbox: Mailbox[RouterMessage | SetProviderEnabled | OverheadObserved] = Mailbox(mailbox)
        self.counts: dict[tuple[str, str], OutcomeCounts] = {}
        # Providers switched off through the settings API (configuration, not working state:
        # it survives restarts).
        self.disabled: set[str] = set()
        self._current: RouterMessage | SetProviderEnabled | OverheadObserved | None = None
        self.overhead_buckets = [0] * (len(OVERHEAD_BUCKETS_MS) + 1)  # the last one is +Inf
        self.overhead_sum_ms = 0.0

    def statistics(self) -> dict[str, Any]:
        mailbox = self.mailbox.statistics()
        return {
            "mailbox": {"depth": mailbox.depth, "capacity": mailbox.capacity, "peak": mailbox.peak},
            "outcomes": {f"{p}/{m}": c.to_json() for (p, m), c in sorted(self.counts.items())},
        }

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.counts = {}
        task_status.started()
        async for message in self.mailbox.receive:
            self._current = message
            if isinstance(message, Dispatch):
                self._dispatch(message)
            elif isinstance(message, OverheadObserved):
                self._observe_overhead(message.milliseconds)
            elif isinstance(message, SetProviderEnabled):
                (self.disabled.discard if message.enabled else self.disabled.add)(message.provider)
            else:
                self._attempt_ended(message)
            self._current = None

    async def on_crash(self, error: BaseException) -> None:
        """The message being handled when the router crashed would otherwise never be answered."""
        message, self._current = self._current, None
        if message is None or isinstance(message, SetProviderEnabled | OverheadObserved):
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
        try:
            request = dispatch.request
            if isinstance(request, ImageRequest):
                route = self.catalog.resolve_image(request.model or None)
            else:
                route = self.catalog.resolve(request.model)
        except RelayError as error:
            _reply_failed(dispatch.reply, error)
            return
        state = DispatchState(request_id=dispatch.request_id, route=route, client=dispatch.client)
        self._try_next(_Request(dispatch.request, dispatch.reply, dispatch.cancel), state)

    def _attempt_ended(self, ended: AttemptEnded) -> None:
        job = ended.job
        counts = self.counts.setdefault((job.candidate.provider, job.candidate.model), OutcomeCounts())
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
        state = attrs.evolve(
            job.state,
            failures=(*job.state.failures, ended.failure),
            failed_upstream_ms=job.state.failed_upstream_ms + ended.upstream_ms,
        )
        self._try_next(_Request(job.request, job.reply, job.cancel), state)

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
            missing = self._missing_capability(candidate, request.request)
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
                state, next_index=index + 1, attempts=state.attempts + 1, failures=tuple(failures)
            )
            job = Job(request.request, candidate, request.reply, request.cancel, next_state, self.mailbox)
            try:
                provider.mailbox.tell(job)
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
        _reply_failed(request.reply, final_error(failures))

    def _missing_capability(self, candidate: Candidate, request: ChatRequest | ImageRequest) -> str | None:
        """Why this candidate cannot take the request at all, or None."""
        models = self.catalog.provider(candidate.provider)
        if models is None or isinstance(request, ImageRequest):
            return None
        if not models.vision and request.has_images():
            return "does not take images"
        entry = models.entry(candidate.model)
        if entry is not None and entry.context_window is not None:
            needed = tokens.lower_bound(request)
            if needed > entry.context_window:
                return (
                    f"the prompt needs at least {needed} tokens; the context window is {entry.context_window}"
                )
        return None


def _reply_failed(reply: trio.MemorySendChannel[Event], error: RelayError) -> None:
    # Nothing was sent on this channel before (no answer began), so it cannot be full;
    # closed means the client has gone.
    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        reply.send_nowait(Failed(error))
