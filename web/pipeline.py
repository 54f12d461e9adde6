"""The request pipeline: every model call relaybox answers goes through it, in this order.

    1. keys and limits  the client key, and its requests and tokens a minute (`admit`: the app
                        runs it before every handler, since the management API needs keys too)
    2. cache            a finished answer to the same deterministic request is replayed
    3. dedup            an identical request still in flight is joined
    4. compression      the prompt's compression stages, for a request that goes upstream
    5. dispatch         to the router, which walks the route to a provider (`web/dispatch.py`)
    6. answer           a `Begun` for the handler to render, its response headers built here, once

It owns what the requests of this process share: the response cache's memory and the answers in
flight. Handlers turn the HTTP request into a `ModelCall` (`web/calls.py`) and render the answer
(`web/streaming.py`, or collected whole).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import attrs
from relaybox.actors.cancellation import CancelToken
from relaybox.protocol.caching import cache_key
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.compression.pipeline import compress
from relaybox.protocol.events import Answering, Event
from relaybox.protocol.keys import client_of
from relaybox.protocol.routing.plan import unknown_name
from relaybox.protocol.tool_loop import ToolOutcome
from relaybox.storage.records import ApiKey, AttemptRecord, group_id
from relaybox.web.answer import Begun, Origin
from relaybox.web.answer_cache import AnswerCache, StoringSource, replay
from relaybox.web.dedup import InFlightAnswers
from relaybox.web.dispatch import dispatch
from relaybox.web.drain import Drain, shutting_down
from relaybox.web.feedback import FeedbackCommand, rate
from relaybox.web.headers import answer_headers
from relaybox.web.model_call import ModelCall
from relaybox.web.stored_responses import ResponseStore
from relaybox.web.system import System
from relaybox.web.tool_loop import ToolLoop, tool_loop_servers

log = logging.getLogger("relaybox.routing")
# Unknown model names logged once each, at most this many.
WARNED_NAMES = 1000
# What is still answered while relaybox drains: liveness, and readiness (which says it drains).
DURING_DRAIN = frozenset({"/ping", "/health"})


class RequestPipeline:
    """The stages above, over a running system; one per app, holding the cache's memory and the
    answers in flight (`current_pipeline()` in a handler)."""

    def __init__(self, system: System) -> None:
        settings = system.settings
        self.system = system
        self.cache = AnswerCache(settings.cache_bytes, writer=system.cache_writer)
        self.in_flight = InFlightAnswers(settings.dedup_seconds)
        self.responses = ResponseStore(system.storage, system.response_writer)  # the Responses API's
        self.drain = Drain()  # the server's graceful stop
        self._recorder = system.recorder if settings.record_requests else None
        self._warned_names: set[str] = set()  # unknown model names already logged

    async def admit(
        self, method: str, path: str, authorization: str | None, x_api_key: str | None
    ) -> ApiKey | None:
        """Stage 1: the key a request was made with (None when none is needed), counted against its
        limits; raises the 401, 403 or 429 to send."""
        if self.drain.draining and path not in DURING_DRAIN:
            raise shutting_down()
        keys = self.system.keys
        if keys is None:
            return None
        key = keys.check(method, path, authorization, x_api_key)
        await keys.within_limit(key, path, time.time())
        return key

    async def answer(self, call: ModelCall) -> Begun:
        """Stages 2 to 6; for a route with tools, the tool loop over them, each of its model calls
        stages 2 to 6 (`web/tool_loop.py`)."""
        system = self.system
        loop = tool_loop_servers(
            call, system.settings.mcp, system.mcp_servers, system.settings.routing.routes
        )
        if loop is None:
            return await self.answer_step(call)
        loop_call, servers = loop
        return await ToolLoop(self, loop_call, servers, system.settings.mcp).begin()

    async def answer_step(self, call: ModelCall) -> Begun:
        """Stages 2 to 6 for one model call."""
        key = self._cache_key(call)
        begun = None
        if key is not None and call.cache is not None and call.cache.lookup:
            begun = await self._replayed(call, key)
        if begun is None:
            begun = await self._shared_or_own(call, key)
        begun.headers = answer_headers(call.request_id, begun)
        begun.drain = self.drain
        self._warn_of_unknown_name(begun)
        return begun

    def _warn_of_unknown_name(self, begun: Begun) -> None:
        """A name nothing serves answered by smart routing: said in the log, once per name (the
        names a client can make up are bounded here too)."""
        name = unknown_name(begun.answering.reason)
        if name is None or name in self._warned_names or len(self._warned_names) >= WARNED_NAMES:
            return
        self._warned_names.add(name)
        answered = f"{begun.answering.provider}/{begun.answering.model}"
        log.warning(
            "no provider serves the model %r: smart routing answered with %s (said once per name)",
            name,
            answered,
        )

    async def answer_feedback(self, request_id: str, command: FeedbackCommand, key: ApiKey | None) -> Begun:
        """An in-chat `/feedback` command, answered by relaybox itself in the place of stages 2-5; with
        a key, it rates only that key's answers."""
        client = None if key is None else client_of(key.name)
        begun = await rate(self.system.storage, command, client, self.system.rated)
        begun.headers = answer_headers(request_id, begun)
        begun.drain = self.drain
        return begun

    # --- stage 2: the cache ----------------------------------------------------------

    def _cache_key(self, call: ModelCall) -> bytes | None:
        """The normalised request, when the cache has a part in this one."""
        if call.cache is None or not self.cache.enabled or not isinstance(call.request, ChatRequest):
            return None
        return cache_key(call.request, call.route_header, None if call.key is None else call.key.name)

    async def _replayed(self, call: ModelCall, key: bytes) -> Begun | None:
        entry = self.cache.get(key) or await self.cache.get_shared(key)
        if entry is None:
            return None
        age = time.time() - entry.stored_at
        reason = f"cache hit: the answer to {entry.request_id} from {age:.0f} s ago"
        answering = attrs.evolve(entry.answering, reason=reason, fallback_used=False, upstream_ms=0.0)
        # Its saving is the answer's cost: the baseline the dashboard's "saved" compares with.
        await self._recorded(answering, call, reason, cache_hit=True, baseline_cost_usd=entry.cost_usd())
        origin = Origin(cache_hit=True, cached_from=entry.request_id)
        return Begun(answering, replay(entry), CancelToken(), origin)

    # --- stage 3: an identical request in flight ---------------------------------------

    async def _shared_or_own(self, call: ModelCall, key: bytes | None) -> Begun:
        if call.dedup_key is None or self.in_flight.window <= 0:
            return await self._own(call, key)
        joined = await self.in_flight.join(call.dedup_key)
        if joined is not None:
            reason = f"deduplicated: shared the upstream call of {joined.origin.deduplicated_from}"
            await self._recorded(joined.answering, call, reason, status="deduplicated")
            return joined
        lead = self.in_flight.lead(call.dedup_key, call.request_id)
        try:
            begun = await self._own(call, key)
        except BaseException as error:
            lead.failed(error)
            raise
        return lead.started(begun)

    # --- stages 4 and 5: compression and dispatch ------------------------------------------

    async def _own(self, call: ModelCall, key: bytes | None) -> Begun:
        """The request's own upstream call; its answer is kept by the cache if it may be."""
        sent, saved = call.request, None
        if isinstance(sent, ChatRequest) and call.compression != "off":
            compressed = compress(sent, call.compression)
            sent, saved = compressed.request, compressed.saved
        with self.drain.bounded():  # no provider began in the grace period: the stop ends the wait
            return self._kept(
                call,
                key,
                await dispatch(
                    self.system,
                    sent,
                    call.request_id,
                    call.client,
                    call.route_header,
                    tokens_saved=saved,
                    compression_level=call.compression,
                    key_budget=None if call.key is None else call.key.budget(),
                    attempts_before=call.attempts_before,
                ),
            )
        raise shutting_down()

    def _kept(self, call: ModelCall, key: bytes | None, begun: Begun) -> Begun:
        if key is None or call.cache is None or not call.cache.store:
            return begun
        ttl, request_id = call.cache.ttl, call.request_id

        def keep(events: tuple[Event, ...]) -> None:
            self.cache.put(key, events, request_id, ttl)

        begun.receive = StoringSource(begun.receive, begun.answering, keep)
        begun.origin = attrs.evolve(begun.origin, cache_hit=False)
        return begun

    async def record_tool_call(self, call: ModelCall, server: str, tool: str, outcome: ToolOutcome) -> None:
        """The log row of one MCP tool call of a tool loop (status `tool` or `tool_failed`, cost 0)."""
        await self._record(
            call,
            attempt=0,
            provider=f"mcp:{server}",
            model_selected=tool,
            router_reason=f"tool loop: {outcome.call.name}",
            task_category="tool",
            prompt_summary=outcome.call.arguments[:500],
            status="tool" if outcome.ok else "tool_failed",
            latency_ms=round(outcome.seconds * 1000),
            cli_success=outcome.ok,
            error_message=None if outcome.ok else outcome.text[:500],
        )

    async def _recorded(self, answering: Answering, call: ModelCall, reason: str, **fields: Any) -> None:
        """The log row of a request answered without an upstream call of its own (cost 0), safe in
        the journal before the answer begins."""
        fields = {"attempt": 1, "provider": answering.provider, "model_selected": answering.model, **fields}
        await self._record(call, router_reason=reason, **fields)

    async def _record(self, call: ModelCall, **fields: Any) -> None:
        if self._recorder is None:
            return
        record = AttemptRecord(
            id=str(uuid.uuid4()),
            created_at=time.time(),
            request_group_id=group_id(call.request_id),
            client=call.client,
            **fields,
        )
        await self._recorder.recorded(record)
