"""The real Aider (PyPI `aider-chat`, in its own virtualenv `.venv-aider`, installed by tests/run)
as a client of a running relaybox, at its defaults with the settings docs/clients.md gives: a git
repository (Aider makes one), its repo map, streaming, its edit format for the model; a first turn
with `--message`, then the chat resumed with `--restore-chat-history` for a second. What it sends
on both turns is compared with tests/golden/aider_request_{first,resumed}.json.

Aider has no tool calls to make: it asks for edits in the text of its answers (its edit formats)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import REPO, openai_provider, settings_for
from tests.test_coding_agent_clients import check_turns, failure, logged_rows, run_agent, serve_recorded

AIDER = REPO / ".venv-aider/bin/aider"
# What Aider knows of the model `openai/auto` (litellm's format); without it, Aider looks it up online.
AUTO_METADATA = {
    "litellm_provider": "openai",
    "mode": "chat",
    "max_input_tokens": 128_000,
    "max_output_tokens": 16_384,
}
PROMPT = "What is relaybox?"
ANSWER = "Relaybox answered Aider through the fake upstream."
RESUMED_PROMPT = "What did I just ask you?"
SECOND_ANSWER = "You asked what relaybox is."


@pytest.fixture
def aider() -> str:
    if not AIDER.exists():
        message = "Aider is not installed: tests/run installs it into .venv-aider"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(AIDER)


def aider_version() -> str:
    [installed] = (AIDER.parent.parent / "lib").glob("python3.*/site-packages/aider_chat-*.dist-info")
    return "aider-chat " + installed.name.removeprefix("aider_chat-").removesuffix(".dist-info")


def scripted_reply(body: dict) -> Reply:
    if RESUMED_PROMPT in json.dumps(body):
        return Reply(text=SECOND_ANSWER, pieces=3)
    return Reply(text=ANSWER, pieces=3)


async def test_aider_answers_a_first_and_a_resumed_turn(
    aider: str, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer_with = scripted_reply
    work = tmp_path / "work"
    work.mkdir()
    async with serve_recorded(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as (
        relay,
        proxy,
    ):
        key = new_key()
        await relay.system.storage.create_key(ApiKey("aider", key_hash(key), shown_prefix(key)))
        assert relay.system.keys is not None
        await relay.system.keys.load()
        # docs/clients.md: Aider fetches litellm's price list from the internet for a model it has
        # no metadata for (`auto`), and litellm does at import unless told to use its bundled copy.
        metadata = tmp_path / "aider-model-metadata.json"
        metadata.write_text(json.dumps({"openai/auto": AUTO_METADATA}))
        env = {
            "PATH": f"{AIDER.parent}:/usr/bin:/bin",  # git, which Aider uses at its defaults
            "HOME": str(tmp_path),  # ~/.aider: analytics choice, caches, first-run marker
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        command = [
            aider,
            "--openai-api-base",
            f"{proxy.base_url}/v1",
            "--openai-api-key",
            key,
            "--model",
            "openai/auto",
            "--model-metadata-file",
            str(metadata),
            # Headless, nobody answers Aider's questions ("No git repo found, create one?"): yes,
            # its recommended answer to each.
            "--yes-always",
            # Offline: no version check (PyPI), no analytics (PostHog), no release notes on the
            # first run. None of them changes what Aider asks the model.
            "--no-check-update",
            "--analytics-disable",
            "--no-show-release-notes",
        ]
        # A few seconds each (litellm's import is most of it).
        first = await run_agent([*command, "--message", PROMPT], env=env, cwd=work)
        # Aider exits 0 even when the request failed: the answer in its output is the proof.
        assert first.returncode == 0 and ANSWER in first.stdout.decode(), failure(first)
        first_turn = len(proxy.posts("/chat/completions"))
        # The chat so far, from .aider.chat.history.md in the project.
        resumed = await run_agent(
            [*command, "--restore-chat-history", "--message", RESUMED_PROMPT], env=env, cwd=work
        )
        assert resumed.returncode == 0 and SECOND_ANSWER in resumed.stdout.decode(), failure(resumed)
        rows = await logged_rows(relay, key, 2)
    assert (work / ".git").is_dir()  # Aider made its repository
    assert first_turn == 1
    first_body, resumed_body = check_turns("aider", aider_version(), proxy, "/chat/completions", first_turn)
    assert first_body["stream"] is True and PROMPT in json.dumps(first_body["messages"])
    history = json.dumps(resumed_body["messages"])
    assert resumed_body["stream"] is True and all(
        said in history for said in (PROMPT, ANSWER, RESUMED_PROMPT)
    )
    upstream = json.dumps(fake_openai.chat_requests()[-1].json()["messages"])
    assert all(said in upstream for said in (PROMPT, ANSWER, RESUMED_PROMPT)), upstream
    # Aider (through litellm) drops the `openai/` prefix: relaybox is asked for `auto`.
    assert [(row["client"], row["model_requested"], row["status"]) for row in rows] == [
        ("key:aider", "auto", "success"),
        ("key:aider", "auto", "success"),
    ], rows
