"""Ships finished trace spans to an OpenTelemetry collector (OTLP over HTTP), off the request path.

The SDK's own batch processor runs a thread of its own; here a supervised actor does that work, so
the process keeps to trio's tasks (and `trio.to_thread` for the exporter's blocking call). Spans
wait in a bounded queue: a collector that is down or slow costs spans, never requests.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import attrs
import trio
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("relaybox.tracing")

QUEUE = 8192  # spans waiting; past it the oldest are dropped
BATCH = 512
EVERY = 1.0  # seconds between shipments when fewer than a batch wait
DRAIN_TIMEOUT = 5.0


@attrs.frozen
class SpanShipperStatistics:
    queued: int
    shipped: int
    dropped: int
    failed_batches: int


class SpanShipper(SpanProcessor):
    """A span processor (the tracer provider hands it each finished span) and the actor that
    exports them in batches."""

    kind = "tracing"
    name = "tracing"

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._shipped = self._dropped = self._failed = 0

    # --- SpanProcessor -------------------------------------------------------------------------

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if len(self._queue) >= QUEUE:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # --- the actor ---------------------------------------------------------------------------

    def statistics(self) -> SpanShipperStatistics:
        return SpanShipperStatistics(len(self._queue), self._shipped, self._dropped, self._failed)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.sleep(EVERY)
                while self._queue:
                    await self._ship()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT):
                while self._queue:
                    await self._ship()

    async def _ship(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        result = await trio.to_thread.run_sync(self.exporter.export, batch)
        if result is SpanExportResult.SUCCESS:
            self._shipped += len(batch)
        else:
            self._failed += 1
            log.warning("the trace collector refused %d spans", len(batch))

    async def on_crash(self, error: BaseException) -> None:
        return None

    def on_give_up(self) -> None:
        log.error("the span shipper stopped: traces are no longer sent")
