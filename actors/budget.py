"""The budget actor: paid attempts reserve their estimated cost before they run.

Budgets (daily, weekly, monthly) live in storage, so several relaybox instances share them;
the reservation itself is atomic in the database (see Storage.reserve). This actor keeps the
budget configuration fresh, answers reservations (each in its own task, so one slow database
call does not queue the others) and settles them afterwards, each after its own reservation: an
attempt whose client hung up settles while its reservation may still be under way. If storage cannot be asked, the
attempt goes ahead and the miss is counted and logged: a database hiccup must not stop traffic.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import attrs
import trio
from relaybox.actors.mailbox import Mailbox, MailboxFull, MailboxStatistics, NoReply, ask
from relaybox.actors.messages import BudgetMessage, Job, Reserve, Settle
from relaybox.protocol import tokens
from relaybox.protocol.chat import EmbeddingRequest, ImageRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import Usage
from relaybox.protocol.routing.pricing import Pricer
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import Budget, Reservation, Window

log = logging.getLogger("relaybox.budget")

# How long an attempt waits, at most, for room to settle its budget hold.
SETTLE_WAIT = 2.0
PERIOD_SECONDS = {"daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 30 * 86400.0}


@attrs.frozen
class BudgetStatistics:
    mailbox: MailboxStatistics
    budgets: tuple[Budget, ...]
    pressure: float | None
    refused: int
    unchecked: int


class BudgetActor:
    kind = "budget"
    name = "budget"

    def __init__(
        self,
        storage: Storage,
        *,
        refresh: float = 2.0,
        timeout: float = 2.0,
        mailbox: int = 4096,
        fail_open: bool = True,
    ) -> None:
        self.storage = storage
        self.refresh = refresh
        self.timeout = timeout
        self.mailbox: Mailbox[BudgetMessage] = Mailbox(mailbox)
        self.budgets: list[Budget] = []
        self.pressure: float | None = (
            None  # the highest share of any enabled budget spent (0.8: prefer cheap)
        )
        # Storage that cannot be asked in time: let the attempt go ahead (True), or refuse it.
        self.fail_open = fail_open
        self.unchecked = 0  # attempts that went ahead, or were refused, unchecked
        self.refused = 0
        self._reading_failed = False
        self._held: set[str] = set()  # reservations placed and not yet settled
        # Reservations being placed, each with the Settle that arrived meanwhile (if one did).
        self._reserving: dict[str, Settle | None] = {}

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(
            self.mailbox.statistics(), tuple(self.budgets), self.pressure, self.refused, self.unchecked
        )

    @property
    def enforcing(self) -> bool:
        """Whether any budget is on. When none is, attempts need not ask (a round trip to this
        actor per paid request otherwise); a budget switched on is seen within `refresh`, as
        reservations see it."""
        return any(b.enabled for b in self.budgets)

    def windows(self, now: float) -> list[Window]:
        return [_window(b.period, b.limit_usd, now) for b in self.budgets if b.enabled]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._refresh_loop)
                task_status.started()
                async for message in self.mailbox.receive:
                    if isinstance(message, Reserve):
                        # Marked here, in mailbox order: its Settle, however soon it follows,
                        # finds the reservation under way and waits for it.
                        self._reserving[message.reservation_id] = None
                        nursery.start_soon(self._reserve, message)
                    elif message.reservation_id in self._reserving:
                        self._reserving[message.reservation_id] = message
                    else:
                        nursery.start_soon(self._settle, message)
        finally:
            # Stopping (after the providers): settle what they reported on their way out.
            with trio.CancelScope(shield=True), trio.move_on_after(self.timeout * 5):
                for message in self.mailbox.drain():
                    if isinstance(message, Settle):
                        await self._settle(message)
                    else:
                        _reply(message, self._unchecked_answer())

    async def on_crash(self, error: BaseException) -> None:
        self._grant_queued()

    def on_give_up(self) -> None:
        log.error("the budget actor stopped for good: budgets are no longer enforced")
        self._grant_queued()

    def _grant_queued(self) -> None:
        """Nobody must wait on a budget actor that is not running: queued reservations go ahead."""
        for message in self.mailbox.drain():
            if isinstance(message, Reserve):
                self.unchecked += 1
                _reply(message, self._unchecked_answer())

    async def _refresh_loop(self) -> None:
        while True:
            with trio.move_on_after(self.timeout):
                try:
                    self.budgets = await self.storage.budgets()
                    now = time.time()
                    shares = [
                        await self.storage.budget_spent(w.since, now) / w.limit_usd
                        for w in self.windows(now)
                        if w.limit_usd > 0
                    ]
                    self.pressure = max(shares) if shares else None
                    self._reading_failed = False
                except StorageError as error:
                    if not self._reading_failed:  # once per outage, not every refresh
                        log.warning("cannot read budgets: %s", error)
                    self._reading_failed = True
            await trio.sleep(self.refresh)

    async def _reserve(self, message: Reserve) -> None:
        answer = Reservation(True)
        try:
            now = time.time()
            windows = self.windows(now)
            key = message.key_budget
            if key is not None:
                windows.append(_window(key.period, key.limit_usd, now, key.key_name))
            if windows:
                with trio.move_on_after(self.timeout) as scope:
                    try:
                        answer = await self.storage.reserve(
                            message.reservation_id,
                            message.amount,
                            windows,
                            now,
                            None if key is None else key.key_name,
                        )
                        if answer.granted:
                            self._held.add(message.reservation_id)
                    except StorageError as error:
                        answer = self._unchecked(error)
                if scope.cancelled_caught:
                    answer = self._unchecked("timed out")
                if not answer.granted:
                    self.refused += 1
        finally:
            _reply(message, answer)  # even when cancelled: the asker must not wait forever
            settle = self._reserving.pop(message.reservation_id, None)
        if settle is not None:
            await self._settle(settle)

    def _unchecked(self, why: object) -> Reservation:
        self.unchecked += 1
        outcome = "the attempt goes ahead" if self.fail_open else "the attempt is refused"
        log.warning("budget not checked (storage unavailable: %s); %s", why, outcome)
        return self._unchecked_answer()

    def _unchecked_answer(self) -> Reservation:
        return Reservation(True) if self.fail_open else Reservation(False, unchecked=True)

    async def _settle(self, message: Settle) -> None:
        # Only holds this actor placed (most attempts never reserve: no budget, a free provider),
        # but every one of them, even if the budgets were switched off meanwhile.
        if message.reservation_id not in self._held:
            return
        self._held.discard(message.reservation_id)
        with trio.move_on_after(self.timeout * 5):
            try:
                await self.storage.settle(message.reservation_id, message.amount)
            except StorageError as error:
                log.warning("cannot settle a budget reservation: %s", error)


def _window(period: str, limit_usd: float, now: float, key_name: str | None = None) -> Window:
    return Window(period, now - PERIOD_SECONDS[period], limit_usd, key_name)


def _reply(message: Reserve, answer: Reservation) -> None:
    """The reservation's last word: its answer, and the channel closed behind it."""
    with (
        message.reply,
        contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        message.reply.send_nowait(answer)


class BudgetHold:
    """One attempt's reservation: its estimated cost held against the budgets before it runs (a
    paid provider, and a budget on or the client key's own), and settled to its real cost after."""

    def __init__(self, budget: BudgetActor, pricer: Pricer | None) -> None:
        self.budget = budget
        self.pricer = pricer
        self.reservation_id: str | None = None
        self.estimate = 0.0

    async def reserve(self, job: Job) -> None:
        """Hold the attempt's estimate; raise OVER_BUDGET when it does not fit. A budget actor that
        does not answer in time lets the attempt go ahead."""
        key_budget = job.state.key_budget
        if self.pricer is None or getattr(self.pricer, "free", False):
            return
        if not self.budget.enforcing and key_budget is None:
            return
        request = job.request
        if isinstance(request, ImageRequest):
            usage = Usage(0, 0, images=request.n)
        elif isinstance(request, EmbeddingRequest):
            usage = Usage(tokens.count_inputs(request), 0)
        else:
            usage = Usage(tokens.high_estimate(request), request.max_tokens or 1024)
        estimate = self.pricer(job.candidate.model, usage)
        if not estimate:
            return
        # Known before asking: if this task is cancelled mid-ask, the hold is still released.
        reservation_id = self.reservation_id = str(uuid.uuid4())
        self.estimate = estimate
        answer = None
        with trio.move_on_after(self.budget.timeout * 2):
            try:
                answer = await ask(
                    self.budget.mailbox, lambda reply: Reserve(reservation_id, estimate, reply, key_budget)
                )
            except (MailboxFull, NoReply):
                answer = None
        if answer is None and not self.budget.fail_open:
            answer = Reservation(False, unchecked=True)
        if answer is not None and answer.unchecked:
            raise ProviderFailure(
                FailureKind.OVER_BUDGET,
                "the budget could not be checked in time (the database is slow or down), and "
                "[budget] when_storage_slow = deny; free providers still serve",
            )
        if answer is not None and not answer.granted:
            whose = "" if answer.key_name is None else f"key {answer.key_name!r}'s "
            raise ProviderFailure(
                FailureKind.OVER_BUDGET,
                f"the {whose}{answer.period} budget of ${answer.limit_usd:.2f} is spent "
                f"(${answer.spent_usd:.2f}); free providers still serve",
            )

    async def settle(self, cost: float) -> None:
        """Delivered even to a busy budget actor (waiting a moment for room, shielded: this runs
        as the attempt ends, cancelled or not); an unsettled hold would count until it expires."""
        if self.reservation_id is None:
            return
        settle = Settle(self.reservation_id, cost)
        try:
            self.budget.mailbox.tell(settle)
        except MailboxFull:
            with trio.move_on_after(SETTLE_WAIT, shield=True):
                await self.budget.mailbox.send(settle)
