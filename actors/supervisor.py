"""One-for-one supervision on trio nurseries, in the OTP style.

Each child runs in its own task under the supervisor's nursery. When a child's `run` raises,
the child is told (`on_crash`, to fail its in-flight work cleanly) and restarted with fresh
state after a backoff, as long as it has crashed fewer than `max_restarts` times within
`period` seconds. Past that the fault is escalated, as OTP escalates it to a supervisor's
supervisor: the child is marked failed (`on_give_up`: it answers whatever waits for it) and left
down for a long backoff (`escalation_initial`, doubling up to `escalation_max`), then started
afresh. Never down for the life of the process, never crash-looping. Every crash is logged with
its reason and place. Cancellation is never a crash: it is how the tree shuts down.
"""

from __future__ import annotations

import enum
import logging
import traceback
from collections import deque
from typing import Any, Protocol

import attrs
import trio

log = logging.getLogger("relaybox.supervisor")
# How long a crashed child may take to answer its in-flight work, even while the tree stops.
CRASH_CLEANUP = 5.0


class ChildState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


@attrs.frozen
class RestartPolicy:
    max_restarts: int = 5
    period: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    # Past the restart intensity: left down this long, doubling with each escalation in a row.
    escalation_initial: float = 60.0
    escalation_max: float = 900.0

    def backoff(self, recent_crashes: int) -> float:
        return min(self.backoff_initial * 2 ** max(0, recent_crashes - 1), self.backoff_max)

    def escalation(self, escalations: int) -> float:
        return min(self.escalation_initial * 2 ** max(0, escalations - 1), self.escalation_max)


class Supervised(Protocol):
    name: str
    kind: str

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...

    async def on_crash(self, error: BaseException) -> None: ...

    def on_give_up(self) -> None: ...

    def statistics(self) -> Any:
        """A frozen snapshot of the child's state, for /actors."""
        ...


@attrs.frozen
class Crash:
    at: float
    reason: str
    where: str


@attrs.frozen
class CrashReport:
    seconds_ago: float
    reason: str
    where: str


@attrs.frozen
class ChildStatistics:
    name: str
    kind: str
    state: ChildState
    restarts: int
    last_crash: CrashReport | None
    escalations: int  # times it crashed too often and was left down, in a row
    down_for_s: float | None  # escalated: seconds until it starts again
    actor: Any  # the child's own snapshot (its `statistics()`)


@attrs.frozen
class SupervisorStatistics:
    name: str
    kind: str
    policy: RestartPolicy
    children: tuple[ChildStatistics, ...]


@attrs.define
class ChildRecord:
    child: Supervised
    state: ChildState = ChildState.STARTING
    restarts: int = 0
    last_crash: Crash | None = None
    recent_crashes: deque[float] = attrs.field(factory=deque)
    escalations: int = 0  # in a row: the child has not run a whole `period` since the last one
    started_at: float = 0.0
    down_until: float | None = None  # escalated: when it starts again
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)

    def statistics(self, now: float) -> ChildStatistics:
        crash = self.last_crash
        return ChildStatistics(
            name=self.child.name,
            kind=self.child.kind,
            state=self.state,
            restarts=self.restarts,
            last_crash=None
            if crash is None
            else CrashReport(round(now - crash.at, 3), crash.reason, crash.where),
            escalations=self.escalations,
            down_for_s=None if self.down_until is None else round(max(0.0, self.down_until - now), 3),
            actor=self.child.statistics(),
        )


class _StartedOnce:
    """Passes a child's first `started()` to whoever is waiting in `nursery.start`, later ones nowhere."""

    def __init__(self, outer: Any) -> None:
        self._outer = outer
        self.fired = False

    def started(self, value: Any = None) -> None:
        if not self.fired:
            self.fired = True
            self._outer.started(value)


class Supervisor:
    kind = "supervisor"

    def __init__(self, name: str, policy: RestartPolicy) -> None:
        self.name = name
        self.policy = policy
        self._records: dict[str, ChildRecord] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    async def start_child(self, child: Supervised) -> None:
        """Start `child` and return once it is ready (or has failed for good trying)."""
        if self._nursery is None:
            raise RuntimeError("the supervisor is not running")
        if child.name in self._records:
            raise ValueError(f"a child named {child.name!r} already exists")
        self._records[child.name] = ChildRecord(child)
        # Named after the child, so instruments and debuggers tell the actors' tasks apart.
        await self._nursery.start(self._supervise, self._records[child.name], name=f"actor {child.name}")

    async def stop(self, name: str) -> None:
        """Stop one child (cancel it, wait until it has finished cleaning up): for ordered shutdown."""
        record = self._records[name]
        record.scope.cancel()
        await record.done.wait()

    def record(self, name: str) -> ChildRecord:
        return self._records[name]

    def state_of(self, name: str) -> ChildState:
        return self._records[name].state

    def statistics(self) -> SupervisorStatistics:
        now = trio.current_time()
        children = tuple(record.statistics(now) for record in self._records.values())
        return SupervisorStatistics(self.name, self.kind, self.policy, children)

    async def _supervise(self, record: ChildRecord, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started = _StartedOnce(task_status)
        try:
            with record.scope:
                await self._restart_loop(record, started)
        finally:
            if record.state is not ChildState.FAILED:
                record.state = ChildState.STOPPED
            record.done.set()

    async def _restart_loop(self, record: ChildRecord, started: _StartedOnce) -> None:
        child = record.child
        while True:
            record.state = ChildState.RUNNING
            record.started_at = trio.current_time()
            try:
                await child.run(task_status=started)
            except BaseException as caught:
                error = _crash_in(caught)
                if error is None:
                    raise  # cancellation is how the tree shuts down, never a crash
                now = trio.current_time()
                if now - record.started_at > self.policy.period:
                    record.escalations = 0  # it ran well for a while: the next escalation starts short
                record.last_crash = Crash(now, _describe(error), _where(error))
                record.recent_crashes.append(now)
                while record.recent_crashes and record.recent_crashes[0] < now - self.policy.period:
                    record.recent_crashes.popleft()
                log.error(
                    "%s crashed (%s at %s); restarts so far: %d",
                    child.name,
                    record.last_crash.reason,
                    record.last_crash.where,
                    record.restarts,
                    exc_info=error,
                )
                record.state = ChildState.RESTARTING
                # Shielded: a crash while the tree stops (its group holds the Cancelled too) still
                # answers the child's in-flight work; the wait for a restart then ends the loop.
                with trio.move_on_after(CRASH_CLEANUP, shield=True):
                    await child.on_crash(error)
                if len(record.recent_crashes) > self.policy.max_restarts:
                    await self._escalate(record, started)
                else:
                    await trio.sleep(self.policy.backoff(len(record.recent_crashes)))
                record.restarts += 1
            else:
                record.state = ChildState.STOPPED
                started.started()
                return

    async def _escalate(self, record: ChildRecord, started: _StartedOnce) -> None:
        """Too many crashes too fast: down for a long backoff, then a fresh start."""
        child = record.child
        record.escalations += 1
        wait = self.policy.escalation(record.escalations)
        record.state = ChildState.FAILED
        record.down_until = trio.current_time() + wait
        log.error("%s crashed too often; left down for %g s, then started again", child.name, wait)
        child.on_give_up()
        started.started()
        await trio.sleep(wait)
        record.recent_crashes.clear()
        record.down_until = None


def _crash_in(caught: BaseException) -> BaseException | None:
    """The failure in what a child raised: an `Exception`, or the part of an exception group
    made of them (a group can hold a crash and the `Cancelled` of a stop at once). None when it
    is only cancellation (or an interrupt), which is not the supervisor's to handle."""
    if isinstance(caught, BaseExceptionGroup):
        crashed, _ = caught.split(Exception)
        return crashed
    return caught if isinstance(caught, Exception) else None


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        return _describe(error.exceptions[0])
    return f"{type(error).__name__}: {error}"[:500]


def _where(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
