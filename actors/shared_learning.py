"""What one instance of relaybox learned, shared with the others on the same database (and with
itself after a restart): the learned router's labels, and the quality promise's comparisons.

A `Shelf` holds one kind. What this instance learns waits on it until saved (every `SAVE_EVERY`
seconds, in one batch; the newest `unsaved_limit` are kept while the database is down). What the
instances saved is read back in id order: all of it at start, then every `refresh_seconds` the rows
added since, and handed over (to the router) except this instance's own. Nothing here delays a
request: a slow or missing database delays only the sharing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

log = logging.getLogger("relaybox.learning")

Item = TypeVar("Item")

LOAD_BATCH = 250  # rows per read, and per hand-over (each batch is learned in one go)
SAVE_EVERY = 1.0
STORAGE_TIMEOUT = 10.0
# Postgres hands out ids before commit, so a row may appear below the newest id already read.
ID_LOOKBACK = 200

Save = Callable[[list[Item], str, float], Awaitable[None]]  # (items, instance, now)
Load = Callable[[int, int], Awaitable[list[tuple[int, str, Item]]]]  # (after_id, limit)
HandOver = Callable[[tuple[Item, ...]], Awaitable[None]]


class Shelf(Generic[Item]):
    def __init__(
        self,
        what: str,
        instance: str,
        save: Save[Item],
        load: Load[Item],
        hand_over: HandOver[Item],
        *,
        unsaved_limit: int,
    ) -> None:
        self.what = what  # "routing labels": for the log
        self.instance = instance
        self._save = save
        self._load = load
        self._hand_over = hand_over
        self._unsaved_limit = unsaved_limit
        self._unsaved: deque[Item] = deque(maxlen=unsaved_limit)
        self._seen: deque[int] = deque(maxlen=4 * ID_LOOKBACK)
        self._last_id = 0
        self.saved = self.loaded = self.storage_errors = 0

    def add(self, items: tuple[Item, ...] | list[Item]) -> None:
        self._unsaved.extend(items)

    async def save_forever(self) -> None:
        while True:
            await trio.sleep(SAVE_EVERY)
            if not self._unsaved:
                continue
            items = list(self._unsaved)
            self._unsaved.clear()
            try:
                with trio.fail_after(STORAGE_TIMEOUT):
                    await self._save(items, self.instance, time.time())
            except Exception as error:  # storage down: the items wait (the newest kept), routing goes on
                self.storage_errors += 1
                log.warning("could not save %s: %s", self.what, error)
                self._unsaved = deque([*items, *self._unsaved], maxlen=self._unsaved_limit)
                continue
            self.saved += len(items)

    async def load_forever(self, refresh_seconds: float) -> None:
        """Everything storage keeps, at start; then, every `refresh_seconds`, what is new."""
        while True:
            try:
                with trio.fail_after(STORAGE_TIMEOUT):
                    await self._load_new()
            except Exception as error:
                self.storage_errors += 1
                log.warning("could not load %s: %s", self.what, error)
            await trio.sleep(refresh_seconds)

    async def _load_new(self) -> None:
        after = max(0, self._last_id - ID_LOOKBACK)
        while True:
            rows = await self._load(after, LOAD_BATCH)
            seen = set(self._seen)
            fresh = [(i, instance, item) for i, instance, item in rows if i not in seen]
            self._seen.extend(i for i, _, _ in fresh)
            theirs = tuple(item for _, instance, item in fresh if instance != self.instance)
            if theirs:
                await self._hand_over(theirs)
                self.loaded += len(theirs)
            if rows:
                after = rows[-1][0]
                self._last_id = max(self._last_id, after)
            if len(rows) < LOAD_BATCH:
                return
