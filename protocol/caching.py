"""The response cache's rules, pure: which requests are the same (`cache_key`), what a request
allows (`cache_policy`), and a finished answer as it is kept and stored (`CachedAnswer`, and its
events as JSON for the database's shared tier).

What is identical is the normalised request: model, messages, tools, sampling parameters and route,
not the body's bytes, and not whether it streams. Only deterministic requests are cached unless the
client opts in: `temperature` 0, or the header `x-relaybox-cache: on`. `cache-control: no-cache`
skips the lookup (the fresh answer is still kept), `cache-control: no-store` and
`x-relaybox-cache: off` leave the cache out entirely, and `x-relaybox-cache-ttl: SECONDS` sets how
long this answer is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import attrs
import cattrs
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import Answering, ContentDelta, Event, Finished, ToolCallDelta, Usage

# Body fields that do not change the answer (who asks, how it is delivered, what is stored upstream).
IGNORED_PASSTHROUGH = frozenset(
    {"user", "metadata", "store", "stream_options", "service_tier", "parallel_tool_calls"}
)
# Rough bytes an event costs beyond its text, for the cache's size bound.
EVENT_OVERHEAD = 200


@attrs.frozen
class CachePolicy:
    lookup: bool  # answer from the cache if it can
    store: bool  # keep the fresh answer
    ttl: float


def cache_key(chat: ChatRequest, route_header: str | None, owner: str | None = None) -> bytes:
    """The normalised request: everything that shapes the answer, nothing that only shapes its
    delivery; and whose it is (`owner`, a client key's name), so one key's answers are never
    another's (which would tell one key what another asked)."""
    fields = attrs.asdict(chat, recurse=True)
    for delivery in ("stream", "include_usage"):
        fields.pop(delivery)
    fields["passthrough"] = {k: v for k, v in chat.passthrough.items() if k not in IGNORED_PASSTHROUGH}
    canonical = json.dumps([fields, route_header, owner], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=20).digest()


def cache_policy(chat: ChatRequest, headers: Mapping[str, str], default_ttl: float) -> CachePolicy | None:
    """What this request may do with the cache; None: nothing (not deterministic, or the client says no)."""
    control = {part.strip().lower() for part in headers.get("cache-control", "").split(",")}
    switch = headers.get("x-relaybox-cache", "").strip().lower()
    if "no-store" in control or switch == "off" or chat.passthrough.get("n", 1) != 1:
        return None
    if switch not in ("", "on"):
        raise RelayError(
            400, "x-relaybox-cache must be 'on' or 'off'", code="invalid_header", param="x-relaybox-cache"
        )
    if not (chat.temperature == 0 or switch == "on"):
        return None
    ttl = default_ttl
    if (override := headers.get("x-relaybox-cache-ttl")) is not None:
        try:
            ttl = float(override)
        except ValueError:
            ttl = -1.0
        if not 0 < ttl <= 30 * 86400:
            raise RelayError(
                400,
                "x-relaybox-cache-ttl must be a number of seconds, above 0 and at most 30 days",
                code="invalid_header",
                param="x-relaybox-cache-ttl",
            )
    return CachePolicy(lookup="no-cache" not in control, store=True, ttl=ttl)


@attrs.frozen
class CachedAnswer:
    events: tuple[Event, ...]  # Answering first, Finished last
    request_id: str  # the request whose answer it is
    stored_at: float
    expires_at: float
    size: int

    @property
    def answering(self) -> Answering:
        first = self.events[0]
        assert isinstance(first, Answering)
        return first

    def cost_usd(self) -> float:
        return sum(e.cost_usd or 0.0 for e in self.events if isinstance(e, Usage))


def answer_size(events: tuple[Event, ...]) -> int:
    text = 0
    for event in events:
        if isinstance(event, ContentDelta):
            text += len(event.text.encode())
        elif isinstance(event, ToolCallDelta):
            text += len((event.arguments or "").encode()) + len(event.name or "")
    return text + EVENT_OVERHEAD * len(events)


EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (Answering, ContentDelta, ToolCallDelta, Usage, Finished)
}
_converter = cattrs.Converter()


def encode_events(events: tuple[Event, ...]) -> str:
    return json.dumps([{"type": type(e).__name__, **_converter.unstructure(e)} for e in events])


def decode_events(text: str) -> tuple[Event, ...]:
    """Raises ValueError, KeyError or a cattrs error on anything but what `encode_events` wrote."""
    events = []
    for item in json.loads(text):
        kind = EVENT_TYPES[item.pop("type")]
        events.append(_converter.structure(item, kind))
    if not events or not isinstance(events[0], Answering) or not isinstance(events[-1], Finished):
        raise ValueError("not a whole answer")
    return tuple(events)
