"""The circuit breaker: pure state, the current time passed in by its owner.

closed → open after `consecutive_failures` transport failures in a row, or when the failure
rate over the last `window` seconds reaches `failure_rate` with at least `minimum_volume`
outcomes. open → half-open once the cooldown has passed; the cooldown doubles (up to
`max_cooldown`) each time a half-open probe fails. half-open lets one probe through: its
success closes the breaker, its failure opens it again. An upstream 429 opens it until the
upstream's Retry-After.
"""

from __future__ import annotations

import enum
from collections import deque

import attrs


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen
class BreakerPolicy:
    consecutive_failures: int = 5
    failure_rate: float = 0.5
    window: float = 60.0
    minimum_volume: int = 10
    cooldown: float = 5.0
    max_cooldown: float = 300.0


@attrs.frozen
class BreakerStatistics:
    state: BreakerState
    consecutive_failures: int
    window_failures: int
    window_total: int
    trips: int
    open_for_s: float | None  # seconds until half-open, while open


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.trips = 0  # consecutive trips without a successful probe: grows the cooldown
        self._open_until = 0.0
        self._probe_in_flight = False
        # The window's outcomes and their counts, kept as they come and go (not counted again).
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._window_failures = 0

    def allow(self, now: float) -> bool:
        """May a request go through now? In half-open, the one caller told yes is the probe."""
        if self.state is BreakerState.OPEN:
            if now < self._open_until:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self.state is BreakerState.HALF_OPEN:
            if self._probe_in_flight:
                return False
            self._probe_in_flight = True
        return True

    def would_allow(self, now: float) -> bool:
        """`allow` without taking the probe: for a router choosing among candidates."""
        if self.state is BreakerState.OPEN:
            return now >= self._open_until
        if self.state is BreakerState.HALF_OPEN:
            return not self._probe_in_flight
        return True

    def record_success(self, now: float) -> None:
        self._note(now, ok=True)
        self.consecutive_failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.CLOSED
            self.trips = 0
            self._probe_in_flight = False

    def record_failure(self, now: float) -> None:
        self._note(now, ok=False)
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._trip(now)
            return
        failures, total = self._window_failures, len(self._outcomes)
        if self.consecutive_failures >= self.policy.consecutive_failures or (
            total >= self.policy.minimum_volume and failures / total >= self.policy.failure_rate
        ):
            self._trip(now)

    def record_neutral(self) -> None:
        """An attempt that says nothing about health (refused request, cancelled by the client, or
        lost with a crashed actor): a half-open breaker lets the next request probe."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_in_flight = False

    def open_for(self, now: float, seconds: float) -> None:
        """The upstream asked for a pause (429 Retry-After): open until then, without growing the cooldown."""
        self.state = BreakerState.OPEN
        self._probe_in_flight = False
        self._open_until = max(self._open_until, now + seconds)

    def retry_after(self, now: float) -> float | None:
        if self.state is BreakerState.OPEN:
            return max(0.0, self._open_until - now)
        return None

    def statistics(self, now: float) -> BreakerStatistics:
        self._prune(now)
        return BreakerStatistics(
            state=self.state,
            consecutive_failures=self.consecutive_failures,
            window_failures=self._window_failures,
            window_total=len(self._outcomes),
            trips=self.trips,
            open_for_s=None if (wait := self.retry_after(now)) is None else round(wait, 3),
        )

    def _trip(self, now: float) -> None:
        cooldown = min(self.policy.cooldown * 2**self.trips, self.policy.max_cooldown)
        self.trips += 1
        self.state = BreakerState.OPEN
        self._probe_in_flight = False
        self._open_until = now + cooldown

    def _note(self, now: float, *, ok: bool) -> None:
        self._outcomes.append((now, ok))
        self._window_failures += not ok
        self._prune(now)

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window
        while self._outcomes and self._outcomes[0][0] < horizon:
            _, ok = self._outcomes.popleft()
            self._window_failures -= not ok
