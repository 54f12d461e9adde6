"""The request log's writer: a process of its own that puts batches of attempt records into the
SQLite file, so that their cost stays out of the serving process.

    python -m relaybox.storage.sqlite_writer PATH

In the serving process the sqlite3 module would hold the GIL to bind every value of every row and
drop it around every statement's step, and trio's thread would wait for it each time: a batch of
records cost the serving loop far more than its own share of the CPU. Here it costs another
process's time.

Frames both ways: a 4-byte big-endian length, then JSON. Each request is a list of records, each a
list of values in `COLUMNS` order; each answer is `{"written": n}` (records not already stored) or
`{"error": text}`. The process ends when its stdin closes, which is when the serving process ends,
even by kill -9; a batch under way is committed whole or not at all, and the serving process's
journal holds its records until it has been told.
"""

from __future__ import annotations

import signal
import sqlite3
import struct
import sys
from typing import Any, BinaryIO

import orjson
from relaybox.storage.queries import (
    SQLITE,
    key_minute_rows,
    key_tokens_upsert,
    key_usage_rows,
    key_usage_upsert,
    rollup_rows,
    rollup_upsert,
)
from relaybox.storage.records import COLUMNS, AttemptRecord

LENGTH = struct.Struct(">I")


def frame(value: Any) -> bytes:
    payload = orjson.dumps(value)
    return LENGTH.pack(len(payload)) + payload


def open_log(path: str) -> sqlite3.Connection:
    """The connection relaybox uses on its SQLite file, in either process."""
    connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def write_records(db: sqlite3.Connection, records: list[AttemptRecord]) -> int:
    """Insert the records not stored yet, and count them into the daily rollup and each key's
    usage and minute (a replay of a journal must not count a record twice)."""
    ids = [r.id for r in records]
    existing = set()
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        existing.update(
            row[0]
            for row in db.execute(
                f"SELECT id FROM task_logs WHERE id IN ({', '.join('?' for _ in chunk)})", chunk
            )
        )
    new = list({r.id: r for r in records if r.id not in existing}.values())
    db.executemany(
        f"INSERT INTO task_logs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
        [tuple(getattr(r, c) for c in COLUMNS) for r in new],
    )
    db.executemany(rollup_upsert(SQLITE), rollup_rows(new))
    db.executemany(key_usage_upsert(SQLITE), key_usage_rows(new))
    minutes = key_minute_rows(new)
    if minutes:
        db.executemany(key_tokens_upsert(SQLITE), minutes)
        db.execute("DELETE FROM key_windows WHERE window_start < ?", (max(m for _, m, _ in minutes) - 300,))
    return len(new)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(path: str, requests: BinaryIO, answers: BinaryIO) -> None:
    db = open_log(path)
    try:
        while (header := _read_exactly(requests, LENGTH.size)) is not None:
            payload = _read_exactly(requests, LENGTH.unpack(header)[0])
            if payload is None:
                return  # the serving process ended mid-frame
            try:
                records = [AttemptRecord(*row) for row in orjson.loads(payload)]
                with db:  # one transaction per batch
                    answer: dict[str, Any] = {"written": write_records(db, records)}
            except (sqlite3.Error, TypeError, ValueError) as error:
                answer = {"error": f"sqlite: {error}"}
            answers.write(frame(answer))
            answers.flush()
    finally:
        db.close()


if __name__ == "__main__":
    # Ctrl-C, or a service manager's SIGTERM, reaches the whole process group: the serving process
    # decides when the log stops (it closes this process's stdin once its last batch is written).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
