"""A minimal HTTP/1.1 server on trio sockets, for fake upstreams that must misbehave on cue.

A real server framework would hide exactly what these fakes need to control: when the
status line goes out, pacing between body chunks, a connection reset mid-body, a response
that never comes. Keep-alive and chunked encoding are supported because real clients
(httpx, the CLIs' Node runtimes) use them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio


@attrs.define
class FakeRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def json(self) -> Any:
        return json.loads(self.body)


class ConnectionReset(Exception):
    """Raised inside a handler after `reset()`: nothing more can be written."""


class ResponseWriter:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.started = False
        self.finished = False
        self.was_reset = False
        self._chunked = False

    async def start(
        self, status: int, headers: dict[str, str] | None = None, *, length: int | None = None
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        headers = dict(headers or {})
        if length is None:
            self._chunked = True
            headers["transfer-encoding"] = "chunked"
        else:
            headers["content-length"] = str(length)
        lines += [f"{k}: {v}" for k, v in headers.items()]
        await self._stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.started = True

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        await self._stream.send_all(data)

    async def end(self) -> None:
        if self._chunked:
            await self._stream.send_all(b"0\r\n\r\n")
        self.finished = True

    async def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        await self.start(status, headers, length=len(body))
        await self._stream.send_all(body)
        self.finished = True

    async def send_json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        await self.send(
            status, json.dumps(obj).encode(), {"content-type": "application/json", **(headers or {})}
        )

    async def hang(self) -> None:
        """Say nothing more until the client gives up and closes the connection, as a stuck
        upstream does (and then end: a stalled fake holds no socket after its client left)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            while await self._stream.receive_some(65536):
                pass
        raise ConnectionReset

    def reset(self) -> None:
        """Abort the connection with a TCP RST, as a crashed upstream or proxy would."""
        sock = self._stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self.was_reset = True
        raise ConnectionReset


Handler = Callable[[FakeRequest, ResponseWriter], Awaitable[None]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}


class FakeHTTPServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[FakeRequest] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(trio.serve_tcp, self._connection, 0)
        self.port = listeners[0].socket.getsockname()[1]

    async def _connection(self, stream: trio.SocketStream) -> None:
        reader = _Reader(stream)
        try:
            while True:
                request = await reader.read_request()
                if request is None:
                    return
                self.requests.append(request)
                writer = ResponseWriter(stream)
                try:
                    await self._handler(request, writer)
                except ConnectionReset:
                    return
                if not writer.started:
                    await writer.send(404, b"not found")
                elif not writer.finished:
                    await writer.end()
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return
        finally:
            with trio.move_on_after(1, shield=True):
                await stream.aclose()


class _Reader:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        data = await self._stream.receive_some(65536)
        if not data:
            return False
        self._buffer += data
        return True

    async def _read_until(self, marker: bytes) -> bytes | None:
        while (index := self._buffer.find(marker)) < 0:
            if not await self._fill():
                return None
        data = bytes(self._buffer[:index])
        del self._buffer[: index + len(marker)]
        return data

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not await self._fill():
                raise trio.BrokenResourceError("connection closed mid-body")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_request(self) -> FakeRequest | None:
        head = await self._read_until(b"\r\n\r\n")
        if head is None:
            return None
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size_line = await self._read_until(b"\r\n")
                if size_line is None:
                    raise trio.BrokenResourceError("connection closed mid-body")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await self._read_until(b"\r\n")
                    break
                body += await self._read_exactly(size)
                await self._read_exactly(2)
            return FakeRequest(method, target, headers, bytes(body))
        length = int(headers.get("content-length", "0"))
        return FakeRequest(method, target, headers, await self._read_exactly(length))
