"""The error taxonomy: why an attempt failed, and what the client is told.

`ProviderFailure` is raised by transports and carries a `FailureKind`; the kind decides
whether the failure feeds the circuit breaker and how the provider's health changes.
`RelayError` is what crosses to the client, rendered in OpenAI's error format.
"""

from __future__ import annotations

import enum
import re

import attrs


class FailureKind(enum.Enum):
    TRANSPORT = "transport"  # refused, reset, malformed stream
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"  # upstream 5xx, 529 overloaded
    RATE_LIMITED = "rate_limited"  # upstream 429 or a subscription usage limit
    AUTH = "auth"  # bad key, expired login
    REJECTED = "rejected"  # upstream 4xx: it refused this request
    UNSUPPORTED = "unsupported"  # this provider cannot take this request (e.g. images)
    CRASH = "crash"  # the provider actor crashed while holding the job
    SATURATED = "saturated"  # mailbox full
    UNAVAILABLE = "unavailable"  # breaker open, provider down or restarting
    OVER_BUDGET = "over_budget"  # a paid provider while a budget is spent
    POOR_ANSWER = "poor_answer"  # a held answer the scorer rejected: a stronger model gets to try

    @property
    def feeds_breaker(self) -> bool:
        """Transport-level trouble trips the breaker; a refused request says nothing of health."""
        return self in _BREAKER_KINDS


_BREAKER_KINDS = frozenset({FailureKind.TRANSPORT, FailureKind.TIMEOUT, FailureKind.SERVER_ERROR})


@attrs.define(auto_exc=True)
class ProviderFailure(Exception):
    kind: FailureKind
    message: str
    upstream_status: int | None = None
    # Seconds until the upstream will take requests again, when it says (Retry-After).
    retry_after: float | None = None


@attrs.define(auto_exc=True)
class RelayError(Exception):
    """An error as the client sees it: HTTP status plus OpenAI's error object."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def router_down() -> RelayError:
    return RelayError(
        503,
        "relaybox's router is down; see /actors",
        "service_unavailable",
        code="router_down",
        retry_after=5,
    )


@attrs.frozen
class AttemptFailure:
    """One failed attempt of a request, as the router remembers it."""

    provider: str
    model: str
    kind: FailureKind
    message: str
    upstream_status: int | None = None
    retry_after: float | None = None


# A refusal worth trying elsewhere: the request may fit another model even though it did not fit this one.
_MODEL_SPECIFIC_REFUSAL = re.compile(
    r"context|too long|too many tokens|maximum.{0,20}length|not support|unsupported|model.{0,20}not found|"
    r"does not exist|content.{0,10}(?:policy|filter)",
    re.IGNORECASE,
)


def worth_retrying_elsewhere(failure: AttemptFailure) -> bool:
    """Whether another candidate may succeed where this one failed. A bad request (400, 422) is
    the client's to fix and would fail everywhere, unless the refusal is about this model."""
    if failure.kind is not FailureKind.REJECTED or failure.upstream_status not in (400, 422):
        return True
    return bool(_MODEL_SPECIFIC_REFUSAL.search(failure.message))


def final_error(attempts: list[AttemptFailure]) -> RelayError:
    """The client's error once every candidate has failed before answering.

    All candidates busy or rate limited is a 429 (come back later); an upstream that refused the
    request itself passes its 4xx through; anything else means the providers are down: 503.
    """
    if not attempts:
        return RelayError(503, "no provider is available for this model", "service_unavailable")
    summary = "; ".join(f"{a.provider}/{a.model}: {a.kind.value}: {a.message}" for a in attempts)
    retry_afters = [a.retry_after for a in attempts if a.retry_after is not None]
    retry_after = max(1.0, min(retry_afters)) if retry_afters else 1.0
    kinds = {a.kind for a in attempts}
    if kinds == {FailureKind.OVER_BUDGET}:
        return RelayError(
            429,
            f"the budget is spent and no free provider can take this request ({summary})",
            "rate_limit_error",
            code="budget_exceeded",
            retry_after=retry_after,
        )
    if kinds <= {FailureKind.SATURATED, FailureKind.RATE_LIMITED, FailureKind.OVER_BUDGET}:
        return RelayError(
            429,
            f"every candidate is busy or rate limited ({summary})",
            "rate_limit_error",
            code="rate_limited",
            retry_after=retry_after,
        )
    if kinds == {FailureKind.UNSUPPORTED}:
        return RelayError(
            400,
            f"no candidate can take this request ({summary})",
            "invalid_request_error",
            code="capability_missing",
        )
    last = attempts[-1]
    if last.kind is FailureKind.REJECTED and last.upstream_status is not None:
        return RelayError(
            last.upstream_status if 400 <= last.upstream_status < 500 else 400,
            f"upstream refused the request ({summary})",
            "invalid_request_error",
            code="upstream_rejected",
        )
    return RelayError(
        503,
        f"every candidate failed ({summary})",
        "service_unavailable",
        code="providers_unavailable",
        retry_after=retry_after,
    )
