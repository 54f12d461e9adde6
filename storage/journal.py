"""The record journal: append-only segment files on local disk, one record (JSON) a line.

Every record is written here before the answer it belongs to ends, so a record a client was
answered for survives relaybox being killed (once written, the operating system holds it), and
with `sync` a machine crash too (each write is flushed to the disk). A segment is deleted once
storage holds every record in it; the segments a crash leaves behind are replayed on the next
start, and record ids make writing a record twice harmless.

Blocking file I/O, called from a worker thread (`trio.to_thread`), except `append` without
`sync`, which only hands bytes to the operating system. One writer appends at a time; reading
and deleting touch only sealed segments.

One process owns a journal directory: a relaybox holds an exclusive lock (`flock`) on the lock
file beside it for as long as it runs (`owned`), and the operating system lets go of it when the
process ends, however it ends. Another relaybox on the same data directory does not start, and
`relaybox doctor` leaves an owned journal alone (`owner_of`); neither replays, adopts or deletes
what a running relaybox is still writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import BinaryIO, TextIO

import orjson
import trio
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
    single journal file) a left-over segment of `directory`, replayed with the others. Raises
    `JournalBusy` when the file belongs to a journal a running process owns."""
    owner = owner_of(journal.parent)
    if owner is not None:
        raise JournalBusy(journal.parent, owner)
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


# --- who owns a journal ------------------------------------------------------------------------

LOCK_SUFFIX = ".lock"
# How long taking a journal waits out a lock held only for a moment (`owner_of` asking).
CLAIM_PATIENCE = 1.0


class JournalBusy(OSError):
    """The journal belongs to another process: a relaybox serving from the same data directory."""

    def __init__(self, directory: Path, pid: int) -> None:
        holder = f"pid {pid}" if pid > 0 else "another process"
        super().__init__(
            errno.EBUSY,
            f"the record journal in {directory} belongs to a relaybox that is running ({holder}); "
            "stop it first, or give this one a data directory of its own (RELAYBOX_DATA_DIR)",
        )
        self.directory = directory
        self.pid = pid


def lock_file(directory: Path) -> Path:
    """The lock file of the journal in `directory`: beside it, so that adopting the directory's
    segments never takes the lock file along."""
    return directory.with_name(directory.name + LOCK_SUFFIX)


class _Claim:
    """This process's lock on one journal, and how many of its running systems share it."""

    def __init__(self, held: BinaryIO | None) -> None:
        self.held = held
        self.users = 0


# The journals this process owns. Ownership is a process's: several systems running in one process
# on one data directory (as tests run "instances") share it; two relayboxes are two processes.
_claims: dict[str, _Claim] = {}


@contextlib.asynccontextmanager
async def owned(directory: Path) -> AsyncIterator[None]:
    """Own the journal in `directory` for the block's life; raises `JournalBusy` when another
    process owns it. A lock file that cannot be made (the data directory unwritable) owns nothing
    and is not an error here: the journal will fail too, and say so."""
    key = str(lock_file(directory).absolute())
    claim = _claims.get(key)
    if claim is None:
        try:
            held = await trio.to_thread.run_sync(_claim, directory)
        except JournalBusy as busy:
            claim = _claims.get(key)
            if claim is None or busy.pid != os.getpid():
                raise
        else:
            claim = _claims.setdefault(key, _Claim(held))
    claim.users += 1
    try:
        yield
    finally:
        claim.users -= 1
        if claim.users == 0:
            del _claims[key]
            if claim.held is not None:
                claim.held.close()  # the lock goes with the descriptor


def owner_of(directory: Path) -> int | None:
    """The pid of the process that owns the journal in `directory` (0 when it cannot be read), or
    None when no process does. Asking holds a shared lock for a moment, never the journal."""
    try:
        descriptor = os.open(lock_file(directory), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: never owned, or not since an older relaybox
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(descriptor)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def owners(root: Path) -> dict[str, int]:
    """Every journal under `root` (one per worker) that a running process owns: name -> pid."""
    if not root.is_dir():
        return {}
    found = {}
    for lock in sorted(root.glob(f"*{LOCK_SUFFIX}")):
        journal = lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))
        pid = owner_of(journal)
        if pid is not None:
            found[journal.name] = pid
    return found


def _claim(directory: Path) -> BinaryIO | None:
    path = lock_file(directory)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        held = path.open("a+b")  # not inherited by child processes (Python's default)
    except OSError as error:
        log.error("cannot make the journal's lock file %s: %s", path, error)
        return None
    deadline = time.monotonic() + CLAIM_PATIENCE
    while True:
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:  # not a moment's look by `owner_of`: an owner
                pid = _pid_in(held.fileno())
                held.close()
                raise JournalBusy(directory, pid) from None
            time.sleep(0.02)
    held.truncate(0)
    held.write(f"{os.getpid()}\n".encode())
    held.flush()
    return held


def _pid_in(descriptor: int) -> int:
    try:
        return int(os.pread(descriptor, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0
