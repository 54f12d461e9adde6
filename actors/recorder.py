"""The recorder actor: every attempt's record reaches storage, and no request ever waits for it.

Records arrive by `tell`. A receiving task moves them into a bounded buffer; a writing task
sends the buffer to storage in batches (`batch_size` records, or whatever `flush_interval`
seconds gathered). When storage is down or slow the buffer fills, and a full buffer spills to
an append-only journal file (one JSON record a line). Writes resume with backoff; the journal
is replayed first, then truncated; record ids make a replay after a crash harmless. On
shutdown whatever is left goes to storage, or to the journal if storage cannot take it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio
from relaybox.actors.mailbox import Mailbox, MailboxStatistics
from relaybox.actors.messages import RecorderMessage
from relaybox.storage.contract import Storage, StorageError
from relaybox.storage.records import AttemptRecord

log = logging.getLogger("relaybox.recorder")


@attrs.frozen
class RecorderStatistics:
    mailbox: MailboxStatistics
    storage: str  # the back end's name
    storage_up: bool | None  # None: nothing written yet
    buffered: int
    journaled: int  # records waiting in the journal file
    written: int
    dropped: int
    journal_failed: str | None
    last_error: str | None


class RecorderActor:
    kind = "recorder"
    name = "recorder"

    def __init__(
        self,
        storage: Storage,
        journal_path: str,
        *,
        mailbox: int = 50_000,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        buffer_limit: int = 10_000,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        shutdown_grace: float = 10.0,
        keep_prompts: bool = True,
    ) -> None:
        self.storage = storage
        # `[log] prompts = "none"`: no prompt text is kept, in storage or in the journal.
        self.keep_prompts = keep_prompts
        self.journal = Path(journal_path)
        self.mailbox: Mailbox[RecorderMessage] = Mailbox(mailbox)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.buffer_limit = buffer_limit
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.shutdown_grace = shutdown_grace
        # Survive restarts: a record held here must not vanish with a crashed incarnation.
        self._buffer: list[AttemptRecord] = []
        self.journaled = 0  # records waiting in the journal
        self.written = 0
        self.dropped = 0
        self.storage_up: bool | None = None
        self.journal_failed: str | None = None
        self.last_error: str | None = None
        self._wake = trio.Event()
        self._journal_lock = trio.Lock()

    # --- what others may read ----------------------------------------------------------

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            mailbox=self.mailbox.statistics(),
            storage=self.storage.name,
            storage_up=self.storage_up,
            buffered=len(self._buffer),
            journaled=self.journaled,
            written=self.written,
            dropped=self.dropped,
            journal_failed=self.journal_failed,
            last_error=self.last_error,
        )

    def record(self, record: AttemptRecord) -> None:
        """For the request path: hand over a record without waiting, whatever storage is doing."""
        if not self.keep_prompts:
            # An upstream's error can quote the prompt: only the failure's kind (the status) is kept.
            record = attrs.evolve(record, prompt_summary=None, error_message=None)
        try:
            self.mailbox.tell(record)
        except Exception:  # MailboxFull: the recorder is hopelessly behind
            self.dropped += 1
            log.error("recorder mailbox full: a record was dropped (%d so far)", self.dropped)

    # --- the actor --------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.journaled = await trio.to_thread.run_sync(self._count_journal)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                task_status.started()
                async for record in self.mailbox.receive:
                    self._buffer.append(record)
                    if len(self._buffer) >= self.batch_size:
                        self._wake.set()
                    if len(self._buffer) >= self.buffer_limit:
                        await self._spill()
        finally:
            with trio.CancelScope(shield=True):
                await self._drain()

    async def on_crash(self, error: BaseException) -> None:
        self.last_error = f"recorder crashed: {type(error).__name__}: {error}"[:300]

    def on_give_up(self) -> None:
        log.error("the recorder stopped for good: records are no longer written")

    async def _write_loop(self) -> None:
        migrated = False
        backoff = self.backoff_initial
        while True:
            with trio.move_on_after(self.flush_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            if not self._buffer and not self.journaled and migrated:
                continue
            try:
                if not migrated:
                    await self.storage.migrate()
                    migrated = True
                if self.journaled:
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
        """Buffered records to storage, a batch at a time; a batch leaves the buffer once written.

        `_spill` may swap in a fresh buffer while an insert is in flight (storage slow, traffic
        high): the batch is then deleted from the list it came from, which went to the journal
        whole, never from the new one."""
        while self._buffer:
            buffer = self._buffer
            batch = buffer[: self.batch_size]
            await self.storage.insert_records(batch)
            del buffer[: len(batch)]
            self.written += len(batch)

    # --- the journal ----------------------------------------------------------------------

    def _count_journal(self) -> int:
        total = 0
        for path in (self._replaying, self.journal):
            try:
                with path.open("rb") as file:
                    total += sum(1 for line in file if line.strip())
            except FileNotFoundError:
                pass
        return total

    async def _spill(self) -> None:
        """Move the whole buffer to the journal (storage is not keeping up)."""
        records, self._buffer = self._buffer, []
        lines = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in records)

        def append() -> None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            with self.journal.open("a", encoding="utf-8") as file:
                file.write(lines)
                file.flush()

        try:
            async with self._journal_lock:
                await trio.to_thread.run_sync(append)
        except OSError as error:
            # Neither storage nor disk: keep what memory allows and say so loudly.
            self.journal_failed = f"{type(error).__name__}: {error}"[:300]
            log.critical("cannot write the record journal %s: %s", self.journal, error)
            self._buffer = records
            overflow = len(self._buffer) - 10 * self.buffer_limit
            if overflow > 0:
                del self._buffer[:overflow]
                self.dropped += overflow
            return
        self.journal_failed = None
        self.journaled += len(records)

    @property
    def _replaying(self) -> Path:
        return self.journal.with_name(self.journal.name + ".replaying")

    async def _replay_journal(self) -> None:
        """Move the journal aside (so new spills start a fresh file), write it out, delete it.

        A crash mid-replay leaves the `.replaying` file, which the next replay finishes first."""

        def take() -> None:
            if not self._replaying.exists() and self.journal.exists():
                self.journal.rename(self._replaying)

        async with self._journal_lock:
            await trio.to_thread.run_sync(take)
        if not await trio.to_thread.run_sync(self._replaying.exists):
            return
        replayed = 0
        # A batch at a time: a journal of a long outage need not fit in memory.
        with await trio.to_thread.run_sync(lambda: self._replaying.open(encoding="utf-8")) as file:
            while batch := await trio.to_thread.run_sync(_read_records, file, self.batch_size):
                await self.storage.insert_records(batch)
                replayed += len(batch)
        await trio.to_thread.run_sync(lambda: self._replaying.unlink(missing_ok=True))
        self.written += replayed
        self.journaled = max(0, self.journaled - replayed)
        if replayed:
            log.info("replayed %d journaled records", replayed)

    async def _drain(self) -> None:
        """Shutdown: everything still held goes to storage within the grace period, the rest to
        the journal (local disk), so a stop loses nothing."""
        self._buffer.extend(self.mailbox.drain())
        with trio.move_on_after(self.shutdown_grace):
            try:
                await self._write_buffer()
            except StorageError as error:
                self.last_error = str(error)[:300]
        if self._buffer:
            await self._spill()


def _read_records(file: TextIO, count: int) -> list[AttemptRecord]:
    """Up to `count` records from a journal, from where the last read stopped. A line that is not
    a record (the last one, torn by a kill mid-write) is skipped and logged."""
    records: list[AttemptRecord] = []
    for line in file:
        if not line.strip():
            continue
        try:
            records.append(AttemptRecord.from_json(json.loads(line)))
        except (ValueError, TypeError) as error:
            log.warning("skipped a journal line that is not a record (%s): %.80r", error, line)
            continue
        if len(records) == count:
            break
    return records
