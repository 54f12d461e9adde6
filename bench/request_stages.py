"""What each stage of a request's start costs in relaybox's own code, by the size of the prompt.

    python -m bench.request_stages [--runs 2000]

The stages a chat completion goes through before its upstream call, and the few after it, each
timed alone on the same inputs as `bench.classifier` (a short question, a 2k-token prompt, a
10k-token conversation, a 10k-token pasted log): the body read as JSON, the request parsed, the
cache key (made only for a deterministic request), the prompt compressed (`safe`), the route
decided (`auto`, the learned router), the upstream body encoded, and after the answer the
client's body rendered and the record made with its journal line. An actor hop (a `tell` and the
receiver woken) is timed in trio; a request makes about six (router, provider, recorder and their
replies). Microseconds per call, p50 over `--runs` calls after warm-up.

What is not here is the stack's own work per request, the same for a bare quart-trio relay:
HTTP parsing and writing (h11, hypercorn, Quart), httpx's call upstream, and trio's scheduling.
`bench.profile` shows those shares under load.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid

import attrs
import orjson
import trio
from relaybox.actors.mailbox import Mailbox
from relaybox.protocol.caching import cache_key
from relaybox.protocol.chat import ChatRequest
from relaybox.protocol.compression.pipeline import compress
from relaybox.protocol.events import Usage
from relaybox.protocol.routing.classifier import classify
from relaybox.protocol.routing.learned import features
from relaybox.protocol.routing.learned_route import PromptFeatures
from relaybox.protocol.routing.plan import plan_route
from relaybox.protocol.wire import openai
from relaybox.protocol.wire.openai_upstream import upstream_request_body
from relaybox.storage.journal import as_lines
from relaybox.storage.records import AttemptRecord
from relaybox.web.calls import parse_json

from bench.classifier import inputs, percentile, routing_context, timed
from bench.machine import write

HOPS_PER_REQUEST = 6


def wire_body(request: ChatRequest) -> bytes:
    """The request as a client sends it."""
    messages = [{"role": m.role, "content": m.text()} for m in request.messages]
    return orjson.dumps({"model": "auto", "messages": messages})


def stages(request: ChatRequest) -> list[tuple[str, object]]:
    raw = wire_body(request)
    parsed = parse_json(raw)
    chat = openai.parse_chat_request(parsed)
    context = routing_context()

    def decide() -> object:
        users = [m.text() for m in chat.messages if m.role == "user"]
        prompt = PromptFeatures(lambda: features(users))
        return plan_route("auto", None, classify(chat), attrs.evolve(context, prompt=prompt))

    def record() -> bytes:
        made = AttemptRecord(
            id=str(uuid.uuid4()),
            created_at=time.time(),
            request_group_id=str(uuid.uuid4()),
            attempt=1,
            provider="bench",
            model_selected="small",
            model_requested="auto",
            tokens_in=12,
            tokens_out=5,
            prompt_summary=chat.messages[-1].text()[:500],
        )
        return as_lines([made])

    def render() -> str:
        body = openai.completion_body(
            completion_id="chatcmpl-bench",
            model="small",
            created=1700000000,
            text="Hello from the upstream.",
            tool_calls=[],
            finish_reason="stop",
            usage=Usage(12, 5),
        )
        return openai.dumps(body)

    return [
        ("body as JSON (+ its digest)", lambda: (hashlib.blake2b(raw, digest_size=16), parse_json(raw))),
        ("request parsed", lambda: openai.parse_chat_request(parsed)),
        ("cache key (deterministic only)", lambda: cache_key(chat, None, None)),
        ("compression (safe)", lambda: compress(chat, "safe")),
        ("route decided (auto, learned)", decide),
        ("upstream body encoded", lambda: orjson.dumps(upstream_request_body(chat, "small"))),
        ("answer rendered", render),
        ("record + journal line", record),
    ]


async def hop_microseconds(runs: int) -> float:
    """A message told to an actor and the actor woken with it, as the router and provider are."""
    mailbox: Mailbox[int] = Mailbox(16)
    replies_send, replies = trio.open_memory_channel[int](16)
    times: list[int] = []

    async def actor() -> None:
        async for message in mailbox.receive:
            replies_send.send_nowait(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        for index in range(runs + 200):
            started = time.perf_counter_ns()
            mailbox.tell(index)
            await replies.receive()
            times.append(time.perf_counter_ns() - started)
        nursery.cancel_scope.cancel()
    # Each round trip is two hops: there and back.
    return percentile(sorted(times[200:]), 0.5) / 2000


def main(runs: int) -> None:
    measured = [
        (label, request, [(name, timed(call, runs)) for name, call in stages(request)])
        for label, request in inputs()
    ]
    names = [name for name, _ in measured[0][2]]
    width = 34
    lines = [
        f"microseconds per call, p50 of {runs:,} calls after 200 warm-up calls",
        "",
        f"{'stage':<{width}}" + "".join(f"{label.split(' (')[0][:16]:>18}" for label, _, _ in measured),
    ]
    for index, name in enumerate(names):
        row = "".join(f"{percentile(times[index][1], 0.5) / 1000:>18.1f}" for _, _, times in measured)
        lines.append(f"{name:<{width}}{row}")
    hop = trio.run(hop_microseconds, runs)
    totals = [
        sum(percentile(t, 0.5) for _, t in times) / 1000 + HOPS_PER_REQUEST * hop for _, _, times in measured
    ]
    lines.append(
        f"{f'actor hops ({HOPS_PER_REQUEST} x {hop:.1f})':<{width}}"
        + f"{HOPS_PER_REQUEST * hop:>18.1f}" * len(measured)
    )
    lines.append(f"{'total':<{width}}" + "".join(f"{t:>18.1f}" for t in totals))
    table = "\n".join(lines)
    print(table)
    print(f"written to {write('request_stages', table)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    main(parser.parse_args().runs)
