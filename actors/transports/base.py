"""The contract between a provider actor and its transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from relaybox.protocol.chat import ModelRequest
from relaybox.protocol.events import TransportEvent

Emit = Callable[[TransportEvent], Awaitable[None]]


class Transport(Protocol):
    """Runs one request against one upstream.

    `run` sends events through `emit` as the upstream produces them and returns the finish
    reason; it raises `ProviderFailure` for anything the upstream did wrong. Any other
    exception is a bug: it crashes the provider actor, which the supervisor restarts.
    Resources that live as long as one actor incarnation (connection pools) are opened by
    `session`.
    """

    def session(self) -> AbstractAsyncContextManager[None]: ...

    async def run(self, request: ModelRequest, model: str, emit: Emit) -> str: ...

    def statistics(self) -> Any:
        """A frozen snapshot of what the transport is and has done, for /actors."""
        ...
