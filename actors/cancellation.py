"""A cancel token: lets the HTTP handler stop work running in a provider actor's task.

The handler learns of a client disconnect as a `Cancelled` in its own task, where it may not
await. Cancelling the token is synchronous: it cancels whatever scope the provider attached,
at once, rather than waiting for the provider's next send into a closed channel.
"""

from __future__ import annotations

import trio


class CancelToken:
    def __init__(self) -> None:
        self.cancelled = False
        self._scopes: list[trio.CancelScope] = []

    def cancel(self) -> None:
        self.cancelled = True
        for scope in self._scopes:
            scope.cancel()

    def attach(self, scope: trio.CancelScope) -> None:
        """Cancel `scope` when the token is cancelled (at once if it already is)."""
        self._scopes.append(scope)
        if self.cancelled:
            scope.cancel()

    def detach(self, scope: trio.CancelScope) -> None:
        self._scopes.remove(scope)
