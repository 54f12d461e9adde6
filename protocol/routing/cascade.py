"""The cascade: a non-streaming answer is held until complete anyway, so one that scores poorly
can still give way to a stronger candidate further down the route (never to a peer of the same
tier, which is no better bet than the one that failed). Pure; the router applies it."""

from __future__ import annotations

from collections.abc import Callable

from relaybox.protocol.chat import ChatRequest, ModelRequest
from relaybox.protocol.routing.catalog import TIERS, Candidate, Catalog


def tier_rank(tier: str | None) -> int:
    return TIERS.index(tier) if tier in TIERS else -1


def first_stronger(catalog: Catalog, candidates: tuple[Candidate, ...], index: int) -> int:
    """Where the climb goes on after `candidates[index]` failed on quality: the first candidate of a
    higher tier (past the end when there is none)."""
    rank = tier_rank(catalog.tier_of(candidates[index]))
    for later in range(index + 1, len(candidates)):
        if tier_rank(catalog.tier_of(candidates[later])) > rank:
            return later
    return len(candidates)


def escalation_threshold(
    cascade_below: int,
    catalog: Catalog,
    request: ModelRequest,
    candidates: tuple[Candidate, ...],
    index: int,
    available: Callable[[Candidate], bool],
) -> int | None:
    """The score under which `candidates[index]`'s answer is held back for a stronger candidate
    that can take work now; None: its answer goes out whatever it scores."""
    if not cascade_below or request.stream or not isinstance(request, ChatRequest):
        return None
    rank = tier_rank(catalog.tier_of(candidates[index]))
    if rank < 0:
        return None
    stronger_up = any(tier_rank(catalog.tier_of(c)) > rank and available(c) for c in candidates[index + 1 :])
    return cascade_below if stronger_up else None
