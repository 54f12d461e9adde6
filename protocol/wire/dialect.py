"""What an HTTP provider's wire format must provide, so one transport can serve them all.

A dialect is pure: it builds the upstream call from a `ChatRequest` (or an `ImageRequest`, for the
formats that generate images) and decodes the upstream's bytes into events. The transport
(actors/transports/http_api.py) does the I/O and maps HTTP statuses to failure kinds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import orjson
from relaybox.protocol.chat import ChatRequest, EmbeddingRequest, ImageRequest
from relaybox.protocol.errors import FailureKind, ProviderFailure
from relaybox.protocol.events import TransportEvent
from relaybox.protocol.wire.sse import SSEDecoder, SSEvent


@attrs.frozen
class HttpCall:
    path: str  # appended to the provider's base URL, query string included
    headers: dict[str, str]
    body: dict[str, Any]


class StreamDecoder(Protocol):
    finish_reason: str | None

    def feed(self, data: bytes) -> list[TransportEvent]:
        """Events in the bytes received so far; raises `ProviderFailure` on a malformed stream."""
        ...

    def close(self) -> list[TransportEvent]:
        """The stream ended; raises `ProviderFailure` if it ended before the answer did."""
        ...


@attrs.frozen
class WholeCall:
    """A call answered in one body (images generated, inputs embedded): the call to make, and how
    to read its answer."""

    call: HttpCall
    decode: Callable[[bytes], list[TransportEvent]]


class Dialect(Protocol):
    name: str

    def call(self, request: ChatRequest, model: str, api_key: str | None) -> HttpCall: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def decode_body(self, body: bytes) -> tuple[list[TransportEvent], str]: ...

    def error_message(self, body: bytes) -> str: ...

    def image_call(self, request: ImageRequest, model: str, api_key: str | None) -> WholeCall | None:
        """None: this wire format generates no images."""
        ...

    def embedding_call(self, request: EmbeddingRequest, model: str, api_key: str | None) -> WholeCall | None:
        """None: this wire format embeds nothing (or not these inputs: token ids, say)."""
        ...


def vectors_of(rows: object, what: str) -> tuple[tuple[float, ...], ...]:
    """Vectors from an upstream's JSON: each a list of numbers."""
    if not isinstance(rows, list) or not rows:
        raise malformed(f"{what}: no vectors")
    vectors = []
    for row in rows:
        if not isinstance(row, list) or not all(isinstance(x, int | float) for x in row):
            raise malformed(f"{what}: a vector is not a list of numbers")
        vectors.append(tuple(float(x) for x in row))
    return tuple(vectors)


def malformed(detail: str) -> ProviderFailure:
    return ProviderFailure(FailureKind.TRANSPORT, f"malformed upstream stream: {detail}"[:300])


def upstream_error(detail: str) -> ProviderFailure:
    return ProviderFailure(FailureKind.SERVER_ERROR, f"upstream error mid-stream: {detail}"[:300])


def load_json(text: str | bytes) -> Any:
    """An upstream's JSON (every SSE frame of a stream goes through here: orjson, for speed)."""
    try:
        return orjson.loads(text)
    except ValueError as error:
        raise malformed(f"not JSON ({error})") from None


def error_message(body: bytes) -> str:
    """The human part of an upstream error body, whatever its dialect."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500] or "(empty body)"
    if isinstance(parsed, list) and parsed:  # Gemini wraps its errors in a list at times
        parsed = parsed[0]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:500]
        if isinstance(error, str):
            return error[:500]
    return json.dumps(parsed)[:500]


class SSEStreamDecoder:
    """Base for dialects that stream server-sent events: subclasses handle one event at a time."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.finish_reason: str | None = None
        self.done = False

    def feed(self, data: bytes) -> list[TransportEvent]:
        try:
            frames = self._sse.feed(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise malformed(str(error)) from None
        return [event for frame in frames if not self.done for event in self.on_event(frame)]

    def close(self) -> list[TransportEvent]:
        try:
            events = [event for frame in self._sse.close() if not self.done for event in self.on_event(frame)]
        except (ValueError, UnicodeDecodeError) as error:
            raise malformed(str(error)) from None
        if not self.done and self.finish_reason is None:
            raise ProviderFailure(FailureKind.TRANSPORT, "upstream stream ended before the answer did")
        return events

    def on_event(self, frame: SSEvent) -> list[TransportEvent]:
        raise NotImplementedError


class NDJSONStreamDecoder:
    """Base for dialects that stream one JSON object per line (Ollama)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.finish_reason: str | None = None

    def feed(self, data: bytes) -> list[TransportEvent]:
        self._buffer += data
        events: list[TransportEvent] = []
        while (newline := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:newline]).strip()
            del self._buffer[: newline + 1]
            if line:
                events += self.on_object(load_json(line))
        return events

    def close(self) -> list[TransportEvent]:
        events = self.feed(b"\n") if self._buffer.strip() else []
        if self.finish_reason is None:
            raise ProviderFailure(FailureKind.TRANSPORT, "upstream stream ended before the answer did")
        return events

    def on_object(self, obj: Any) -> list[TransportEvent]:
        raise NotImplementedError
