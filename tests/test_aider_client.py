"""The real Aider (PyPI `aider-chat`, in its own virtualenv `.venv-aider`, installed by tests/run)
as a client of a running relaybox, with the settings docs/clients.md gives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import trio
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import REPO, eventually, openai_provider, serve, settings_for

AIDER = REPO / ".venv-aider/bin/aider"
# What Aider knows of the model `openai/auto` (litellm's format); without it, Aider looks it up online.
AUTO_METADATA = {
    "litellm_provider": "openai",
    "mode": "chat",
    "max_input_tokens": 128_000,
    "max_output_tokens": 16_384,
}
ANSWER = "Relaybox answered Aider through the fake upstream."


@pytest.fixture
def aider() -> str:
    if not AIDER.exists():
        message = "Aider is not installed: tests/run installs it into .venv-aider"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(AIDER)


async def test_aider_as_client_answered_by_an_openai_provider(
    aider: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies.default = Reply(text=ANSWER, pieces=3)
    work = tmp_path / "work"
    work.mkdir()
    async with serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay:
        key = new_key()
        await relay.system.storage.create_key(ApiKey("aider", key_hash(key), shown_prefix(key)))
        assert relay.system.keys is not None
        await relay.system.keys.load()
        # Offline: Aider fetches litellm's price list from the internet for a model it has no
        # metadata for (`auto`), and litellm does at import unless told to use its bundled copy.
        metadata = tmp_path / "aider-model-metadata.json"
        metadata.write_text(json.dumps({"openai/auto": AUTO_METADATA}))
        env = {
            "PATH": f"{AIDER.parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),  # ~/.aider: analytics choice, caches, first-run marker
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        # A few seconds (litellm's import is most of it); the margin is for a loaded machine.
        with trio.fail_after(120):
            result = await trio.run_process(
                [
                    aider,
                    "--openai-api-base",
                    f"{relay.base_url}/v1",
                    "--openai-api-key",
                    key,
                    "--model",
                    "openai/auto",
                    "--model-metadata-file",
                    str(metadata),
                    "--message",
                    "What is relaybox?",
                    "--yes-always",
                    "--no-git",
                    "--no-check-update",
                    "--no-show-release-notes",
                    "--analytics-disable",
                    "--no-pretty",
                    "--no-fancy-input",
                    "--timeout",
                    "30",
                ],
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                env=env,
                cwd=str(work),
                check=False,
            )
        output = result.stdout.decode() + result.stderr.decode()
        # Aider exits 0 even when the request failed: the answer in its output is the proof.
        assert result.returncode == 0 and ANSWER in result.stdout.decode(), output[-2000:]
        await eventually(lambda: relay.system.recorder.written >= 1, within=10)
        async with httpx.AsyncClient(base_url=relay.base_url, headers={"x-api-key": key}) as client:
            rows = (await client.get("/api/requests", params={"limit": 5})).json()["data"]
    [upstream] = fake_openai.chat_requests()
    body = upstream.json()
    assert body["stream"] is True and "What is relaybox?" in json.dumps(body["messages"])
    # Aider (through litellm) drops the `openai/` prefix: relaybox is asked for `auto`.
    assert [(row["client"], row["model_requested"], row["status"]) for row in rows] == [
        ("key:aider", "auto", "success")
    ], rows
