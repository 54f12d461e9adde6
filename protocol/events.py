"""What flows back from a provider to the client, through one trio memory channel per request.

A request's reply channel carries, in order: one `Answering` (which provider and model took
the request), then `ContentDelta` / `ToolCallDelta` events, at most one `Usage`, and exactly one
terminal event: `Finished` or `Failed`. Failures before `Answering` never reach the channel:
the router re-dispatches them to the next candidate instead.
"""

from __future__ import annotations

from typing import Any

import attrs
from relaybox.protocol.errors import RelayError


@attrs.frozen
class Answering:
    provider: str
    model: str
    reason: str
    attempt: int
    fallback_used: bool
    # Time this request has spent waiting on upstreams (failed attempts included) until the
    # answer began: what relaybox did not add itself.
    upstream_ms: float


@attrs.frozen
class ContentDelta:
    text: str


@attrs.frozen
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    images: int = 0  # images generated, for per-image prices
    # What the upstream says the call cost, when it says (the Claude CLI does).
    reported_cost_usd: float | None = None
    # What relaybox computes it cost (configured prices, else genai-prices); None if unknown.
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class GeneratedImages:
    """Images an upstream generated: each a dict with `b64_json` or `url`, maybe `revised_prompt`."""

    images: tuple[dict[str, Any], ...]


@attrs.frozen
class Embedded:
    """Vectors an upstream computed, one per input, in the inputs' order."""

    vectors: tuple[tuple[float, ...], ...]


@attrs.frozen
class ToolRan:
    """The tool loop ran one MCP tool call: shown to streaming clients as a comment they ignore."""

    name: str  # as the model called it: mcp__SERVER__TOOL
    ok: bool
    seconds: float


@attrs.frozen
class Finished:
    finish_reason: str
    upstream_ms: float


@attrs.frozen
class Failed:
    error: RelayError


Event = (
    Answering
    | ContentDelta
    | ToolCallDelta
    | GeneratedImages
    | Embedded
    | ToolRan
    | Usage
    | Finished
    | Failed
)

# What a transport emits; the provider actor adds `Answering` and the terminal events.
TransportEvent = ContentDelta | ToolCallDelta | GeneratedImages | Embedded | Usage
