"""Small defects an audit found, each with the test that showed it:

- `/health` is honest: 503 while the router is down (every call would be a 503), 200 "degraded"
  with the reasons while storage, the budget actor or the learning actor is down;
- a name a client sends with a control character in it (a NUL in the model name, say) is a 400 in
  the API's own error format, before any paid call;
- an answer that says `Connection: close` closes the connection;
- `relaybox doctor` never touches the journal of a relaybox serving from the same data directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from relaybox.actors.supervisor import RestartPolicy
from relaybox.storage.contract import StorageError
from relaybox.storage.journal import JournalBusy, _claim, owned, owner_of, owners
from relaybox.web.app import create_app
from relaybox.web.system import _adopt_journals, running_system

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import eventually, openai_provider, serve, serve_environment, serving_child, settings_for

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


# --- /health ----------------------------------------------------------------------------------


class ExplodingCatalog:
    """A router bug: resolving any name raises (the router crashes on every request)."""

    def resolve(self, name: str) -> None:
        raise KeyError("router bug")


async def test_health_is_503_while_the_router_is_down(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    # Three restarts within 30 s are allowed; the fourth crash leaves the router down for 600 s.
    policy = RestartPolicy(
        max_restarts=3, period=30.0, backoff_initial=0.01, backoff_max=0.02, escalation_initial=600.0
    )
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), restart=policy)
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        supervisor = relay.system.supervisor
        relay.system.router.catalog = ExplodingCatalog()  # type: ignore[assignment]
        for _ in range(10):
            if supervisor.state_of("router").value == "failed":
                break
            await client.post("/v1/chat/completions", json=HELLO)
            await eventually(lambda: supervisor.state_of("router").value != "restarting", within=5)
        assert supervisor.state_of("router").value == "failed"
        call = await client.post("/v1/chat/completions", json=HELLO)
        health = await client.get("/health")
    assert call.status_code == 503 and call.json()["error"]["code"] == "router_down"
    assert health.status_code == 503, health.text
    body = health.json()
    assert body["status"] == "down" and body["router"] == "failed"
    assert any("router" in reason for reason in body["reasons"])


async def test_health_is_degraded_not_down_while_storage_is_down(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        healthy = await client.get("/health")

        async def locked(records: object) -> int:
            raise StorageError("sqlite: database is locked")  # SQLite held by another connection

        monkeypatch.setattr(relay.system.storage, "insert_records", locked)
        answered = await client.post("/v1/chat/completions", json=HELLO)
        await eventually(lambda: relay.system.recorder.statistics().storage_up is False, within=10)
        health = await client.get("/health")
    assert healthy.status_code == 200 and healthy.json()["status"] == "ok", healthy.text
    assert answered.status_code == 200, "storage down: answers go on"
    assert health.status_code == 200, "an instance that still answers stays in the load balancer"
    body = health.json()
    assert body["status"] == "degraded" and body["storage"]["up"] is False
    assert any("storage" in reason for reason in body["reasons"]), body["reasons"]


@pytest.mark.parametrize("actor", ["budget", "learning"])
async def test_health_is_degraded_while_the_budget_or_learning_actor_is_down(
    tmp_path: Path, fake_openai: FakeOpenAI, actor: str
) -> None:
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url))
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        await relay.system.supervisor.stop(actor)
        health = await client.get("/health")
        answered = await client.post("/v1/chat/completions", json=HELLO)
    assert answered.status_code == 200
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "degraded" and body[actor] == "stopped"
    assert any(actor in reason for reason in body["reasons"]), body["reasons"]


# --- control characters in names ------------------------------------------------------------


NAMES_WITH_CONTROL_CHARACTERS = [
    "gpt-4o-mini\x00",
    "up:gpt-4o-mini\x00x",
    "auto\x00",
    "gpt-4o-mini\n",
    "gpt\x1b[31m",
]


@pytest.mark.parametrize("model", NAMES_WITH_CONTROL_CHARACTERS)
async def test_a_model_name_with_a_control_character_is_a_400_before_any_paid_call(
    tmp_path: Path, fake_openai: FakeOpenAI, model: str
) -> None:
    messages = [{"role": "user", "content": "hello"}]
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        chat = await client.post("/v1/chat/completions", json={"model": model, "messages": messages})
        anthropic = await client.post(
            "/v1/messages",
            json={"model": model, "max_tokens": 10, "messages": messages},
            headers={"anthropic-version": "2023-06-01"},
        )
        responses = await client.post("/v1/responses", json={"model": model, "input": "hello"})
        embeddings = await client.post("/v1/embeddings", json={"model": model, "input": "hello"})
        metrics = (await client.get("/metrics")).text
    assert not fake_openai.requests, "no upstream call was made"
    for openai_shaped in (chat, responses, embeddings):
        assert openai_shaped.status_code == 400, openai_shaped.text
        error = openai_shaped.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "model"
        assert "control character" in error["message"]
    assert anthropic.status_code == 400, anthropic.text
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "invalid_request_error"
    assert "control character" in anthropic.json()["error"]["message"]
    assert 'status="500"' not in metrics


async def test_other_names_a_client_sends_with_a_control_character_are_a_400(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client,
    ):
        route = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"x-relaybox-route": "fast\tlane"}
        )
        user = await client.post("/v1/chat/completions", json={**HELLO, "user": "alice\x00"})
        metadata = await client.post(
            "/v1/responses", json={"model": "gpt-4o-mini", "input": "hi", "metadata": {"team\x00": "a"}}
        )
        previous = await client.post(
            "/v1/responses", json={"model": "gpt-4o-mini", "input": "hi", "previous_response_id": "resp_\x00"}
        )
        fine = await client.post("/v1/chat/completions", json={**HELLO, "user": "alice"})
    assert len(fake_openai.chat_requests()) == 1, "only the request without a control character went upstream"
    assert fine.status_code == 200
    for response, param in (
        (route, "x-relaybox-route"),
        (user, "user"),
        (metadata, "metadata"),
        (previous, "previous_response_id"),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and "control character" in error["message"]


# --- Connection: close -----------------------------------------------------------------------


async def read_until_closed(base_url: str, request: bytes, within: float = 5.0) -> bytes:
    """Send a raw HTTP request, then read until the server closes the connection."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    try:
        with trio.fail_after(within):
            await stream.send_all(request)
            while chunk := await stream.receive_some(65536):
                received += chunk
    finally:
        await stream.aclose()
    return received


@pytest.mark.parametrize(
    "request_text",
    [
        # A refused body: relaybox's own error answer.
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        # A successful answer to a request that asked to close.
        b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        # HTTP/1.0 without keep-alive closes by default.
        b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
        # An error answer that is an unknown path.
        b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ],
)
async def test_an_answer_that_says_connection_close_closes_the_connection(
    tmp_path: Path, request_text: bytes
) -> None:
    async with serve(settings_for(tmp_path, openai_provider("up", "http://127.0.0.1:9"))) as relay:
        received = await read_until_closed(relay.base_url, request_text)
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith((b"http/1.1 ", b"http/1.0 ")) and b"connection: close" in head


async def test_a_kept_alive_connection_still_serves_its_next_request(tmp_path: Path) -> None:
    """The fix for the above leaves keep-alive alone: two requests on one connection, then a close."""
    async with serve(settings_for(tmp_path, openai_provider("up", "http://127.0.0.1:9"))) as relay:
        received = await read_until_closed(
            relay.base_url,
            b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
    assert received.count(b"HTTP/1.1 200") == 2


async def test_a_kept_alive_connection_left_idle_is_closed_after_the_keep_alive_timeout(
    tmp_path: Path,
) -> None:
    """The same cancellation left a kept-alive connection without its idle timeout: held forever."""
    settings = settings_for(tmp_path, openai_provider("up", "http://127.0.0.1:9"))
    async with running_system(settings) as system, trio.open_nursery() as nursery:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.keep_alive_timeout = 0.5
        binds = await nursery.start(
            lambda task_status: hypercorn.trio.serve(create_app(system), config, task_status=task_status)
        )
        started = trio.current_time()
        received = await read_until_closed(binds[0], b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        idle = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert received.startswith(b"HTTP/1.1 200") and 0.4 < idle < 3


# --- relaybox doctor beside a running relaybox ------------------------------------------------


async def test_doctor_leaves_a_running_relaybox_journal_alone(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    data = tmp_path / "data"
    process, base_url = await serving_child(fake_openai, data)
    journal = data / "journal" / "w0"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            for _ in range(5):
                assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200
            [segment] = sorted(journal.glob("*.jsonl"))  # the segment being appended to
            before = segment.read_bytes()
            inode = segment.stat().st_ino
            assert before.count(b"\n") == 5
            port = base_url.rsplit(":", 1)[1]
            doctor = await trio.run_process(
                [sys.executable, "-m", "relaybox.web.cli", "doctor", "--port", port],
                env={**serve_environment(fake_openai.base_url, data), "HOME": str(tmp_path)},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            said = doctor.stdout.decode() + doctor.stderr.decode()
            assert segment.exists() and segment.stat().st_ino == inode, f"the journal was replaced:\n{said}"
            assert segment.read_bytes() == before, f"the journal was changed:\n{said}"
            assert "already serving" in said and "journal" in said, said
            assert doctor.returncode == 0, said
            for _ in range(3):
                assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200
        after = segment.read_bytes()
        assert after.startswith(before) and after.count(b"\n") == 8, "the later records land in the file"
        assert os.stat(segment).st_ino == inode
    finally:
        process.kill()
        await process.wait()


async def test_an_owned_journal_is_neither_taken_nor_adopted(tmp_path: Path) -> None:
    """The journal's lock, without processes: an owned journal cannot be owned again, its
    segments are not adopted, and it is free again once its owner lets go."""
    root = tmp_path / "journal"
    (root / "w1").mkdir(parents=True)
    (root / "w1" / "000000000000.jsonl").write_text('{"a": 1}\n')
    assert owner_of(root / "w1") is None and owners(root) == {}
    async with owned(root / "w1"):
        assert owner_of(root / "w1") == os.getpid() and owners(root) == {"w1": os.getpid()}
        async with owned(root / "w1"):  # systems in one process share its claim
            pass
        assert owner_of(root / "w1") == os.getpid(), "still owned: the outer claim holds it"
        with pytest.raises(JournalBusy, match=str(os.getpid())):
            _claim(root / "w1")  # what another process's claim does
        with pytest.raises(JournalBusy):
            _adopt_journals(root, worker=0, workers=1)  # w1 is past the workers, but in use
        assert (root / "w1" / "000000000000.jsonl").exists()
    assert owner_of(root / "w1") is None
    _adopt_journals(root, worker=0, workers=1)
    assert not (root / "w1").exists() and len(list((root / "w0").glob("*.jsonl"))) == 1


async def test_a_second_relaybox_on_the_same_data_directory_will_not_start(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    data = tmp_path / "data"
    process, base_url = await serving_child(fake_openai, data)
    try:
        second = None
        with trio.move_on_after(30):  # (one that starts serves until it is stopped)
            second = await trio.run_process(
                [sys.executable, "-m", "relaybox.web.cli", "serve", "--port", "0"],
                env=serve_environment(fake_openai.base_url, data),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        assert second is not None, "a second relaybox started on a data directory in use"
        said = second.stdout.decode() + second.stderr.decode()
        assert second.returncode != 0, said
        assert "journal" in said and str(process.pid) in said, said
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200
    finally:
        process.kill()
        await process.wait()
