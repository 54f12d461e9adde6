"""Client API keys: how they are made and recognised.

A key is 32 random bytes (URL-safe base64) behind a `rbx-` prefix. Only its SHA-256 is stored: a
key is random and long, so a fast hash is as good as a slow one here, and lets every request be
checked without a password-hashing cost.
"""

from __future__ import annotations

import hashlib
import secrets

import attrs

PREFIX = "rbx-"
# How the request log names the client of a request made with a key.
CLIENT_PREFIX = "key:"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def shown_prefix(key: str) -> str:
    """Enough of a key to recognise it in a list, not enough to use it."""
    return key[: len(PREFIX) + 4]


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a client sent: `Authorization: Bearer KEY` (OpenAI style) or `x-api-key` (Anthropic style)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return x_api_key.strip() if x_api_key and x_api_key.strip() else None


@attrs.frozen
class KeyBudget:
    """A client key's own budget, carried with each of its requests to the attempts that reserve."""

    key_name: str
    period: str
    limit_usd: float


def client_of(key_name: str) -> str:
    return CLIENT_PREFIX + key_name


def key_name_of(client: str | None) -> str | None:
    """The key a logged request was made with, if it was made with one."""
    if client is None or not client.startswith(CLIENT_PREFIX):
        return None
    return client[len(CLIENT_PREFIX) :]


BUDGET_PERIODS = {"day": "daily", "daily": "daily", "week": "weekly", "weekly": "weekly"}
BUDGET_PERIODS |= {"month": "monthly", "monthly": "monthly"}


def parse_budget(text: str) -> tuple[float, str]:
    """`USD/PERIOD` as `keys create --budget` takes it ("20/month", "$5/day") -> (20.0, "monthly")."""
    amount, _, period = text.strip().partition("/")
    try:
        usd = float(amount.strip().removeprefix("$"))
    except ValueError:
        usd = -1.0
    if usd <= 0 or period.strip().lower() not in BUDGET_PERIODS:
        raise ValueError(
            f"{text!r} is not USD/PERIOD with a positive amount and a period of day, week or month"
        )
    return usd, BUDGET_PERIODS[period.strip().lower()]
