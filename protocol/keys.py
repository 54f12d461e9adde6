"""Client API keys: how they are made and recognised.

A key is 32 random bytes (URL-safe base64) behind a `rbx-` prefix. Only its SHA-256 is stored: a
key is random and long, so a fast hash is as good as a slow one here, and lets every request be
checked without a password-hashing cost.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "rbx-"


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
