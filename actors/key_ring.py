"""The key ring: who may use this relaybox. Client keys (`relaybox keys`), checked on every request
once any exist.

With no key in force, relaybox serves everyone, which it only allows on loopback (or with
`--insecure-no-auth`, see `web/cli.py`). Once a key exists, every endpoint except `/ping`,
`/health` and the dashboard's files needs one (`Authorization: Bearer KEY` or `x-api-key`), and
changing settings (`PUT`/`POST`/`DELETE` under `/api/`, feedback aside) needs an admin key.

The key ring is an actor that re-reads the keys from storage every `refresh` seconds, so a key
created or revoked with `relaybox keys` (or on another instance) takes effect within that time,
without a database call on the request path. If storage cannot be read, the last keys read stay
in force; if it never could be, requests from beyond loopback are refused rather than let through.
A key's per-minute limits are counted in the database, in batches (`actors/key_minutes.py`).
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio
from relaybox.actors.key_minutes import KeyMinutes
from relaybox.protocol.errors import RelayError
from relaybox.protocol.keys import key_hash, presented_key
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import ApiKey

log = logging.getLogger("relaybox.auth")

# A key's request limit counts model calls only (not the dashboard's polling of /api).
LIMITED_PREFIX = "/v1/"
# A database that does not count in time lets the request through: limits never block on it.
COUNT_TIMEOUT = 0.1
OPEN_PATHS = ("/", "/ping", "/health")
OPEN_PREFIXES = ("/dashboard",)  # the page and its files; its API calls carry the key
MEMBER_WRITES = ("/api/feedback",)  # rating an answer is not changing settings


@attrs.frozen
class KeyRingStatistics:
    keys_in_force: int
    loaded: bool  # the keys have been read from storage at least once
    refused: int  # requests refused (401, 403, or 503 while the keys could not be read)
    limited: int  # requests refused by a key's per-minute limit
    uncounted: int  # requests let through because the database did not count them in time
    count_writes: int


class KeyRing:
    kind = "keys"
    name = "keys"

    def __init__(
        self,
        storage: Storage,
        *,
        exposed: bool = False,
        refresh: float = 2.0,
        timeout: float = 2.0,
        fail_open: bool = True,
    ) -> None:
        self.storage = storage
        self.exposed = exposed  # serving beyond loopback
        # A database that does not count a request in time: let it through (True), or refuse it.
        self.fail_open = fail_open
        self.refresh = refresh
        self.timeout = timeout
        self.loaded = False
        self.refused = 0
        self.limited = 0  # requests refused by a key's per-minute limit
        self.uncounted = 0  # requests let through because the database did not count them in time
        self._by_hash: dict[str, ApiKey] = {}
        self._reading_failed = False
        self.minutes = KeyMinutes(storage, timeout=timeout)
        self.count_timeout = COUNT_TIMEOUT
        self._nursery: trio.Nursery | None = None  # where the minutes' counts are written

    @property
    def active(self) -> bool:
        """Whether any key is in force (then every request needs one)."""
        return bool(self._by_hash)

    def in_force(self) -> list[ApiKey]:
        return sorted(self._by_hash.values(), key=lambda k: k.name)

    async def load(self) -> None:
        with trio.move_on_after(self.timeout):
            try:
                keys = await self.storage.api_keys()
            except StorageError as error:
                if not self._reading_failed:  # once per outage, not every refresh
                    log.warning("cannot read the API keys (the last ones read stay in force): %s", error)
                self._reading_failed = True
                return
            self._by_hash = {k.key_hash: k for k in keys if k.revoked_at is None}
            self.loaded = True
            self._reading_failed = False

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.load()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    await trio.sleep(self.refresh)
                    await self.load()
        finally:
            self._nursery = None

    async def on_crash(self, error: BaseException) -> None:
        return None

    def on_give_up(self) -> None:
        log.error("the key ring stopped: keys created or revoked from now on are not seen")

    def statistics(self) -> KeyRingStatistics:
        return KeyRingStatistics(
            len(self._by_hash), self.loaded, self.refused, self.limited, self.uncounted, self.minutes.writes
        )

    async def within_limit(self, key: ApiKey | None, path: str, now: float) -> None:
        """Count a model call against its key's limits per minute, shared by every instance through
        the database; raises the 429 once the minute's requests or tokens are used up.

        Tokens are known only once an attempt is recorded, so a request is let in while the
        minute's recorded tokens are under the limit, and its own tokens count from then on (the
        limit can be overshot by the requests in flight when it is reached)."""
        if key is None or (key.rpm is None and key.tpm is None) or not path.startswith(LIMITED_PREFIX):
            return
        window = int(now // 60) * 60
        minute = None
        if self._nursery is not None:
            with trio.move_on_after(self.count_timeout):
                minute = await self.minutes.count(self._nursery, key.name, window)
        if minute is None:
            self.uncounted += 1
            if self.fail_open:
                return
            raise RelayError(
                503,
                f"the key {key.name!r}'s limits could not be counted in time (the database is slow); retry",
                "service_unavailable",
                code="limits_unchecked",
                retry_after=1,
            )
        # OpenAI's own 429 names the limit reached in its `type`: "requests" or "tokens".
        if key.rpm is not None and minute.requests > key.rpm:
            limit, used_up = "requests", f"may make {key.rpm} requests a minute"
        elif key.tpm is not None and minute.tokens >= key.tpm:
            limit, used_up = "tokens", f"may use {key.tpm} tokens a minute ({minute.tokens} used)"
        else:
            return
        self.limited += 1
        raise RelayError(
            429,
            f"the key {key.name!r} {used_up}; this minute's are used up",
            limit,
            code="rate_limit_exceeded",
            retry_after=max(1.0, window + 60 - now),
        )

    def check(
        self, method: str, path: str, authorization: str | None, x_api_key: str | None
    ) -> ApiKey | None:
        """The key a request was made with (None when none is needed); raises the 401/403 to send."""
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        if not self.loaded and self.exposed:  # keys never read: on loopback only this machine can ask
            self.refused += 1
            raise RelayError(
                503,
                "relaybox cannot read its API keys yet; retry shortly",
                "service_unavailable",
                code="keys_unavailable",
                retry_after=2,
            )
        if not self.active:
            return None
        presented = presented_key(authorization, x_api_key)
        key = None if presented is None else self._by_hash.get(key_hash(presented))
        if key is None:
            self.refused += 1
            message = "missing API key" if presented is None else "invalid or revoked API key"
            raise RelayError(
                401,
                f"{message}: send `Authorization: Bearer KEY` or `x-api-key: KEY` (create one with `relaybox keys create NAME`)",
                "invalid_request_error",
                code="invalid_api_key",
            )
        changes_settings = (
            path.startswith("/api/") and method in ("PUT", "POST", "DELETE") and path not in MEMBER_WRITES
        )
        if changes_settings and not key.admin:
            self.refused += 1
            raise RelayError(
                403,
                f"the key {key.name!r} may not change settings: that needs an admin key (relaybox keys create NAME --admin)",
                "permission_error",
                code="admin_key_required",
            )
        return key
