"""What storage keeps: one row per attempt (seed 001's task_logs, extended), budgets, provider settings."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class AttemptRecord:
    """One attempt of one request. `id` is unique per attempt, so writing a record twice
    (a journal replayed after a crash) changes nothing."""

    id: str
    created_at: float  # Unix seconds
    request_group_id: str
    attempt: int
    provider: str
    model_selected: str
    model_requested: str | None = None
    router_reason: str | None = None
    task_category: str = "other"
    complexity_score: int = 0
    prompt_summary: str | None = None
    message_count: int = 0
    status: str = "success"  # "success", "cancelled", or the failure kind
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float | None = None
    latency_ms: int = 0
    ttft_ms: int | None = None
    streaming: bool = False
    fallback_used: bool = False
    client: str | None = None
    tokens_before_compression: int | None = None
    tokens_after_compression: int | None = None
    cache_hit: bool = False
    budget_remaining_usd: float | None = None
    cli_success: bool = True
    heuristic_score: int | None = None
    user_rating: int | None = None
    error_message: str | None = None
    ab_test: str | None = None
    ab_variant: str | None = None  # "baseline" or "challenger"

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptRecord:
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


COLUMNS = tuple(f.name for f in attrs.fields(AttemptRecord))


@attrs.frozen
class Budget:
    period: str  # "daily", "weekly", "monthly"
    limit_usd: float
    enabled: bool


@attrs.frozen
class ProviderSetting:
    provider_id: str
    display_name: str
    enabled: bool = True
    priority: int = 0
    config: dict[str, Any] = attrs.field(factory=dict)


PERIODS = ("daily", "weekly", "monthly")


@attrs.frozen
class Window:
    """One enabled budget, as a reservation checks it: spending since `since` must stay within
    `limit_usd`. A key's budget (`key_name`) counts only that key's spending."""

    period: str
    since: float
    limit_usd: float
    key_name: str | None = None


@attrs.frozen
class Reservation:
    granted: bool
    # When refused: the budget that would be exceeded, and what it has spent.
    period: str | None = None
    limit_usd: float = 0.0
    spent_usd: float = 0.0
    key_name: str | None = None  # set when it was a client key's own budget


# A reservation never settled (its relaybox died mid-request) stops counting after this long.
RESERVATION_TTL = 900.0


@attrs.frozen
class CachedRow:
    """A cached answer as stored: its events as JSON (see `web/answer_cache.py`)."""

    answer: str
    request_id: str
    stored_at: float
    expires_at: float
    size: int


@attrs.frozen
class ApiKey:
    """A client key as stored: its SHA-256 and the first characters (to recognise it in a list);
    the key itself is shown once, when created, and kept nowhere."""

    name: str
    key_hash: str
    prefix: str
    admin: bool = False
    created_at: float = 0.0
    revoked_at: float | None = None
    rpm: int | None = None  # requests per minute, across every instance; None: no limit
    tpm: int | None = None  # tokens per minute (prompt and answer), across every instance
    budget_usd: float | None = None  # what the key may spend on paid providers per period
    budget_period: str | None = None  # "daily", "weekly" or "monthly"

    def budget(self) -> KeyBudget | None:
        if self.budget_usd is None or self.budget_period is None:
            return None
        return KeyBudget(self.name, self.budget_period, self.budget_usd)


# An `api_keys` row is an `ApiKey`'s fields, in order.
KEY_COLUMNS = tuple(f.name for f in attrs.fields(ApiKey))


@attrs.frozen
class KeyBudget:
    """A client key's own budget, carried with each of its requests to the attempts that reserve."""

    key_name: str
    period: str
    limit_usd: float


@attrs.frozen
class KeyMinute:
    """A key's use of one minute, summed over every instance: requests (this one included) and
    tokens of the attempts recorded so far."""

    requests: int
    tokens: int
