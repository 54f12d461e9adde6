"""Responses kept for the Responses API (`store`, on by default): the newest in this process's
memory, every one in the database through the writer actor (`actors/response_writer.py`), so a
conversation continues by `previous_response_id` on any instance sharing the database.

A response belongs to the client key it was made with: only that key (or an admin key) continues,
reads or deletes it. Without keys everything belongs to "".
"""

from __future__ import annotations

import collections
import json
from typing import Any

import trio
from relaybox.actors.messages import KeepResponse
from relaybox.actors.response_writer import ResponseWriter
from relaybox.protocol.errors import RelayError
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import ApiKey, StoredResponse

# The newest responses kept in memory, by count and by their size.
MEMORY_ENTRIES = 2048
MEMORY_BYTES = 64 * 1024 * 1024
# The longest conversation continued by id (each turn is one stored response).
MAX_CHAIN = 1000
# How long an answer waits for its response to reach the database before it ends.
WRITE_WAIT = 1.0
# How long a continuation waits for the database to find the responses it continues.
READ_TIMEOUT = 2.0


def owner_of(key: ApiKey | None) -> str:
    return "" if key is None else key.name


def not_found(response_id: str, param: str | None = None) -> RelayError:
    status = 400 if param else 404
    return RelayError(
        status, f"no stored response with id {response_id!r}", code="response_not_found", param=param
    )


class ResponseStore:
    def __init__(self, storage: Storage, writer: ResponseWriter | None) -> None:
        self.storage = storage
        self.writer = writer  # None: responses are kept in this process's memory only
        self._memory: collections.OrderedDict[str, StoredResponse] = collections.OrderedDict()
        self._bytes = 0

    async def keep(self, row: StoredResponse) -> None:
        self._remember(row)
        if self.writer is None:
            return
        message = KeepResponse(row)
        if self.writer.keep(message):
            with trio.move_on_after(WRITE_WAIT):
                await message.written.wait()

    async def earlier_items(self, response_id: str, key: ApiKey | None) -> list[dict[str, Any]]:
        """The items of the conversation up to and including `response_id`, oldest first: what a
        request continuing it is answered after. A 400 when there is no such response for this key."""
        chain = await self._chain(response_id, key, "previous_response_id", whole=True)
        return [item for row in chain for item in json.loads(row.items)]

    async def response(self, response_id: str, key: ApiKey | None) -> dict[str, Any]:
        """The stored response object; a 404 when there is none for this key."""
        chain = await self._chain(response_id, key, None, limit=1)
        return json.loads(chain[-1].body)

    async def delete(self, response_id: str, key: ApiKey | None) -> None:
        owner = None if key is not None and key.admin else owner_of(key)
        remembered = self._memory.get(response_id)
        deleted = remembered is not None and owner in (None, remembered.owner)
        if deleted:
            self._forget(response_id)
        if self.writer is not None:
            deleted = await self._read(self.storage.delete_response(response_id, owner)) or deleted
        if not deleted:
            raise not_found(response_id)

    async def _chain(
        self,
        response_id: str,
        key: ApiKey | None,
        param: str | None,
        limit: int = MAX_CHAIN,
        *,
        whole: bool = False,
    ) -> list[StoredResponse]:
        """The conversation up to `response_id`, oldest first. `whole`: all of it, back to its first
        turn, or a 400 that says what is missing; a model answering part of a conversation as if it
        were all of it would answer something else than what was asked."""
        newest_first: list[StoredResponse] = []
        wanted: str | None = response_id
        while wanted is not None and len(newest_first) < limit:
            row = self._memory.get(wanted)
            if row is None:
                break
            newest_first.append(row)
            wanted = row.previous_id
        if wanted is not None and len(newest_first) < limit and self.writer is not None:
            older = await self._read(self.storage.response_chain(wanted, limit=limit - len(newest_first)))
            newest_first.extend(reversed(older))
        if not newest_first or not _may_read(newest_first[0], key):
            raise not_found(response_id, param)
        missing = newest_first[-1].previous_id
        if whole and missing is not None:
            raise self._cut_short(response_id, missing, len(newest_first) >= limit)
        return newest_first[::-1]

    def _cut_short(self, response_id: str, missing: str, too_long: bool) -> RelayError:
        if too_long:
            message = (
                f"the conversation up to {response_id!r} is longer than the {MAX_CHAIN:,} stored responses "
                "relaybox continues; send its history as input instead"
            )
            return RelayError(400, message, code="conversation_too_long", param="previous_response_id")
        kept = (
            f"this instance keeps only the newest {MEMORY_ENTRIES:,} responses, in memory ([log] prompts = none)"
            if self.writer is None
            else "it was deleted"
        )
        message = (
            f"the conversation up to {response_id!r} cannot be continued whole: its earlier response "
            f"{missing!r} is no longer stored ({kept}); send its history as input instead"
        )
        return RelayError(400, message, code="earlier_response_missing", param="previous_response_id")

    async def _read(self, query: Any) -> Any:
        try:
            with trio.fail_after(READ_TIMEOUT):
                return await query
        except (StorageError, trio.TooSlowError):
            raise RelayError(
                503,
                "the database holding stored responses did not answer in time",
                "service_unavailable",
                code="storage_unavailable",
                retry_after=5,
            ) from None

    def _remember(self, row: StoredResponse) -> None:
        self._forget(row.id)
        self._memory[row.id] = row
        self._bytes += _size(row)
        while len(self._memory) > MEMORY_ENTRIES or self._bytes > MEMORY_BYTES:
            self._forget(next(iter(self._memory)))

    def _forget(self, response_id: str) -> None:
        row = self._memory.pop(response_id, None)
        if row is not None:
            self._bytes -= _size(row)


def _may_read(row: StoredResponse, key: ApiKey | None) -> bool:
    return (key is not None and key.admin) or row.owner == owner_of(key)


def _size(row: StoredResponse) -> int:
    return len(row.items) + len(row.body)
