"""A provider's health, its running totals per model, and the frozen snapshot it gives of itself
(`ProviderActor.statistics`, read by /actors, /health, /metrics and the settings API)."""

from __future__ import annotations

import enum
from typing import Any

import attrs
from relaybox.actors.breaker import BreakerStatistics
from relaybox.actors.mailbox import MailboxStatistics
from relaybox.protocol.events import Usage


class Health(enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    NEEDS_LOGIN = "needs-login"


@attrs.frozen
class ModelTotals:
    """One model's attempts by outcome, tokens, cost and time to first output, since start."""

    attempts: dict[str, int]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    ttft_seconds: float
    ttft_count: int


@attrs.define
class RunningTotals:
    attempts: dict[str, int] = attrs.field(factory=dict)  # by outcome
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    ttft_seconds: float = 0.0
    ttft_count: int = 0

    def add(self, outcome: str, usage: Usage | None, ttft: float | None) -> None:
        """One attempt: `outcome` is "success", "cancelled" or the failure kind; `ttft` in seconds."""
        self.attempts[outcome] = self.attempts.get(outcome, 0) + 1
        if usage is not None:
            self.tokens_in += usage.prompt_tokens
            self.tokens_out += usage.completion_tokens
            self.cost_usd += usage.cost_usd or 0.0
        if ttft is not None:
            self.ttft_seconds += ttft
            self.ttft_count += 1

    def statistics(self) -> ModelTotals:
        return ModelTotals(
            dict(self.attempts),
            self.tokens_in,
            self.tokens_out,
            self.cost_usd,
            self.ttft_seconds,
            self.ttft_count,
        )


@attrs.frozen
class ProviderStatistics:
    health: Health
    accepting: bool  # would take a job now: running, not given up, breaker allowing
    mailbox: MailboxStatistics
    in_flight: int
    concurrency_limit: int
    idle_timeout_s: float
    breaker: BreakerStatistics
    completed: int
    failed: int
    last_failure: str | None
    transport: Any  # the transport's own frozen snapshot
    totals: dict[str, ModelTotals]  # by model
    background: Any  # relaybox's own attempts on spare capacity (`BackgroundStatistics`)
