"""The recorder actor: every attempt's record reaches storage, an answered request's record
survives a kill of relaybox, and no request ever waits for the database.

Records arrive by `tell`. The recorder first writes them to its journal (`storage/journal.py`),
all that arrived meanwhile in one write (a group commit); a record sent as `Durable` (the record
of an attempt whose answer is about to end) is acknowledged then, so the answer's last byte
follows its record onto the disk. Journaled records wait in a bounded buffer; a writing task
sends them to storage in batches (`batch_size` records, or whatever `flush_interval` seconds
gathered), and a journal segment is deleted once storage holds all of it. When storage is down
or slow the buffer fills, and a full buffer is let go of: its records are in the journal, which
is replayed once storage is back (and on the next start, after a crash); record ids make a
replay harmless. On shutdown whatever is left goes to storage within a grace period; the rest
stays in the journal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio
from relaybox.actors.held_records import HeldRecords
from relaybox.actors.mailbox import Mailbox, MailboxFull, MailboxStatistics
from relaybox.actors.messages import Durable, RecorderMessage
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.journal import Journal, as_lines, read_records
from relaybox.storage.records import AttemptRecord

log = logging.getLogger("relaybox.recorder")

# The longest an answer waits for its record to be journaled (by a recorder far behind, or a
# disk that takes this long to flush); past it, answers stop waiting until the journal is quick.
JOURNAL_WAIT = 2.0
# With the journal failing, the most records kept in memory, per `buffer_limit`.
UNJOURNALED_BUFFERS = 10
# When an answered request's record is safe from a kill: "os" (written to the journal, so the
# operating system holds it, before the answer ends), "fsync" (flushed to the disk too: it
# survives a machine crash), "off" (answers do not wait: a kill can lose the last records).
JOURNAL_MODES = ("os", "fsync", "off")


@attrs.frozen
class RecorderStatistics:
    mailbox: MailboxStatistics
    storage: str  # the back end's name
    storage_up: bool | None  # None: nothing written yet
    buffered: int
    journaled: int  # records held only in the journal, waiting for storage
    written: int
    dropped: int
    journal: str  # the journal mode (see JOURNAL_MODES)
    journal_slow: bool  # answers are not waiting for the journal (it took longer than JOURNAL_WAIT)
    journal_failed: str | None
    last_error: str | None


class RecorderActor:
    kind = "recorder"
    name = "recorder"

    def __init__(
        self,
        storage: Storage,
        journal_directory: str,
        *,
        journal: str = "os",
        mailbox: int = 50_000,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        buffer_limit: int = 10_000,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        shutdown_grace: float = 10.0,
        keep_prompts: bool = True,
    ) -> None:
        if journal not in JOURNAL_MODES:
            raise ValueError(f"journal must be one of {JOURNAL_MODES}, got {journal!r}")
        self.storage = storage
        # `[log] prompts = "none"`: no prompt text is kept, in storage or in the journal.
        self.keep_prompts = keep_prompts
        self.journal_mode = journal
        self.journal = Journal(Path(journal_directory), sync=journal == "fsync")
        self.mailbox: Mailbox[RecorderMessage] = Mailbox(mailbox)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.buffer_limit = buffer_limit
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.shutdown_grace = shutdown_grace
        # Survive restarts: what is held here must not vanish with a crashed incarnation.
        self._opened = False
        self._unjournaled: list[RecorderMessage] = []
        self._held = HeldRecords()
        self._on_disk: list[Path] = []  # segments to replay from their file, oldest first
        self.journaled = 0
        self.written = 0
        self.dropped = 0
        self.storage_up: bool | None = None
        self.journal_slow = False
        self.journal_failed: str | None = None
        self.last_error: str | None = None
        self._wake = trio.Event()
        # Told of every record as it is handed over (the tracer makes spans of them).
        self.watchers: list[Callable[[AttemptRecord], None]] = []

    # --- what others may read and call ---------------------------------------------------------

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            mailbox=self.mailbox.statistics(),
            storage=self.storage.name,
            storage_up=self.storage_up,
            buffered=len(self._held),
            journaled=self.journaled,
            written=self.written,
            dropped=self.dropped,
            journal=self.journal_mode,
            journal_slow=self.journal_slow,
            journal_failed=self.journal_failed,
            last_error=self.last_error,
        )

    def record(self, record: AttemptRecord) -> None:
        """Hand over a record without waiting, whatever storage and the disk are doing."""
        self._tell(self._kept(record))

    async def recorded(self, record: AttemptRecord) -> None:
        """Hand over the record of an answer about to end, and wait (in the default mode) until the
        journal holds it: then a kill of relaybox after the answer cannot lose the record."""
        record = self._kept(record)
        if self.journal_mode == "off" or self.journal_slow:
            self._tell(record)
            return
        durable = Durable(record)
        if not self._tell(durable):
            return
        with trio.move_on_after(JOURNAL_WAIT):
            await durable.journaled.wait()
            return
        if not self.journal_slow:
            log.error("the journal took over %g s: answers no longer wait for it", JOURNAL_WAIT)
        self.journal_slow = True

    def _kept(self, record: AttemptRecord) -> AttemptRecord:
        if not self.keep_prompts:
            # An upstream's error can quote the prompt: only the failure's kind (the status) is kept.
            record = attrs.evolve(record, prompt_summary=None, error_message=None)
        for watcher in self.watchers:
            watcher(record)
        return record

    def _tell(self, message: RecorderMessage) -> bool:
        try:
            self.mailbox.tell(message)
        except MailboxFull:  # the recorder is hopelessly behind
            self.dropped += 1
            log.error("recorder mailbox full: a record was dropped (%d so far)", self.dropped)
            return False
        return True

    # --- the actor -----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if not self._opened:  # once per process: a restarted incarnation keeps the journal's state
            left_over = await trio.to_thread.run_sync(self.journal.left_over)
            self._on_disk = left_over + self._on_disk
            self.journaled += sum([await trio.to_thread.run_sync(Journal.count, s) for s in left_over])
            self._opened = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                task_status.started()
                while True:
                    if not self._unjournaled:
                        self._unjournaled.append(await self.mailbox.receive.receive())
                    self._unjournaled += self.mailbox.drain()  # all that came meanwhile: one write
                    await self._write_journal()
        finally:
            with trio.CancelScope(shield=True):
                await self._drain()

    async def on_crash(self, error: BaseException) -> None:
        self.last_error = f"recorder crashed: {type(error).__name__}: {error}"[:300]

    def on_give_up(self) -> None:
        log.error("the recorder stopped for good: records are no longer written")

    # --- the journal ------------------------------------------------------------------------

    async def _write_journal(self) -> None:
        """The records that arrived, to the journal in one write, then to the buffer; their
        senders are told. A journal that fails leaves them in memory only, and says so loudly."""
        messages = self._unjournaled
        records = [m.record if isinstance(m, Durable) else m for m in messages]
        started = trio.current_time()
        segment = None
        try:
            if self.journal.sync:
                segment = await trio.to_thread.run_sync(self.journal.append, as_lines(records))
            else:
                # Handing lines to the operating system takes microseconds: written from here,
                # as servers write their access logs, rather than paying a thread's round trip
                # on every answer's path.
                segment = self.journal.append(as_lines(records))
        except OSError as error:
            if self.journal_failed is None:
                log.critical("cannot write the record journal in %s: %s", self.journal.directory, error)
            self.journal_failed = f"{type(error).__name__}: {error}"[:300]
        else:
            self.journal_failed = None
        self._unjournaled = []
        self._held.add(records, segment)
        for message in messages:
            if isinstance(message, Durable):
                message.journaled.set()
        if self.journal_slow and trio.current_time() - started < JOURNAL_WAIT:
            log.info("the journal is quick again: answers wait for it again")
            self.journal_slow = False
        if len(self._held) >= self.batch_size:
            self._wake.set()
        if len(self._held) >= self.buffer_limit:
            await self._let_go()

    async def _let_go(self) -> None:
        """Storage is not keeping up: the buffered records are left to the journal, to be replayed
        from there (those the journal could not take stay, within a limit)."""
        await trio.to_thread.run_sync(self.journal.seal)
        let_go = self._held.let_go(UNJOURNALED_BUFFERS * self.buffer_limit)
        self._on_disk += let_go.segments
        self.journaled += let_go.records
        if let_go.dropped:
            self.dropped += let_go.dropped
            log.error("neither storage nor the journal takes records: %d dropped", let_go.dropped)

    async def _forget_stored(self, *, current_too: bool = False) -> None:
        """Delete the sealed segments storage now holds all of (and the current one, on a stop)."""
        for segment in self._held.complete(None if current_too else self.journal.current):
            if segment == self.journal.current:
                await trio.to_thread.run_sync(self.journal.seal)
            await trio.to_thread.run_sync(Journal.delete, segment)

    # --- storage ----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        migrated = False
        backoff = self.backoff_initial
        while True:
            with trio.move_on_after(self.flush_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            if not self._held and not self._on_disk and migrated:
                continue
            try:
                if not migrated:
                    await self.storage.migrate()
                    migrated = True
                await self._replay_journal()
                await self._write_buffer()
            except StorageError as error:
                if self.storage_up is not False:
                    log.error("storage unavailable, buffering records: %s", error)
                self.storage_up = False
                self.last_error = str(error)[:300]
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if self.storage_up is False:
                log.info("storage is back; records are being written again")
            self.storage_up = True
            backoff = self.backoff_initial

    async def _write_buffer(self) -> None:
        """Held records to storage, a batch at a time; a batch leaves the buffer once written."""
        while self._held:
            source, batch = self._held.batch(self.batch_size)
            await self.storage.insert_records([held.record for held in batch])
            self._held.stored(source, batch)
            self.written += len(batch)
            await self._forget_stored()

    async def _replay_journal(self) -> None:
        """The segments whose records are only on disk, to storage a batch at a time (a long
        outage's journal need not fit in memory), each deleted once written."""
        while self._on_disk:
            segment = self._on_disk[0]
            replayed = 0
            # A kill mid-write can tear the last line inside a character: it is skipped, not fatal.
            opening = partial(open, segment, encoding="utf-8", errors="replace")
            with await trio.to_thread.run_sync(opening) as file:
                while batch := await trio.to_thread.run_sync(read_records, file, self.batch_size):
                    await self.storage.insert_records(batch)
                    replayed += len(batch)
            await trio.to_thread.run_sync(Journal.delete, segment)
            self._on_disk.remove(segment)
            self.written += replayed
            self.journaled = max(0, self.journaled - replayed)
            log.info("replayed %d journaled records from %s", replayed, segment.name)

    async def _drain(self) -> None:
        """Shutdown: what is still queued is journaled, then everything goes to storage within
        the grace period; what storage did not take stays in the journal for the next start."""
        self._unjournaled += self.mailbox.drain()
        if self._unjournaled:
            await self._write_journal()
        with trio.move_on_after(self.shutdown_grace):
            try:
                await self._replay_journal()
                await self._write_buffer()
            except StorageError as error:
                self.last_error = str(error)[:300]
        await self._forget_stored(current_too=True)
        await trio.to_thread.run_sync(self.journal.seal)
        if lost := self._held.unjournaled():
            self.dropped += lost
            log.critical("stopping with %d records neither stored nor journaled: they are lost", lost)
