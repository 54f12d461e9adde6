"""OpenTelemetry traces, received by an OTLP/HTTP collector written here: a span per request that
continues the client's `traceparent`, and under it a span per attempt (a failed one and its
fallback), per tool call of a tool loop, and per call relaybox makes of its own after the answer
(a shadow answer, a judge)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from relaybox.protocol.routing.learned_route import LearnedPolicy

from tests.fakes.http_server import FakeHTTPServer, FakeRequest, ResponseWriter
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import eventually, openai_provider, serve, settings_for
from tests.test_learned_routing_live import cheap_answer, model, strong_answer, two_models
from tests.test_tool_loop import WORKBENCH, call, loop_settings, script, tool_messages

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP trace receiver: every span it was sent, with its attributes as a dict."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.server = FakeHTTPServer(self._handle)

    async def _handle(self, request: FakeRequest, out: ResponseWriter) -> None:
        if request.method == "POST" and request.path == "/v1/traces":
            export = ExportTraceServiceRequest.FromString(request.body)
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "error": span.status.code == 2,
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                            }
                        )
        await out.send(200, b"", {"content-type": "application/x-protobuf"})

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"].startswith(prefix)]


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


@pytest.fixture
async def collector(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> Collector:
    receiver = Collector()
    await receiver.server.start(nursery)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.server.base_url)
    return receiver


async def spans_of(collector: Collector, name: str, count: int) -> list[dict[str, Any]]:
    with trio.fail_after(15):
        while len(collector.named(name)) < count:  # noqa: ASYNC110 - the shipper's own schedule
            await trio.sleep(0.1)
    return collector.named(name)


async def test_a_request_span_continues_the_clients_trace_with_an_attempt_span_each(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI, collector: Collector
) -> None:
    fake_openai.replies.push(Reply(status=503, error_message="overloaded"))
    settings = settings_for(
        tmp_path,
        openai_provider("first", fake_openai.base_url),
        openai_provider("second", fake_openai_backup.base_url),
        tracing=True,
    )
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
        )
        [request] = await spans_of(collector, "POST /v1/chat/completions", 1)
        attempts = await spans_of(collector, "attempt ", 2)
    assert answer.status_code == 200 and answer.headers["x-provider"] == "second"
    assert request["trace_id"] == TRACE_ID and request["parent"] == CLIENT_SPAN
    assert request["attributes"]["http.response.status_code"] == 200
    assert request["attributes"]["relaybox.task_id"] == answer.headers["x-task-id"]
    failed, answered = sorted(attempts, key=lambda span: span["attributes"]["relaybox.attempt"])
    assert {failed["parent"], answered["parent"]} == {request["span_id"]}
    assert failed["name"] == "attempt first/gpt-4o-mini" and failed["error"] is True
    assert failed["attributes"]["relaybox.status"] == "server_error"
    assert answered["name"] == "attempt second/gpt-4o-mini" and answered["error"] is False
    assert answered["attributes"]["gen_ai.usage.input_tokens"] == 11
    assert answered["attributes"]["gen_ai.usage.output_tokens"] == 7
    assert answered["attributes"]["relaybox.fallback_used"] is True
    assert answered["attributes"]["relaybox.cost_usd"] > 0
    assert request["start"] <= failed["start"] <= answered["end"] <= request["end"]


async def test_a_tool_loop_has_a_span_per_step_and_per_tool_call(
    tmp_path: Path, fake_openai: FakeOpenAI, collector: Collector
) -> None:
    fake_openai.answer_with = script(
        call("mcp__bench__multiply", {"a": 3, "b": 4}),
        lambda body: Reply(text=f"{tool_messages(body)[0]['content']}"),
    )
    settings = attrs.evolve(loop_settings(tmp_path, fake_openai.base_url, WORKBENCH), tracing=True)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        await client.post(
            "/v1/chat/completions",
            json={"model": "agent:workbench", "messages": [{"role": "user", "content": "3 x 4"}]},
        )
        [request] = await spans_of(collector, "POST /v1/chat/completions", 1)
        steps = await spans_of(collector, "attempt upstream/", 2)
        [tool] = await spans_of(collector, "tool bench.multiply", 1)
    assert {span["parent"] for span in [*steps, tool]} == {request["span_id"]}
    assert tool["attributes"]["relaybox.status"] == "tool" and tool["error"] is False
    first, second = sorted(steps, key=lambda span: span["start"])
    assert first["end"] <= tool["end"] <= second["end"], "the call ran between the steps"


async def test_shadow_answers_and_the_judge_join_the_requests_trace(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_openai_backup: FakeOpenAI, collector: Collector
) -> None:
    fake_openai.answer_with = model(cheap_answer)
    fake_openai_backup.answer_with = model(strong_answer)
    teaching = LearnedPolicy(quality_kept=None, judge_rate=1.0, shadow_rate=1.0, shadow_up_rate=1.0)
    settings = attrs.evolve(two_models(tmp_path, fake_openai, fake_openai_backup, teaching), tracing=True)
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "Capital of Peru?"}]},
            headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
        )
        learning = relay.system.learning
        assert learning is not None
        await eventually(lambda: sum(learning.statistics().comparisons.values()) >= 1, within=10)
        await eventually(lambda: learning.statistics().running == 0, within=10)
        [request] = await spans_of(collector, "POST /v1/chat/completions", 1)
        attempts = await spans_of(collector, "attempt ", 3)
    assert answer.status_code == 200
    statuses = sorted(span["attributes"]["relaybox.status"] for span in attempts)
    assert statuses == ["judge", "shadow", "success"], statuses
    assert {span["parent"] for span in attempts} == {request["span_id"]}
    assert {span["trace_id"] for span in attempts} == {TRACE_ID}
    judge = next(span for span in attempts if span["attributes"]["relaybox.status"] == "judge")
    assert judge["attributes"]["relaybox.cost_usd"] > 0 and judge["error"] is False
