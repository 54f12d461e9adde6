"""OpenAI-compatible upstreams over httpx: OpenAI itself, OpenRouter, Groq, Open WebUI, vLLM, ...

The only module (with its siblings for other HTTP dialects) that imports httpx. Upstream
errors become `ProviderFailure`s by status: 429 rate limited (with Retry-After), 401/403 auth,
408 timeout, 5xx server error, other 4xx a refused request.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from relaybox.actors.transports.base import Emit
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.openai_wire import (
    UpstreamStreamError,
    decode_upstream_chunk,
    decode_upstream_completion,
    upstream_error_message,
    upstream_request_body,
)
from relaybox.protocol.sse import SSEDecoder

# Where the chat endpoint lives under the base URL, by host layout (seed 002's host_type).
CHAT_PATHS = {"openai": "/chat/completions", "openwebui": "/api/chat/completions"}


class OpenAIHttpTransport:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        host_type: str = "openai",
        connections: int = 64,
        extra_headers: dict[str, str] | None = None,
        client_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if host_type not in CHAT_PATHS:
            raise ValueError(f"host_type must be one of {', '.join(CHAT_PATHS)}")
        self.base_url = base_url.rstrip("/")
        self.host_type = host_type
        self._api_key = api_key
        self._connections = connections
        self._extra_headers = dict(extra_headers or {})
        self._client_transport = client_transport
        self._client: httpx.AsyncClient | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "openai-compatible",
            "base_url": self.base_url,
            "host_type": self.host_type,
            "api_key_set": bool(self._api_key),
        }

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        headers = {"user-agent": "relaybox", **self._extra_headers}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        limits = httpx.Limits(max_connections=self._connections, max_keepalive_connections=self._connections)
        # Timeouts are the provider actor's cancel scopes; only connecting gets a limit here.
        timeout = httpx.Timeout(None, connect=10.0)
        async with httpx.AsyncClient(
            headers=headers, limits=limits, timeout=timeout, transport=self._client_transport
        ) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    async def run(self, request: ChatRequest, model: str, emit: Emit) -> str:
        if self._client is None:
            raise RuntimeError("transport used outside its session")
        url = self.base_url + CHAT_PATHS[self.host_type]
        body = upstream_request_body(request, model)
        try:
            async with self._client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise _status_failure(response.status_code, await response.aread(), response.headers)
                if request.stream:
                    return await _read_stream(response, emit)
                return await _read_completion(await response.aread(), emit)
        except httpx.TimeoutException as error:
            raise ProviderFailure(
                FailureKind.TIMEOUT, f"upstream timed out: {type(error).__name__}"
            ) from None
        except httpx.HTTPError as error:
            raise ProviderFailure(FailureKind.TRANSPORT, f"{type(error).__name__}: {error}"[:300]) from None


async def _read_stream(response: httpx.Response, emit: Emit) -> str:
    decoder = SSEDecoder()
    finish_reason: str | None = None
    done = False
    async for raw in response.aiter_bytes():
        try:
            events = decoder.feed(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise ProviderFailure(FailureKind.TRANSPORT, f"malformed stream: {error}") from None
        for event in events:
            if event.data.strip() == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(event.data)
                decoded, finish = decode_upstream_chunk(chunk)
            except UpstreamStreamError as error:
                raise ProviderFailure(
                    FailureKind.SERVER_ERROR, f"upstream error mid-stream: {error}"
                ) from None
            except ValueError as error:
                raise ProviderFailure(FailureKind.TRANSPORT, f"malformed stream chunk: {error}") from None
            for item in decoded:
                await emit(item)
            finish_reason = finish or finish_reason
        if done:
            break
    if not done and finish_reason is None:
        raise ProviderFailure(FailureKind.TRANSPORT, "upstream stream ended before it finished")
    return finish_reason or "stop"


async def _read_completion(body: bytes, emit: Emit) -> str:
    try:
        events, finish_reason = decode_upstream_completion(json.loads(body))
    except ValueError as error:
        raise ProviderFailure(FailureKind.TRANSPORT, f"malformed upstream answer: {error}") from None
    for event in events:
        await emit(event)
    return finish_reason


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_failure(status: int, body: bytes, headers: httpx.Headers) -> ProviderFailure:
    message = f"HTTP {status}: {upstream_error_message(body)}"
    if status == 429:
        return ProviderFailure(FailureKind.RATE_LIMITED, message, status, _retry_after(headers))
    if status in (401, 403):
        return ProviderFailure(FailureKind.AUTH, message, status)
    if status == 408:
        return ProviderFailure(FailureKind.TIMEOUT, message, status)
    if status >= 500:
        return ProviderFailure(FailureKind.SERVER_ERROR, message, status, _retry_after(headers))
    return ProviderFailure(FailureKind.REJECTED, message, status)
