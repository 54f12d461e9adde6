"""What the recorder holds for storage: the records not yet written, and for each journal segment
how many of its records storage does not have yet, so a segment is deleted once it has them all.

Plain bookkeeping, no I/O: the recorder does the writing, and asks here what to write and what
may go."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs
from relaybox.storage.records import AttemptRecord


@attrs.frozen
class Held:
    """A record waiting for storage, and the journal segment it is in (None: the journal could not
    take it, and memory is all there is)."""

    record: AttemptRecord
    segment: Path | None


@attrs.frozen
class LetGo:
    segments: list[Path]  # to replay from the disk once storage is back
    records: int  # left to those segments
    dropped: int  # neither stored nor journaled, past the limit: lost


class HeldRecords:
    def __init__(self) -> None:
        self.held: list[Held] = []
        self._waiting: dict[Path, int] = {}  # segment -> its records not in storage yet

    def __len__(self) -> int:
        return len(self.held)

    def add(self, records: Iterable[AttemptRecord], segment: Path | None) -> None:
        added = [Held(record, segment) for record in records]
        self.held += added
        if segment is not None:
            self._waiting[segment] = self._waiting.get(segment, 0) + len(added)

    def batch(self, size: int) -> tuple[list[Held], list[Held]]:
        """The next records to write, and the list they came from (to hand back to `stored`)."""
        return self.held, self.held[:size]

    def stored(self, source: list[Held], batch: list[Held]) -> None:
        """Storage has `batch`. If `let_go` swapped the list meanwhile (an insert in flight while
        storage fell behind), the batch leaves the old list, whose segments are replayed anyway."""
        del source[: len(batch)]
        for held in batch:
            if held.segment in self._waiting:
                self._waiting[held.segment] -= 1

    def complete(self, except_segment: Path | None) -> list[Path]:
        """The segments storage now holds all of, but `except_segment` (the one still being
        appended to); forgotten here, for the caller to delete."""
        done = [s for s, waiting in self._waiting.items() if waiting <= 0 and s != except_segment]
        for segment in done:
            del self._waiting[segment]
        return done

    def let_go(self, keep_at_most: int) -> LetGo:
        """Storage is not keeping up: every journaled record is left to its segment, to be replayed
        from the disk; those the journal could not take stay, `keep_at_most` of the latest."""
        segments = list(self._waiting)
        self._waiting = {}
        unjournaled = [held for held in self.held if held.segment is None]
        records = len(self.held) - len(unjournaled)
        dropped = max(0, len(unjournaled) - keep_at_most)
        self.held = unjournaled[dropped:]
        return LetGo(segments, records, dropped)

    def unjournaled(self) -> int:
        return sum(1 for held in self.held if held.segment is None)
