"""Whether a candidate can take a request at all: images, its context window, and (at compression
level "aggressive") the oldest turns trimmed so the prompt fits that window. Pure; the router asks
once per candidate as it walks a route."""

from __future__ import annotations

import attrs
from relaybox.protocol import tokens
from relaybox.protocol.chat import ChatRequest, ModelRequest
from relaybox.protocol.compression.pipeline import tokens_saved
from relaybox.protocol.compression.trimming import trim
from relaybox.protocol.routing.catalog import Candidate, Catalog
from relaybox.protocol.routing.progress import DispatchState

# Tokens left for the answer when trimming a prompt to a window and the request sets no max_tokens.
ANSWER_ROOM = 4096


def trimmed_to_fit(
    catalog: Catalog, candidate: Candidate, request: ModelRequest, state: DispatchState
) -> tuple[ChatRequest, DispatchState, int] | None:
    """Compression's last stage, at level "aggressive": the oldest turns trimmed so the prompt
    fits this candidate's context window (with room for the answer), with the tokens it may
    now take at most; None when it fits as it is, or cannot be made to."""
    if state.compression_level != "aggressive" or not isinstance(request, ChatRequest):
        return None
    models = catalog.provider(candidate.provider)
    entry = None if models is None else models.entry(candidate.model)
    if entry is None or entry.context_window is None:
        return None
    room = entry.context_window - (request.max_tokens or ANSWER_ROOM)
    if tokens.lower_bound(request) * 2 < room:  # certainly fits: no need to count
        return None
    messages = trim(request.messages, room, tokens.count_message)
    if messages == request.messages:
        return None
    saved = (state.tokens_saved or 0) + tokens_saved(request.messages, messages)
    return attrs.evolve(request, messages=messages), attrs.evolve(state, tokens_saved=saved), room


def missing_capability(
    catalog: Catalog, candidate: Candidate, request: ModelRequest, counted: int | None = None
) -> str | None:
    """Why this candidate cannot take the request at all, or None. `counted`: the prompt's
    tokens when they are known exactly (a trimmed prompt), else a cheap lower bound decides."""
    models = catalog.provider(candidate.provider)
    if models is None or not isinstance(request, ChatRequest):
        return None
    if not models.vision and request.has_images():
        return "does not take images"
    entry = models.entry(candidate.model)
    if entry is not None and entry.context_window is not None:
        needed = tokens.lower_bound(request) if counted is None else counted
        if needed > entry.context_window:
            return f"the prompt needs at least {needed} tokens; the context window is {entry.context_window}"
    return None
