"""The record journal: append-only segment files on local disk, one record (JSON) a line.

Every record is written here before the answer it belongs to ends, so a record a client was
answered for survives relaybox being killed (once written, the operating system holds it), and
with `sync` a machine crash too (each write is flushed to the disk). A segment is deleted once
storage holds every record in it; the segments a crash leaves behind are replayed on the next
start, and record ids make writing a record twice harmless.

Blocking file I/O, called from a worker thread (`trio.to_thread`), except `append` without
`sync`, which only hands bytes to the operating system. One writer appends at a time; reading
and deleting touch only sealed segments.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, TextIO

import orjson
from relaybox.storage.records import COLUMNS, AttemptRecord

log = logging.getLogger("relaybox.recorder")

# A segment is sealed, and a new one begun, past this size: what a restart may replay again of
# records storage already holds.
SEGMENT_BYTES = 1024 * 1024
SUFFIX = ".jsonl"


def as_lines(records: Iterable[AttemptRecord]) -> bytes:
    return b"".join(orjson.dumps({c: getattr(r, c) for c in COLUMNS}) + b"\n" for r in records)


class Journal:
    def __init__(self, directory: Path, *, sync: bool = False, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.sync = sync
        self.segment_bytes = segment_bytes
        self.current: Path | None = None  # the segment being appended to
        self._file: BinaryIO | None = None
        self._next = 0

    def left_over(self) -> list[Path]:
        """The segments an earlier run left behind, oldest first. Called once, before any append."""
        if not self.directory.is_dir():
            return []
        segments = sorted(path for path in self.directory.iterdir() if path.suffix == SUFFIX)
        numbered = [int(path.stem) for path in segments if path.stem.isdigit()]
        self._next = max(numbered, default=-1) + 1
        return segments

    def append(self, lines: bytes) -> Path:
        """Write whole lines to the current segment (a new one when it is full); returns the
        segment they are in. Raises OSError when the disk will not take them."""
        if self._file is not None and self._file.tell() >= self.segment_bytes:
            self.seal()
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.current = self.directory / f"{self._next:012d}{SUFFIX}"
            self._next += 1
            self._file = self.current.open("ab")
            if self.sync:  # the new file's name must survive a crash too
                _sync_directory(self.directory)
        segment = self.current
        assert segment is not None
        try:
            self._file.write(lines)
            self._file.flush()  # to the operating system: it survives the process from here on
            if self.sync:
                os.fdatasync(self._file.fileno())
        except OSError:
            # A part may have been written: later lines go to a new segment, not onto a torn one.
            with contextlib.suppress(OSError):
                self.seal()
            self._file, self.current = None, None
            raise
        return segment

    def seal(self) -> None:
        """Close the current segment; the next append begins another."""
        if self._file is not None:
            self._file.close()
        self._file = None
        self.current = None

    @staticmethod
    def delete(segment: Path) -> None:
        segment.unlink(missing_ok=True)

    @staticmethod
    def count(segment: Path) -> int:
        try:
            with segment.open("rb") as file:
                return sum(1 for line in file if line.strip())
        except FileNotFoundError:
            return 0


def read_records(file: TextIO, count: int) -> list[AttemptRecord]:
    """Up to `count` records from a segment, from where the last read stopped. A line that is not
    a record (the last one, torn by a kill mid-write) is skipped and logged."""
    records: list[AttemptRecord] = []
    for line in file:
        if not line.strip():
            continue
        try:
            records.append(AttemptRecord.from_json(orjson.loads(line)))
        except (ValueError, TypeError) as error:
            log.warning("skipped a journal line that is not a record (%s): %.80r", error, line)
            continue
        if len(records) == count:
            break
    return records


def adopt(journal: Path, directory: Path, name: str) -> None:
    """Make another journal's file (one a worker that no longer runs left, or an older relaybox's
    single journal file) a left-over segment of `directory`, replayed with the others."""
    directory.mkdir(parents=True, exist_ok=True)
    target, copy = directory / f"{name}{SUFFIX}", 1
    while target.exists():  # never over one not yet replayed
        target, copy = directory / f"{name}-{copy}{SUFFIX}", copy + 1
    journal.rename(target)


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
