"""The optional LLM classifier (`LLM_CLASSIFIER=true`): before a smart-routed request is routed,
the cheapest economy model is asked for its category and complexity, like any request (through the
router, so its cost is logged), and the request is dispatched again with the verdict. No verdict in
time, or an unreadable one: the built-in classifier's stands."""

from __future__ import annotations

import contextlib
import logging
import uuid

import attrs
import trio
from relaybox.actors.cancellation import CancelToken
from relaybox.actors.mailbox import Mailbox, MailboxFull
from relaybox.actors.messages import Dispatch, RouterMessage
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.errors import RelayError
from relaybox.protocol.events import ContentDelta, Event, Failed, Finished
from relaybox.protocol.routing.catalog import Candidate
from relaybox.protocol.routing.classifier import Classification, TierThresholds
from relaybox.protocol.routing.llm_classifier import classification_request, read_classification
from relaybox.protocol.routing.plan import RoutingContext, cheapest_capable

log = logging.getLogger("relaybox.router")

CLASSIFIER_CLIENT = "relaybox-classifier"


async def classify_then_dispatch(
    router: Mailbox[RouterMessage],
    dispatch: Dispatch,
    builtin: Classification,
    context: RoutingContext,
) -> None:
    """Ask the cheapest economy model to classify the request, then hand the request back to the
    router with its verdict (the built-in one when it gives none in time)."""
    handed_on = False
    try:
        classification = None
        try:
            ask = cheapest_capable(attrs.evolve(builtin, tier="economy"), "classifier", context).candidates[0]
        except RelayError:  # no economy model is enabled: the request itself will say what is missing
            ask = None
        if ask is not None:
            with trio.move_on_after(context.settings.classifier_timeout):
                classification = await _ask(router, dispatch, builtin, ask, context.settings.thresholds)
        if classification is None:
            classification = attrs.evolve(builtin, signals=(*builtin.signals, "llm classifier: no verdict"))
        if not dispatch.cancel.cancelled:
            router.tell(attrs.evolve(dispatch, classification=classification))
        handed_on = True
    except MailboxFull:
        pass
    except Exception:  # a bug here must not take the router down with every request in it
        log.exception("the LLM classifier step failed; the request was answered 503")
    finally:
        if not handed_on:  # the router is overloaded or stopping: answer rather than leave it waiting
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                dispatch.reply.send_nowait(
                    Failed(
                        RelayError(
                            503,
                            "relaybox could not route this request (router busy or stopping); retry",
                            "service_unavailable",
                            code="overloaded",
                            retry_after=1,
                        )
                    )
                )


async def _ask(
    router: Mailbox[RouterMessage],
    dispatch: Dispatch,
    builtin: Classification,
    ask: Candidate,
    thresholds: TierThresholds,
) -> Classification | None:
    assert isinstance(dispatch.request, ChatRequest)
    question = classification_request(dispatch.request, f"{ask.provider}:{ask.model}")
    send, receive = trio.open_memory_channel[Event](64)
    token = CancelToken()
    text: list[str] = []
    try:
        try:
            router.tell(Dispatch(f"chatcmpl-{uuid.uuid4().hex}", question, send, token, CLASSIFIER_CLIENT))
        except MailboxFull:
            return None
        async with receive:
            async for event in receive:
                if isinstance(event, ContentDelta):
                    text.append(event.text)
                elif isinstance(event, Finished):
                    return read_classification("".join(text), builtin, thresholds)
                elif isinstance(event, Failed):
                    return None
        return None
    finally:
        token.cancel()
