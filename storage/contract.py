"""The storage contract both back ends implement (and the contract test suite checks)."""

from __future__ import annotations

from typing import Any, Protocol

from relaybox.protocol.routing.evidence import RollupRow
from relaybox.protocol.routing.learned import Label
from relaybox.protocol.routing.promise import Comparison
from relaybox.storage.records import (
    ApiKey,
    AttemptRecord,
    Budget,
    CachedRow,
    KeyMinute,
    ProviderSetting,
    Reservation,
    StoredResponse,
    Window,
)


class StorageError(Exception):
    """The database could not do what was asked (down, unreachable, refused)."""


class Storage(Protocol):
    name: str

    async def migrate(self) -> int:
        """Bring the schema to the newest version this relaybox knows; return the database's
        version, which is higher when a newer relaybox has migrated it (see `relaybox doctor`).
        Idempotent."""
        ...

    async def insert_records(self, records: list[AttemptRecord]) -> int:
        """Insert, ignoring ids already present; return how many were new."""
        ...

    async def record_count(self) -> int: ...

    async def recent(
        self,
        *,
        limit: int = 50,
        provider: str | None = None,
        model: str | None = None,
        category: str | None = None,
        status: str | None = None,
        group: str | None = None,
        client: str | None = None,
    ) -> list[AttemptRecord]:
        """The latest attempts, newest first, matching every filter given (`client`: one client's)."""
        ...

    async def set_rating(self, request_group_id: str, rating: int, client: str | None = None) -> bool:
        """Rate the answer of a request (its last attempt); False if no such request (with
        `client`: no such request of that client's)."""
        ...

    async def stats(self, *, days: int, now: float) -> dict[str, Any]: ...

    async def routing_evidence(self, *, since: float) -> list[RollupRow]:
        """The rollup's outcome counts per day, provider, model, category and status since `since`."""
        ...

    async def add_routing_labels(self, labels: list[Label], *, instance: str, now: float, keep: int) -> None:
        """Store the learned router's labels, written by `instance`; keep only the newest `keep`."""
        ...

    async def routing_labels(self, *, after_id: int, limit: int) -> list[tuple[int, str, Label]]:
        """Labels with an id above `after_id`, oldest first, at most `limit`: (id, instance, label)."""
        ...

    async def add_routing_comparisons(
        self, comparisons: list[Comparison], *, instance: str, now: float, keep: int
    ) -> None:
        """Store the quality promise's blind comparisons, made by `instance`; keep the newest `keep`."""
        ...

    async def routing_comparisons(self, *, after_id: int, limit: int) -> list[tuple[int, str, Comparison]]:
        """Comparisons with an id above `after_id`, oldest first, at most `limit`: (id, instance, it)."""
        ...

    async def ab_results(self, *, since: float) -> list[dict[str, Any]]:
        """Per A/B test and variant: attempts, successes, cost, latency, heuristic score, ratings."""
        ...

    async def budgets(self) -> list[Budget]: ...

    async def put_budget(self, budget: Budget) -> None: ...

    async def spent_since(self, since: float) -> float: ...

    async def reserve(
        self,
        reservation_id: str,
        amount: float,
        windows: list[Window],
        now: float,
        key_name: str | None = None,
    ) -> Reservation:
        """Atomically: if every window's spending plus `amount` fits its limit, hold `amount`
        (tagged with the client key it is spent for, whose own budget windows count only it)."""
        ...

    async def settle(self, reservation_id: str, amount: float) -> None:
        """Replace a reservation's estimate with what the attempt really cost (0 if it failed)."""
        ...

    async def budget_spent(self, since: float, now: float, key_name: str | None = None) -> float: ...

    async def provider_settings(self) -> list[ProviderSetting]: ...

    async def put_provider_setting(self, setting: ProviderSetting) -> None: ...

    async def cached_answer(self, key: str, now: float) -> CachedRow | None:
        """The response cache's shared tier: an answer stored under `key` that has not expired."""
        ...

    async def put_cached_answer(self, row: CachedRow, key: str) -> None:
        """Store (or replace) an answer, and drop the expired ones."""
        ...

    async def put_responses(self, rows: list[StoredResponse], *, expire_before: float) -> None:
        """Keep responses for the Responses API, and drop those stored before `expire_before`."""
        ...

    async def response_chain(self, response_id: str, *, limit: int) -> list[StoredResponse]:
        """The response `response_id` and those it continues, oldest first (at most `limit`); empty
        when there is no such response."""
        ...

    async def delete_response(self, response_id: str, owner: str | None) -> bool:
        """Delete a stored response (only its owner's, unless `owner` is None); False if none was."""
        ...

    async def create_key(self, key: ApiKey) -> bool:
        """Store a new client key; False if the name is taken (by a key not revoked)."""
        ...

    async def api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, by name."""
        ...

    async def revoke_key(self, name: str, now: float) -> bool:
        """False if there is no such key still in force."""
        ...

    async def count_key_requests(self, name: str, window_start: int, count: int) -> KeyMinute:
        """Count `count` requests of a key in the minute starting at `window_start`; the minute's
        requests so far (these included) and the tokens its recorded attempts used
        (`insert_records` adds them). Windows older than a few minutes are dropped on the way."""
        ...

    async def aclose(self) -> None: ...
