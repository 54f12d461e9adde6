"""A TCP proxy that can be cut (the database 'goes down' for whoever connects through it) or slowed
(every message held `delay` seconds: a database that answers, too late)."""

from __future__ import annotations

import trio


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cut_off = False
        self.delay = 0.0
        self._connections: set[trio.CancelScope] = set()

    async def start(self, nursery: trio.Nursery) -> CuttableProxy:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]
        return self

    def cut(self) -> None:
        """Drop every open connection and refuse new ones, as a crashed database would."""
        self.cut_off = True
        for scope in self._connections:
            scope.cancel()

    def restore(self) -> None:
        self.cut_off = False

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.cut_off:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                upstream = await trio.open_tcp_stream(*self.target)
            except OSError:
                await client.aclose()
                return
            try:
                async with client, upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
            finally:
                self._connections.discard(scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                await trio.sleep(self.delay)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()
