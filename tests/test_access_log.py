"""The access log: a line for every request, a client's errors included, on the console of
`relaybox serve` (text, or JSON with --log-format json), and every 4xx/5xx counted in /metrics by
route and status."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import openai_provider, serve, serving_child, settings_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_every_request_is_a_line_and_every_error_a_count(
    tmp_path: Path, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relaybox.access")
    async with (
        serve(settings_for(tmp_path, openai_provider("upstream", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url) as client,
    ):
        answered = await client.post("/v1/chat/completions", json=CHAT)
        await client.post("/v1/responses/typo", json={})
        await client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
        await client.get("/v1/nothing-here")
        metrics = (await client.get("/metrics")).text
    lines = [record for record in caplog.records if record.name == "relaybox.access"]
    entries = [record.access for record in lines]  # type: ignore[attr-defined]
    first = entries[0]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/v1/chat/completions", 200)
    assert first["provider"] == "upstream" and first["model"] == "gpt-4o-mini"
    assert first["task_id"] == answered.headers["x-task-id"] and first["ms"] > 0
    assert (
        "POST /v1/chat/completions 200" in lines[0].getMessage()
        and "upstream/gpt-4o-mini" in lines[0].getMessage()
    )
    assert [(e["path"], e["status"]) for e in entries[1:4]] == [
        ("/v1/responses/typo", 405),
        ("/v1/chat/completions", 400),
        ("/v1/nothing-here", 404),
    ]
    assert 'relaybox_http_errors_total{route="/v1/chat/completions",status="400"} 1' in metrics
    assert 'relaybox_http_errors_total{route="(no route)",status="404"} 1' in metrics
    assert 'route="/v1/chat/completions",status="200"' not in metrics


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_relaybox_serve_prints_each_request(tmp_path: Path, fake_openai: FakeOpenAI, fmt: str) -> None:
    console, stdout = tmp_path / "console.log", tmp_path / "report.txt"
    with console.open("wb") as output, stdout.open("wb") as report:
        args = ("--log-format", "json") if fmt == "json" else ()
        process, base_url = await serving_child(
            fake_openai, tmp_path / "data", *args, log=output, report=report
        )
        try:
            async with httpx.AsyncClient(base_url=base_url) as client:
                await client.post("/v1/chat/completions", json=CHAT)
                await client.get("/v1/missing")
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                await process.wait()
    printed = console.read_text().splitlines()
    if fmt == "text":
        assert any("relaybox.access: POST /v1/chat/completions 200" in line for line in printed), printed[-5:]
        assert any(
            line.startswith("model names: a name no provider serves")
            for line in stdout.read_text().splitlines()
        )
        assert any("GET /v1/missing 404" in line for line in printed)
        return
    entries = [json.loads(line) for line in printed if line.startswith("{")]
    access = [e for e in entries if e["logger"] == "relaybox.access"]
    assert {(e["path"], e["status"]) for e in access} >= {("/v1/chat/completions", 200), ("/v1/missing", 404)}
    assert all(e["level"] == "info" and e["time"].endswith("Z") for e in access)
    assert len(entries) == len(printed), "every line is JSON"
