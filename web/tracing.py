"""OpenTelemetry traces: one span per HTTP request (continuing the client's `traceparent`), and
under it one span per attempt of the request (the provider and model, tokens, cost, status and why
it fell back) and per tool call of a tool loop. Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter reads the other standard `OTEL_*`
variables (headers, timeout) itself.

An attempt runs in a provider actor, not in the request's task, and is known whole only when its
record is made: the records of a request are held here until its response has been sent, then
become its span's children, with their own start and end times. relaybox's own calls made after
the response (a shadow answer, a judge's verdict) become children of the request's span as their
records arrive, for as long as that span is remembered (the newest `REMEMBERED_REQUESTS`).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from relaybox.actors.span_shipper import SpanShipper
from relaybox.storage.records import AttemptRecord, group_id

# Records held for requests still answering, at most (the oldest go first).
HELD_RECORDS = 10_000
# Requests answered whose span a later call of relaybox's own can still join.
REMEMBERED_REQUESTS = 10_000
PROPAGATOR = TraceContextTextMapPropagator()


def tracing_wanted(env: Mapping[str, str]) -> bool:
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Tracing:
    def __init__(self, shipper: SpanShipper) -> None:
        self.shipper = shipper
        provider = TracerProvider(resource=Resource.create({"service.name": "relaybox"}))
        provider.add_span_processor(shipper)
        self.tracer = provider.get_tracer("relaybox")
        self._held: collections.OrderedDict[str, list[AttemptRecord]] = collections.OrderedDict()
        self._count = 0
        self._answered: collections.OrderedDict[str, trace.SpanContext] = collections.OrderedDict()

    def request_began(self, method: str, path: str, headers: Mapping[str, str]) -> Span:
        """The request's span, a child of the client's trace when it sent a `traceparent`."""
        parent = PROPAGATOR.extract(carrier=headers)
        span = self.tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        return span  # type: ignore[return-value]

    def request_ended(
        self, span: Span, status: int, facts: Mapping[str, Any], fields: Mapping[str, str]
    ) -> None:
        span.set_attribute("http.response.status_code", status)
        for name in ("provider", "model", "task_id"):
            if fields.get(name):
                span.set_attribute(f"relaybox.{name}", fields[name])
        if facts.get("key"):
            span.set_attribute("relaybox.client_key", facts["key"])
        if status >= 500 or status == 0:
            span.set_status(Status(StatusCode.ERROR))
        task_id = facts.get("task_id") or fields.get("task_id")
        parent = trace.set_span_in_context(span)
        if task_id:
            group = group_id(task_id)
            held = self._held.pop(group, [])
            self._count -= len(held)
            for record in held:
                self._attempt_span(record, parent)
            self._answered[group] = span.get_span_context()
            if len(self._answered) > REMEMBERED_REQUESTS:
                self._answered.popitem(last=False)
        span.end()

    def observe(self, record: AttemptRecord) -> None:
        """For the recorder: every record as it is handed over, held until its request ends, or a
        child of its request's span at once when that request has been answered already."""
        answered = self._answered.get(record.request_group_id)
        if answered is not None:
            self._attempt_span(record, trace.set_span_in_context(trace.NonRecordingSpan(answered)))
            return
        self._held.setdefault(record.request_group_id, []).append(record)
        self._count += 1
        while self._count > HELD_RECORDS:
            _, dropped = self._held.popitem(last=False)
            self._count -= len(dropped)

    def _attempt_span(self, record: AttemptRecord, parent: Any) -> None:
        ended = int(record.created_at * 1e9)
        started = ended - record.latency_ms * 1_000_000
        tool = record.provider.startswith("mcp:")
        name = (
            f"tool {record.provider[4:]}.{record.model_selected}"
            if tool
            else f"attempt {record.provider}/{record.model_selected}"
        )
        attributes: dict[str, Any] = {
            "relaybox.provider": record.provider,
            "relaybox.model": record.model_selected,
            "relaybox.status": record.status,
            "relaybox.attempt": record.attempt,
        }
        if not tool:
            attributes |= {
                "gen_ai.request.model": record.model_requested or "",
                "gen_ai.response.model": record.model_selected,
                "gen_ai.usage.input_tokens": record.tokens_in,
                "gen_ai.usage.output_tokens": record.tokens_out,
                "relaybox.cost_usd": record.cost_usd,
                "relaybox.router_reason": record.router_reason or "",
                "relaybox.fallback_used": record.fallback_used,
            }
        if record.error_message:
            attributes["relaybox.error"] = record.error_message
        span = self.tracer.start_span(
            name, context=parent, kind=SpanKind.CLIENT, start_time=started, attributes=attributes
        )
        if record.status not in ("success", "tool", "deduplicated", "shadow", "judge"):
            span.set_status(Status(StatusCode.ERROR, record.status))
        span.end(end_time=ended)
