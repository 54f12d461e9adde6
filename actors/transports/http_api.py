"""HTTP API providers over httpx: OpenAI and OpenAI-compatible endpoints, Anthropic, Gemini, Ollama.

The wire format is the dialect's (pure, in `protocol/`); this module only moves bytes and turns
HTTP trouble into `ProviderFailure`s: 429 rate limited (with Retry-After), 401/403 auth,
408 timeout, 5xx server error, any other 4xx a refused request; connection errors and resets
are transport failures. It is the only module that imports httpx.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar

import attrs
import httpx
import orjson
from relaybox.actors.transports.base import Emit
from relaybox.protocol.chat import EmbeddingRequest, ImageRequest, ModelRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.wire.dialect import Dialect, WholeCall, malformed

R = TypeVar("R")

# The longest pause an upstream's Retry-After may impose on its provider.
RETRY_AFTER_LIMIT = 300.0
# Connection pools per transport, and how many connections make a pool worth splitting off.
CLIENT_SHARDS = 16
CONNECTIONS_PER_SHARD = 64


@attrs.frozen
class HttpApiStatistics:
    kind: str  # the dialect's name
    base_url: str
    api_key_set: bool


class HttpApiTransport:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        dialect: Dialect,
        connections: int = 64,
        http2: bool = False,
        client_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http2 = http2
        self.dialect = dialect
        self._api_key = api_key
        self._connections = connections
        self._client_transport = client_transport
        self._clients: list[httpx.AsyncClient] = []
        self._turn = 0

    def statistics(self) -> HttpApiStatistics:
        return HttpApiStatistics(self.dialect.name, self.base_url, bool(self._api_key))

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        # Several clients, each with its own connection pool: one pool's bookkeeping grows with its
        # size on every request, which made a thousand concurrent streams start slowly
        # (`python -m bench.streaming_fanout`). Requests take the clients in turn.
        shards = max(1, min(CLIENT_SHARDS, self._connections // CONNECTIONS_PER_SHARD))
        per_shard = -(-self._connections // shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        # Timeouts are the provider actor's cancel scopes; only connecting gets a limit here.
        timeout = httpx.Timeout(None, connect=10.0)
        # HTTP/2 is offered over TLS (the server may keep to HTTP/1.1); over cleartext it can only
        # be spoken from the first byte (prior knowledge): no HTTP/1.1 then.
        cleartext = self.base_url.startswith("http://")
        async with AsyncExitStack() as stack:
            self._clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        headers={"user-agent": "relaybox"},
                        limits=limits,
                        timeout=timeout,
                        http2=self.http2,
                        http1=not (self.http2 and cleartext),
                        transport=self._client_transport,
                    )
                )
                for _ in range(shards)
            ]
            try:
                yield
            finally:
                self._clients = []

    def _next_client(self) -> httpx.AsyncClient:
        if not self._clients:
            raise RuntimeError("transport used outside its session")
        self._turn = (self._turn + 1) % len(self._clients)
        return self._clients[self._turn]

    async def run(self, request: ModelRequest, model: str, emit: Emit) -> str:
        client = self._next_client()
        if isinstance(request, ImageRequest):
            images = self.dialect.image_call(request, model, self._api_key)
            return await self._whole(client, images, "generate images", emit)
        if isinstance(request, EmbeddingRequest):
            embedding = self.dialect.embedding_call(request, model, self._api_key)
            return await self._whole(client, embedding, "embed these inputs", emit)
        call = self.dialect.call(request, model, self._api_key)
        with _as_provider_failures(self._api_key):
            async with client.stream(
                "POST",
                self.base_url + call.path,
                content=_json_body(call.body),
                headers=_json_headers(call.headers),
            ) as response:
                if response.status_code != 200:
                    body = await response.aread()
                    raise _status_failure(
                        response.status_code,
                        redacted(self.dialect.error_message(body), self._api_key),
                        response.headers,
                    )
                if not request.stream:
                    events, finish_reason = _decoded(self.dialect.decode_body, await response.aread())
                    for event in events:
                        await emit(event)
                    return finish_reason
                decoder = self.dialect.stream_decoder()
                async for data in _body_pieces(response):
                    for event in _decoded(decoder.feed, data):
                        await emit(event)
                for event in _decoded(decoder.close):
                    await emit(event)
                return decoder.finish_reason or "stop"

    async def _whole(self, client: httpx.AsyncClient, whole: WholeCall | None, what: str, emit: Emit) -> str:
        """A call answered in one body (images, embeddings)."""
        if whole is None:
            raise ProviderFailure(FailureKind.UNSUPPORTED, f"{self.dialect.name} does not {what} here")
        call = whole.call
        with _as_provider_failures(self._api_key):
            response = await client.post(
                self.base_url + call.path, content=_json_body(call.body), headers=_json_headers(call.headers)
            )
        if response.status_code != 200:
            raise _status_failure(
                response.status_code,
                redacted(self.dialect.error_message(response.content), self._api_key),
                response.headers,
            )
        for event in _decoded(whole.decode, response.content):
            await emit(event)
        return "stop"


def _json_body(body: object) -> bytes:
    """The upstream request as JSON bytes (orjson: a large conversation encodes several times faster
    than with httpx's `json=`)."""
    return orjson.dumps(body)


def _json_headers(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "content-type": "application/json"}


def redacted(text: str, secret: str | None) -> str:
    """The text without the provider's key: some upstreams quote it back in their errors, and an
    error travels on to the client, the log and the dashboard."""
    return text.replace(secret, "[redacted]") if secret else text


@contextmanager
def _as_provider_failures(secret: str | None) -> Iterator[None]:
    """httpx's errors as the failure kinds the provider actor understands (a URL in them may carry
    a key, as Gemini's can: it is redacted)."""
    try:
        yield
    except httpx.TimeoutException as error:
        raise ProviderFailure(FailureKind.TIMEOUT, f"upstream timed out: {type(error).__name__}") from None
    except httpx.HTTPError as error:
        raise ProviderFailure(
            FailureKind.TRANSPORT, redacted(f"{type(error).__name__}: {error}", secret)[:300]
        ) from None


def _decoded(decode: Callable[..., R], *data: Any) -> R:
    """What the dialect decodes. An upstream answer of a shape it does not expect (a string where
    an object should be, a missing field) is a malformed stream: this attempt's failure, never a
    crash of the provider and its other streams. (A call, not a context manager: it runs for every
    piece of a stream.)"""
    try:
        return decode(*data)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError) as error:
        raise malformed(f"{type(error).__name__}: {error}") from None


def _body_pieces(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives: the raw bytes when the upstream sent them unencoded (no decoder
    layer per piece, which is every streamed chunk), decoded when it compressed them."""
    if response.headers.get("content-encoding", "identity").strip().lower() == "identity":
        return response.aiter_raw()
    return response.aiter_bytes()


def _retry_after(headers: httpx.Headers) -> float | None:
    """The upstream's Retry-After in seconds, at most `RETRY_AFTER_LIMIT` (an upstream that asks
    for a day would otherwise take the provider out for a day)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(RETRY_AFTER_LIMIT, max(0.0, seconds))


def _status_failure(status: int, detail: str, headers: httpx.Headers) -> ProviderFailure:
    message = f"HTTP {status}: {detail}"
    if status == 429:
        return ProviderFailure(FailureKind.RATE_LIMITED, message, status, _retry_after(headers))
    if status in (401, 403):
        return ProviderFailure(FailureKind.AUTH, message, status)
    if status == 408:
        return ProviderFailure(FailureKind.TIMEOUT, message, status)
    if status >= 500:
        return ProviderFailure(FailureKind.SERVER_ERROR, message, status, _retry_after(headers))
    return ProviderFailure(FailureKind.REJECTED, message, status)
