"""The response headers of an answer, built in one place: who answered and why, what relaybox
added, where the answer came from (the cache, a request in flight), and what it cost."""

from __future__ import annotations

from relaybox.protocol.routing.plan import unknown_name
from relaybox.web.answer import Begun, Collected


def header_safe(text: str) -> str:
    return text.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:300]


def answer_headers(request_id: str, begun: Begun) -> dict[str, str]:
    answering, origin = begun.answering, begun.origin
    headers = {
        "x-task-id": request_id,
        "x-provider": answering.provider,
        "x-model": answering.model,
        "x-router-reason": header_safe(answering.reason),
        "x-fallback-used": "true" if answering.fallback_used else "false",
        "x-overhead-ms": f"{origin.overhead_ms:.2f}",
    }
    if origin.tokens_saved is not None:
        headers["x-tokens-saved"] = str(origin.tokens_saved)
    if origin.cache_hit is not None:
        headers["x-cache-hit"] = "true" if origin.cache_hit else "false"
    if origin.cached_from is not None:
        headers["x-cached-from"] = origin.cached_from
    if origin.deduplicated_from is not None:
        headers["x-deduplicated-from"] = origin.deduplicated_from
    unknown = unknown_name(answering.reason)
    if unknown is not None:
        headers["x-relaybox-warning"] = header_safe(
            f"no provider serves the model '{unknown}': {answering.provider}/{answering.model} answered "
            "(smart routing)"
        )
    return headers


def with_cost(headers: dict[str, str], answer: Collected) -> dict[str, str]:
    """Non-streaming answers say what they cost (a stream's headers leave before the usage)."""
    if answer.usage is None or answer.usage.cost_usd is None:
        return headers
    return {**headers, "x-cost-usd": f"{answer.usage.cost_usd:.8f}"}


def stream_headers(headers: dict[str, str]) -> dict[str, str]:
    """An event stream's: not to be cached or buffered by anything between relaybox and the client."""
    return {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
