"""Server-sent events framing: an incremental decoder for upstream streams, and the encoder.

The decoder is fed raw bytes as they arrive (chunk boundaries fall anywhere, even inside a
UTF-8 sequence or a CRLF pair) and returns the complete events seen so far.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class SSEvent:
    data: str
    event: str | None = None


class SSEDecoder:
    def __init__(self, max_line: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._event: str | None = None
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[SSEvent]:
        self._buffer += chunk
        events: list[SSEvent] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > self._max_line:
                    raise ValueError("SSE line exceeds the size limit")
                return events
            raw = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            line = raw.removesuffix(b"\r").decode("utf-8")
            event = self._take_line(line)
            if event is not None:
                events.append(event)

    def close(self) -> list[SSEvent]:
        """Flush an event the upstream did not terminate with a blank line."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append(SSEvent("\n".join(self._data), self._event))
            self._data, self._event = [], None
        return events

    def _take_line(self, line: str) -> SSEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SSEvent("\n".join(self._data), self._event)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None


def encode_data(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"
DONE = encode_data("[DONE]")


def tool_comment(name: str, ok: bool, seconds: float) -> bytes:
    """A tool the tool loop ran, as an SSE comment: every client skips it, a person reading the
    stream sees the steps as they happen."""
    return f": relaybox tool {name} {'ok' if ok else 'failed'} {seconds * 1000:.0f} ms\n\n".encode()
