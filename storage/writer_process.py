"""The serving process's side of the request log's writer process (`storage/sqlite_writer.py`):
started on the first batch, one batch at a time over its pipes, started again after it dies.

A batch whose exchange is interrupted (cancelled, or the process died) leaves the pipes out of
step, so the process is killed and the batch reported as not written: the recorder keeps it and
sends it again, and record ids make a batch written twice harmless.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import orjson
import trio
from relaybox.storage.contract import StorageError
from relaybox.storage.records import COLUMNS, AttemptRecord
from relaybox.storage.sqlite_writer import LENGTH

log = logging.getLogger("relaybox.storage")

# How long a stopping relaybox gives the writer to finish its batch before it is killed.
STOP_GRACE = 5.0


class WriterProcess:
    def __init__(self, path: str) -> None:
        self.path = path
        self.started = 0  # processes started, the first included
        self._process: trio.Process | None = None
        self._received = bytearray()
        self._lock = trio.Lock()

    async def write(self, records: list[AttemptRecord]) -> int:
        """Store the records; the number that were not stored already."""
        rows = [[getattr(record, column) for column in COLUMNS] for record in records]
        payload = orjson.dumps(rows)
        async with self._lock:
            process = await self._running()
            try:
                assert process.stdin is not None
                await process.stdin.send_all(LENGTH.pack(len(payload)) + payload)
                answer = orjson.loads(await self._frame(process))
            except BaseException as error:
                await self._kill()
                if isinstance(error, trio.BrokenResourceError | trio.ClosedResourceError | EOFError):
                    raise StorageError(f"the SQLite writer process ended ({error})") from None
                raise
        if "error" in answer:
            raise StorageError(answer["error"])
        return int(answer["written"])

    async def aclose(self) -> None:
        """Let the writer finish (its stdin closed, it ends), or kill it after `STOP_GRACE`."""
        process, self._process = self._process, None
        if process is None:
            return
        with trio.CancelScope(shield=True):
            assert process.stdin is not None
            await process.stdin.aclose()
            with trio.move_on_after(STOP_GRACE):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def _running(self) -> trio.Process:
        if self._process is not None:
            if self._process.returncode is None:
                return self._process
            log.warning("the SQLite writer process ended (exit code %s)", self._process.returncode)
        self._received.clear()
        try:
            self._process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "relaybox.storage.sqlite_writer", self.path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        except OSError as error:  # out of processes or memory: storage is down until it can start
            raise StorageError(f"cannot start the SQLite writer process: {error}") from None
        self.started += 1
        return self._process

    async def _frame(self, process: trio.Process) -> bytes:
        assert process.stdout is not None
        size = None
        while True:
            if size is None and len(self._received) >= LENGTH.size:
                size = LENGTH.unpack_from(self._received)[0] + LENGTH.size
            if size is not None and len(self._received) >= size:
                payload = bytes(self._received[LENGTH.size : size])
                del self._received[:size]
                return payload
            chunk = await process.stdout.receive_some(65536)
            if not chunk:
                raise EOFError(f"exit code {process.poll()}")
            self._received += chunk

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
