"""Handing a request to the router, and waiting until a provider begins to answer it (or every
candidate has failed): the last stage of the request pipeline, and all a connection test needs."""

from __future__ import annotations

import contextlib

import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import MailboxFull
from relaybox.actors.messages import Dispatch, OverheadObserved
from relaybox.protocol.chat import ModelRequest
from relaybox.protocol.errors import RelayError, router_down
from relaybox.protocol.events import Answering, Event, Failed
from relaybox.protocol.keys import KeyBudget
from relaybox.web.answer import REPLY_BUFFER, Begun, Origin, next_event, unexpected
from relaybox.web.system import System


async def dispatch(
    system: System,
    chat: ModelRequest,
    request_id: str,
    client: str | None = None,
    route_header: str | None = None,
    *,
    tokens_saved: int | None = None,
    compression_level: str = "safe",
    key_budget: KeyBudget | None = None,
    purpose: str | None = None,
    attempts_before: int = 0,
) -> Begun:
    """`tokens_saved`: what prompt compression saved on `chat` (None: it did not run)."""
    started = trio.current_time()
    if not system.router_running():
        raise router_down()
    send, receive = trio.open_memory_channel[Event](REPLY_BUFFER)
    token = CancelToken()
    message = Dispatch(
        request_id,
        chat,
        send,
        token,
        client,
        route_header,
        compression_level=compression_level,
        tokens_saved=tokens_saved,
        key_budget=key_budget,
        purpose=purpose,
        attempts_before=attempts_before,
    )
    try:
        system.router.mailbox.tell(message)
    except MailboxFull:
        raise RelayError(
            503,
            "relaybox is overloaded (router queue full); retry shortly",
            "service_unavailable",
            code="overloaded",
            retry_after=1,
        ) from None
    try:
        first = await next_event(receive)
    except BaseException:
        token.cancel()
        receive.close()
        raise
    if not isinstance(first, Answering):
        token.cancel()
        receive.close()
        raise first.error if isinstance(first, Failed) else unexpected(first)
    overhead_ms = max(0.0, (trio.current_time() - started) * 1000 - first.upstream_ms)
    with contextlib.suppress(MailboxFull):  # statistics: never worth failing a request over
        system.router.mailbox.tell(OverheadObserved(overhead_ms))
    return Begun(first, receive, token, Origin(overhead_ms=overhead_ms, tokens_saved=tokens_saved))
