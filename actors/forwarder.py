"""One attempt's events on their way to the client: priced, held back until the client may see
them, and counted for the attempt's record.

Streaming: everything from the first content event on goes out as it comes, preceded by
`Answering`; until then events are held, so a failure can still be retried invisibly.
Non-streaming: everything is held until the upstream has finished, so any failure can be, and a
poor answer can give way to a stronger model (the cascade).
"""

from __future__ import annotations

import collections
import math

import attrs
import trio
from relaybox.actors.messages import Job
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import (
    Answering,
    ContentDelta,
    Embedded,
    Event,
    Finished,
    GeneratedImages,
    ToolCallDelta,
    TransportEvent,
    Usage,
)
from relaybox.protocol.routing.heuristics import score_answer
from relaybox.protocol.routing.pricing import Pricer
from relaybox.storage.records import AttemptRecord, attempt_record

# The idle timeout is exact to within this many seconds (see `Forwarder._renew_idle_deadline`).
IDLE_RENEWAL_STEP = 1.0
# An exchange waits on its client, in all, at most this long: a client that reads too slowly to
# take its answer within it (even a byte at a time, which never stalls for long) is treated as gone.
CLIENT_STALL_LIMIT = 300.0
# What an exchange holds for a client that reads slower than the upstream answers: the upstream is
# read on at its own pace until this much waits, so its slot is free as soon as it has answered.
HELD_FOR_CLIENT_BYTES = 256 << 10
# Of a long answer, what its score and a judge read: its head and its tail.
ANSWER_HEAD_CHARS = 8000
ANSWER_TAIL_CHARS = 8000
# What an event other than text counts for in that bound.
EVENT_OVERHEAD_BYTES = 64


class ClientGone(Exception):
    """The client's reply channel is closed: nobody is listening any more."""


class Forwarder:
    """Carries one attempt's events into the client's reply channel (see the module's docstring)."""

    def __init__(self, job: Job, idle_timeout: float, pricer: Pricer | None = None) -> None:
        self.job = job
        self.pricer = pricer
        self.answered = False
        self.attempt_started = trio.current_time()
        self.idle_timeout = idle_timeout
        self.idle_scope = trio.CancelScope(deadline=self.attempt_started + idle_timeout)
        # What the attempt's record needs.
        self.usage: Usage | None = None
        self._answer = _HeadAndTail()
        self.tool_calls = 0
        self.first_output_at: float | None = None
        self.finish_reason: str | None = None
        self.finished: Finished | None = None  # held back until the attempt's record is journaled
        self.rejected_answer: tuple[Event, ...] = ()
        self._score: int | None = None
        self._held: list[TransportEvent] = []
        # Events the client's channel had no room for yet, in order, and their size.
        self._waiting: collections.deque[Event] = collections.deque()
        self._waiting_bytes = 0
        self._stall_left = CLIENT_STALL_LIMIT

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
        """Hand an event to the client's channel. When the client reads slower than the upstream
        answers, the event waits here, up to `HELD_FOR_CLIENT_BYTES`; past that the upstream waits
        for the client. Usually the channel has room: then nothing else is done (this runs once per
        streamed chunk)."""
        if not self._waiting and self._offer(event):
            return
        self._waiting.append(event)
        self._waiting_bytes += _size(event)
        while self._waiting and self._offer(self._waiting[0]):
            self._waiting_bytes -= _size(self._waiting.popleft())
        if self._waiting_bytes > HELD_FOR_CLIENT_BYTES:
            await self._wait_for_client(HELD_FOR_CLIENT_BYTES)

    async def flush(self) -> None:
        """Once the upstream has answered (and its slot is free): wait for the client to take what
        is held for it."""
        await self._wait_for_client(0)

    def _offer(self, event: Event) -> bool:
        try:
            self.job.reply.send_nowait(event)
            return True
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ClientGone from None

    async def _wait_for_client(self, down_to: int) -> None:
        """Send held events, waiting for the client, until at most `down_to` bytes are held.
        Waiting on a slow client is not the upstream's fault: the idle timeout is suspended
        meanwhile. All the waits of one exchange together are bounded by `CLIENT_STALL_LIMIT`."""
        self.idle_scope.deadline = math.inf
        try:
            while self._waiting and (self._waiting_bytes > down_to or down_to == 0):
                started = trio.current_time()
                try:
                    with trio.fail_after(max(self._stall_left, 0.0)):
                        await self.job.reply.send(self._waiting[0])
                finally:
                    self._stall_left -= trio.current_time() - started
                self._waiting_bytes -= _size(self._waiting.popleft())
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            raise ClientGone from None
        finally:
            self.idle_scope.deadline = trio.current_time() + self.idle_timeout

    def answer_text(self) -> str:
        """The answer's text, its head and tail when it is long: what its score and a judge read
        (a final answer is usually at the end)."""
        return self._answer.text()

    def score(self) -> int:
        """The heuristic score of the finished answer (asked by the cascade, then by the record)."""
        if self._score is None:
            self._score = score_answer(
                self.answer_text(),
                finish_reason=self.finish_reason or "stop",
                tool_calls=self.tool_calls,
                category=self.job.state.category,
            )
        return self._score

    def record(
        self,
        provider: str,
        outcome: str,
        latency_ms: float,
        *,
        error: str | None = None,
        baseline_pricer: Pricer | None = None,
    ) -> AttemptRecord:
        """The attempt's record. `outcome`: "success", "cancelled", or the failure kind; an answer
        (a poor one too) is scored, a successful one priced on the baseline for "cost saved"."""
        job = self.job
        scored = outcome in ("success", FailureKind.POOR_ANSWER.value)
        status = outcome
        if job.state.purpose is not None:  # relaybox's own call, for learning: never the client's
            status = job.state.purpose if outcome == "success" else f"{job.state.purpose}_failed"
        baseline = None
        if baseline_pricer is not None and outcome == "success" and job.state.purpose is None:
            baseline = baseline_pricer(job.request.model, self.usage or Usage(0, 0))
        return attempt_record(
            provider,
            job.candidate.model,
            job.request,
            job.state,
            status=status,
            usage=self.usage,
            latency_ms=latency_ms,
            ttft_ms=None if (ttft := self.time_to_first_output()) is None else ttft * 1000,
            heuristic_score=self.score() if scored and isinstance(job.request, ChatRequest) else None,
            baseline_cost_usd=baseline,
            error=error,
        )

    def time_to_first_output(self) -> float | None:
        """Seconds from the attempt's start to its first output, if there was any."""
        if self.first_output_at is None:
            return None
        return self.first_output_at - self.attempt_started

    def cost_for_budget(self, estimate: float) -> float:
        """What the attempt's budget reservation settles to: its real cost; for an answer that began
        without a usage report (cut off mid-stream), the estimate rather than nothing."""
        if self.usage is not None and self.usage.cost_usd is not None:
            return self.usage.cost_usd
        return estimate if self.first_output_at is not None else 0.0

    async def emit(self, event: TransportEvent) -> None:
        if isinstance(event, Usage):
            if self.pricer is not None:
                event = attrs.evolve(event, cost_usd=self.pricer(self.job.candidate.model, event))
            self.usage = event
        elif isinstance(event, ContentDelta | ToolCallDelta | GeneratedImages | Embedded):
            if self.first_output_at is None:
                self.first_output_at = trio.current_time()
            if isinstance(event, ContentDelta):
                self._answer.add(event.text)
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
        self.finished = Finished(finish_reason, upstream_ms)

    async def conclude(self) -> None:
        """The answer's end, sent once its record is safe (the provider actor's call): everything
        else of the answer went out with `finish`."""
        if self.finished is not None:
            await self._send(self.finished)
            await self.flush()  # a slow client's channel may be full still: the end must reach it


class _HeadAndTail:
    """A text kept within bounds: its first `ANSWER_HEAD_CHARS` and its last `ANSWER_TAIL_CHARS`."""

    def __init__(self) -> None:
        self._head: list[str] = []
        self._head_chars = 0
        self._tail: collections.deque[str] = collections.deque()
        self._tail_chars = 0
        self._dropped = False

    def add(self, piece: str) -> None:
        if self._head_chars < ANSWER_HEAD_CHARS:
            self._head.append(piece)
            self._head_chars += len(piece)
            return
        self._tail.append(piece)
        self._tail_chars += len(piece)
        while self._tail_chars - len(self._tail[0]) >= ANSWER_TAIL_CHARS:
            self._tail_chars -= len(self._tail.popleft())
            self._dropped = True

    def text(self) -> str:
        head = "".join(self._head)
        if not self._tail:
            return head
        tail = "".join(self._tail)
        if self._dropped or len(tail) > ANSWER_TAIL_CHARS:
            return f"{head}\n[...]\n{tail[-ANSWER_TAIL_CHARS:]}"
        return head + tail


def _size(event: Event) -> int:
    if isinstance(event, ContentDelta):
        return len(event.text) + EVENT_OVERHEAD_BYTES
    if isinstance(event, ToolCallDelta):
        return len(event.arguments) + EVENT_OVERHEAD_BYTES
    return EVENT_OVERHEAD_BYTES


def _coalesce(events: list[TransportEvent]) -> list[TransportEvent]:
    """Merge adjacent text deltas: a non-streaming answer need not cross the channel in pieces."""
    merged: list[TransportEvent] = []
    for event in events:
        if isinstance(event, ContentDelta) and merged and isinstance(merged[-1], ContentDelta):
            merged[-1] = ContentDelta(merged[-1].text + event.text)
        else:
            merged.append(event)
    return merged
