"""`relaybox doctor` finds what is broken, on purpose, and says what to do about it."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import trio

from tests.fakes.openai_upstream import FakeOpenAI


def provider(name: str, base_url: str) -> dict:
    return {
        "id": name,
        "baseUrl": base_url,
        "apiKey": "sk-doctor",
        "models": [{"id": "gpt-4o-mini", "tier": "economy"}],
    }


async def doctor(tmp_path: Path, port: int, *providers: dict, **env: str) -> tuple[int, str]:
    environment = {
        "PATH": os.path.dirname(sys.executable),
        "HOME": str(tmp_path),
        "RELAYBOX_DATA_DIR": str(tmp_path / "data"),
        "CUSTOM_PROVIDERS": json.dumps(list(providers)),
        **env,
    }
    done = await trio.run_process(
        [sys.executable, "-m", "relaybox.web.cli", "doctor", "--port", str(port)],
        env=environment,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode() + done.stderr.decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_all_good(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    code, out = await doctor(tmp_path, free_port(), provider("up", fake_openai.base_url))
    assert code == 0, out
    assert "✅ provider up (openai-compatible): gpt-4o-mini answered in" in out
    assert "✅ database, SQLite file" in out and "schema at version" in out and "all good" in out
    assert (
        "claude-cli: inactive ('claude' not found on PATH; install with `npm install -g @anthropic-ai/claude-code`"
        in out
    )


async def test_each_failure_is_explained(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, out = await doctor(
            tmp_path,
            busy.getsockname()[1],
            provider("up", fake_openai.base_url),
            provider("down", "http://127.0.0.1:9/v1"),
            DATABASE_URL="postgresql://postgres@127.0.0.1:9/nothing",
        )
    assert code == 1, out
    assert "another program uses it. Pick another (relaybox serve --port N)" in out
    assert "❌ database, PostgreSQL (DATABASE_URL): cannot be used" in out and "Check DATABASE_URL" in out
    assert "❌ provider down (openai-compatible): Connection refused at 127.0.0.1:9." in out
    assert "✅ provider up" in out and "Traceback" not in out
