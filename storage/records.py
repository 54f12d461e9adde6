"""What storage keeps: one row per attempt (the request log, `task_logs`) and how one is made from an
attempt, budgets and their reservations, provider settings, cached answers, client keys, the
learned router's labels."""

from __future__ import annotations

import time
import uuid
from typing import Any

import attrs
from relaybox.protocol.chat import EmbeddingRequest, ImageRequest, ModelRequest
from relaybox.protocol.events import Usage
from relaybox.protocol.keys import KeyBudget
from relaybox.protocol.routing.learned import Label, features_from_bytes, features_to_bytes
from relaybox.protocol.routing.progress import DispatchState
from relaybox.protocol.routing.promise import Comparison


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


def group_id(request_id: str) -> str:
    """The UUID of a request (its id ends in 32 hex digits), linking its attempts' records."""
    try:
        return str(uuid.UUID(request_id[-32:]))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, request_id))


def attempt_record(
    provider: str,
    model: str,
    request: ModelRequest,
    state: DispatchState,
    *,
    status: str,
    usage: Usage | None,
    latency_ms: float,
    ttft_ms: float | None,
    heuristic_score: int | None = None,
    baseline_cost_usd: float | None = None,
    error: str | None = None,
) -> AttemptRecord:
    """The record of one attempt of a request at `provider`/`model`, where `state` says how the
    request got there. `status`: "success", "cancelled", or the failure kind."""
    usage = usage or Usage(0, 0)
    if isinstance(request, ImageRequest):
        summary, messages = request.prompt, 1
    elif isinstance(request, EmbeddingRequest):
        first = request.inputs[0]
        summary = first if isinstance(first, str) else f"{len(first)} token ids"
        messages = len(request.inputs)
    else:
        users = [m for m in request.messages if m.role == "user"]
        summary, messages = (users[-1].text() if users else ""), len(request.messages)
    compressed = state.tokens_saved is not None
    return AttemptRecord(
        id=str(uuid.uuid4()),
        created_at=time.time(),
        request_group_id=group_id(state.request_id),
        attempt=state.attempts,
        provider=provider,
        model_selected=model,
        model_requested=request.model,
        router_reason=state.route.reason[:300],
        task_category=state.category,
        complexity_score=state.complexity,
        prompt_summary=summary[:500],
        message_count=messages,
        status=status,
        tokens_in=usage.prompt_tokens,
        tokens_out=usage.completion_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_usd=usage.cost_usd or 0.0,
        baseline_cost_usd=baseline_cost_usd,
        latency_ms=round(latency_ms),
        ttft_ms=None if ttft_ms is None else round(ttft_ms),
        streaming=request.stream,
        fallback_used=bool(state.failures),
        client=state.client,
        cli_success=status in ("success", "shadow", "judge"),
        heuristic_score=heuristic_score,
        error_message=None if error is None else error[:500],
        ab_test=state.ab_test,
        ab_variant=state.ab_variant,
        # The prompt as sent is what the upstream counted; before it, what compression saved more.
        tokens_before_compression=usage.prompt_tokens + state.tokens_saved if compressed else None,
        tokens_after_compression=usage.prompt_tokens if compressed else None,
    )


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
    unchecked: bool = False  # refused because storage could not be asked (when_storage_slow = "deny")


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
class StoredResponse:
    """A response kept for the Responses API: its own turn's items (the input it was sent, then its
    output) as a JSON array, the response object as JSON, and the response it continued."""

    id: str
    previous_id: str | None
    owner: str  # the client key's name ("" without keys): only its owner continues or reads it
    created_at: float
    items: str
    body: str


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
class KeyMinute:
    """A key's use of one minute, summed over every instance: requests (this one included) and
    tokens of the attempts recorded so far."""

    requests: int
    tokens: int


def label_row(label: Label, instance: str, created_at: Any) -> tuple[Any, ...]:
    """A label as a `routing_labels` row (from `created_at` on: the id is the database's)."""
    return (
        created_at,
        instance,
        label.provider,
        label.model,
        label.tier,
        features_to_bytes(label.features),
        label.good,
        label.weight,
        label.source,
        label.request_id,
    )


def stored_label(row: tuple[Any, ...]) -> tuple[int, str, Label]:
    """(id, instance, label) from a `routing_labels` row read as
    id, instance, provider, model, tier, features, good, weight, source, request_id."""
    label_id, instance, provider, model, tier, data, good, weight, source, request_id = row
    label = Label(
        provider,
        model,
        tier,
        features_from_bytes(bytes(data)),
        float(good),
        source,
        float(weight),
        request_id,
    )
    return int(label_id), instance, label


def comparison_row(comparison: Comparison, instance: str, created_at: Any) -> tuple[Any, ...]:
    """A comparison as a `routing_comparisons` row (from `created_at` on)."""
    return (
        created_at,
        instance,
        comparison.score,
        comparison.served_strong,
        comparison.cheap_good,
        comparison.strong_good,
        comparison.cheap,
        comparison.strong,
        comparison.request_id,
    )


def stored_comparison(row: tuple[Any, ...]) -> tuple[int, str, Comparison]:
    """(id, instance, comparison) from a `routing_comparisons` row read as id, instance, score,
    served_strong, cheap_good, strong_good, cheap, strong, request_id."""
    comparison_id, instance, score, served_strong, cheap_good, strong_good, cheap, strong, request_id = row
    comparison = Comparison(
        float(score),
        bool(served_strong),
        bool(cheap_good),
        bool(strong_good),
        cheap,
        strong,
        request_id or "",
    )
    return int(comparison_id), instance, comparison
