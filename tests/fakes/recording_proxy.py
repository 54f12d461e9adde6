"""A reverse proxy on loopback that records every request a client sends (method, path, headers,
body, exactly as they came) and passes it on to a target (a running relaybox), streaming the answer
back as it arrives. A real client pointed at the proxy shows what it really sends."""

from __future__ import annotations

import httpx
import trio

from tests.fakes.http_server import FakeHTTPServer, FakeRequest, ResponseWriter

# Hop-by-hop and framing headers: the proxy's own connections set these.
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}


class RecordingProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.server = FakeHTTPServer(self._handle)
        self._client: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[FakeRequest]:
        return self.server.requests

    def posts(self, path_suffix: str) -> list[FakeRequest]:
        """The POSTs whose path ends with `path_suffix` (`/chat/completions`, `/responses`, ...)."""
        return [r for r in self.server.requests if r.method == "POST" and r.path.endswith(path_suffix)]

    async def start(self, nursery: trio.Nursery) -> RecordingProxy:
        """Serve until `nursery` is cancelled (which closes the connections to the target too)."""
        await nursery.start(self._keep_client)
        await self.server.start(nursery)
        return self

    async def _keep_client(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), follow_redirects=False) as client:
            self._client = client
            task_status.started()
            await trio.sleep_forever()

    async def _handle(self, request: FakeRequest, out: ResponseWriter) -> None:
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k not in _HOP}
        upstream = self._client.build_request(
            request.method, self.target + request.target, headers=headers, content=request.body
        )
        response = await self._client.send(upstream, stream=True)
        try:
            answer = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
            await out.start(response.status_code, answer)
            async for data in response.aiter_raw():
                await out.write(data)
        finally:
            await response.aclose()
