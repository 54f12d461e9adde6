"""`relaybox doctor` finds what is broken, on purpose, and says what to do about it.

Each failure is asserted by the whole line doctor prints, so that a wrong diagnosis (a refused key
read as a refused connection, say) fails the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import sys
from pathlib import Path

import pytest
import trio
from relaybox.actors.provider import ProviderLimits
from relaybox.protocol.routing.catalog import ModelEntry
from relaybox.web.config import ProviderConfig
from relaybox.web.doctor import check_provider
from relaybox.web.system import running_system

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import cli_executable, settings_for

# Nothing listens on port 9 (discard): an upstream that is not running.
DEAD = "http://127.0.0.1:9"
VERSION = r"\d+\.\d+\.\d+"


def provider(name: str, base_url: str, model: str = "gpt-4o-mini") -> dict:
    return {
        "id": name,
        "baseUrl": base_url,
        "apiKey": "sk-doctor",
        "models": [{"id": model, "tier": "economy"}],
    }


async def doctor(
    tmp_path: Path, port: int, *providers: dict, config: str = "", **env: str
) -> tuple[int, str]:
    """`relaybox doctor` as a child process. Ollama is switched off unless the test points
    OLLAMA_BASE_URL somewhere, so that one running on this machine does not join the test."""
    environment = {
        "PATH": os.path.dirname(sys.executable),
        "HOME": str(tmp_path),
        "RELAYBOX_DATA_DIR": str(tmp_path / "data"),
        "CUSTOM_PROVIDERS": json.dumps(list(providers)),
        **env,
    }
    text = await trio.Path(config).read_text() if config else ""
    if "OLLAMA_BASE_URL" not in env and "[providers.ollama]" not in text:
        config = toml(tmp_path, text + "\n[providers.ollama]\nenabled = false\n")
    options = ["--config", config] if config else []
    done = await trio.run_process(
        [sys.executable, "-m", "relaybox.web.cli", "doctor", "--port", str(port), *options],
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


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "relaybox.toml"
    path.write_text(text)
    return str(path)


def claude_cli_config(tmp_path: Path, fake_anthropic: FakeAnthropic, *settings: str) -> str:
    """The real Claude CLI pointed at the fake Anthropic API, with no login of its own."""
    return toml(
        tmp_path,
        "\n".join(
            [
                "[providers.claude-cli]",
                "warm = 0",
                *settings,
                "[providers.claude-cli.env]",
                f'ANTHROPIC_BASE_URL = "{fake_anthropic.base_url}"',
            ]
        ),
    )


async def test_all_good(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    code, out = await doctor(tmp_path, free_port(), provider("up", fake_openai.base_url))
    assert code == 0, out
    assert "✅ provider up (openai-compatible): gpt-4o-mini answered in" in out
    assert "✅ database, SQLite file" in out and "schema at version" in out and "all good" in out
    assert (
        "claude-cli: inactive ('claude' not found on PATH; install with `npm install -g @anthropic-ai/claude-code`"
        in out
    )
    assert "- ollama: disabled in the configuration" in out


async def test_each_failure_is_explained(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, out = await doctor(
            tmp_path,
            busy.getsockname()[1],
            provider("up", fake_openai.base_url),
            provider("down", DEAD + "/v1"),
            DATABASE_URL="postgresql://postgres@127.0.0.1:9/nothing",
        )
    assert code == 1, out
    assert "another program uses it. Pick another (relaybox serve --port N)" in out
    assert "❌ database, PostgreSQL (DATABASE_URL): cannot be used" in out and "Check DATABASE_URL" in out
    assert "❌ provider down (openai-compatible): Connection refused at 127.0.0.1:9." in out
    assert "✅ provider up" in out and "Traceback" not in out


async def test_a_refused_key_is_not_a_refused_connection(
    tmp_path: Path, fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini
) -> None:
    fake_openai.replies.default = Reply(status=401, error_message="Incorrect API key provided: sk-bad.")
    fake_anthropic.replies.default = Reply(status=401, error_message="invalid x-api-key")
    # Gemini's API answers a bad key with 400 INVALID_ARGUMENT, not 401.
    fake_gemini.replies.default = Reply(
        status=400, error_message="API key not valid. Please pass a valid API key."
    )
    code, out = await doctor(
        tmp_path,
        free_port(),
        provider("custom", fake_openai.base_url),
        OPENAI_API_KEY="sk-bad",
        OPENAI_BASE_URL=fake_openai.base_url,
        ANTHROPIC_API_KEY="sk-ant-bad",
        ANTHROPIC_BASE_URL=fake_anthropic.base_url,
        GEMINI_API_KEY="bad",
        GEMINI_BASE_URL=fake_gemini.base_url,
    )
    assert code == 1, out
    lines = out.splitlines()
    assert "❌ provider openai (openai-compatible): The API key was refused. Check OPENAI_API_KEY." in lines
    assert "❌ provider anthropic (anthropic): The API key was refused. Check ANTHROPIC_API_KEY." in lines
    assert "❌ provider gemini (gemini): The API key was refused. Check GEMINI_API_KEY." in lines
    assert (
        "❌ provider custom (openai-compatible): The API key was refused. Check the apiKey configured for custom."
        in lines
    )
    assert "refused at" not in out and "Traceback" not in out


async def test_a_wrong_path_is_not_an_unknown_model(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """Both are a 404: the server's message says which."""
    fake_openai.replies.push(
        Reply(status=404, error_message="The model `gpt-9` does not exist or you do not have access to it.")
    )
    host = fake_openai.base_url.removeprefix("http://").removesuffix("/v1")
    code, out = await doctor(
        tmp_path,
        free_port(),
        provider("nomodel", fake_openai.base_url, model="gpt-9"),
        provider("wrongpath", fake_openai.base_url + "/v1"),
    )
    assert code == 1, out
    lines = out.splitlines()
    assert (
        "❌ provider nomodel (openai-compatible): The provider answered but does not know the model 'gpt-9'."
        in lines
    )
    assert (
        f"❌ provider wrongpath (openai-compatible): {host} answered 404 Not Found (HTTP 404: no such route): "
        "check the base URL, and its path." in lines
    )
    assert "Traceback" not in out


async def test_ollama_says_which_models_it_has(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    code, out = await doctor(tmp_path, free_port(), OLLAMA_BASE_URL=fake_ollama.base_url)
    assert code == 0, out
    assert (
        "✅ provider ollama (ollama), models: llama3.2:3b, qwen2.5-coder:7b: llama3.2:3b answered in " in out
    )


async def test_ollama_model_not_pulled(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A model named without a tag is its `:latest`, as Ollama has it; one it lacks needs a pull."""
    ollama = await FakeOllama(models=("llama3.2:latest",)).start(nursery)
    pulled = toml(tmp_path, '[providers.ollama]\nmodels = ["llama3.2"]\n')
    code, out = await doctor(tmp_path, free_port(), config=pulled, OLLAMA_BASE_URL=ollama.base_url)
    assert code == 0, out
    assert "✅ provider ollama (ollama), models: llama3.2:latest: llama3.2 answered in " in out

    missing = toml(tmp_path, '[providers.ollama]\nmodels = ["llama3.2", "llama3.1:8b"]\n')
    code, out = await doctor(tmp_path, free_port(), config=missing, OLLAMA_BASE_URL=ollama.base_url)
    assert code == 1, out
    assert (
        "❌ provider ollama (ollama), models: llama3.2:latest: not pulled: llama3.1:8b. "
        "Fix: ollama pull llama3.1:8b" in out.splitlines()
    )


async def test_ollama_gone_after_discovery(tmp_path: Path) -> None:
    """Ollama stopped after relaybox found it: the live request is refused."""
    ollama = ProviderConfig(
        name="ollama",
        kind="ollama",
        display_name="Ollama (local)",
        models=(ModelEntry("llama3.2:3b", "economy"),),
        default_model="llama3.2:3b",
        limits=ProviderLimits(slots=1, mailbox=4, idle_timeout=10),
        base_url=DEAD,
    )
    async with running_system(settings_for(tmp_path, ollama)) as system:
        check = await check_provider(system, ollama)
    assert check.line() == (
        "❌ provider ollama (ollama), its models could not be listed (GET /api/tags): "
        "Connection refused at 127.0.0.1:9. Start it (ollama serve) or check the base URL."
    )


async def test_claude_cli_logged_out(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    """No login at all, then a login the API refuses: both need `claude /login`."""
    claude = cli_executable("claude")
    config = claude_cli_config(tmp_path, fake_anthropic)
    fix = (
        ": The claude CLI is not logged in or its login expired. "
        "Fix: claude /login  (or `claude setup-token` and set CLAUDE_CODE_OAUTH_TOKEN)"
    )
    line = re.compile(
        rf"❌ provider claude-cli \(claude-cli\), {re.escape(claude)} {VERSION} \(Claude Code\){re.escape(fix)}\n"
    )
    code, out = await doctor(tmp_path, free_port(), config=config, CLAUDE_CLI_PATH=claude)
    assert code == 1 and line.search(out), out

    fake_anthropic.replies.default = Reply(status=401, error_message="OAuth token has expired.")
    code, out = await doctor(
        tmp_path, free_port(), config=config, CLAUDE_CLI_PATH=claude, CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-x"
    )
    assert code == 1 and line.search(out), out
    assert fake_anthropic.message_requests()[-1].headers["authorization"] == "Bearer sk-ant-oat01-x"
    assert "Traceback" not in out


async def test_claude_cli_not_responding(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.replies.default = Reply(stall=True)
    claude = cli_executable("claude")
    config = claude_cli_config(tmp_path, fake_anthropic, "timeout = 3")
    code, out = await doctor(
        tmp_path, free_port(), config=config, CLAUDE_CLI_PATH=claude, CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-x"
    )
    assert code == 1, out
    assert out.splitlines()[-2].endswith(
        f"(Claude Code): The claude CLI is not responding. Test: echo test | {claude} -p"
    ), out


async def test_cli_that_cannot_start(tmp_path: Path) -> None:
    """A CLI binary for another machine, and an npm CLI (a node script) with node not on PATH."""
    claude = tmp_path / "claude"
    claude.write_bytes(b"\x7fELF\x02\x01\x01 truncated download")
    claude.chmod(0o755)
    gemini = cli_executable("gemini")
    code, out = await doctor(tmp_path, free_port(), CLAUDE_CLI_PATH=str(claude), GEMINI_CLI_PATH=gemini)
    assert code == 1, out
    assert (
        f"❌ provider claude-cli (claude-cli), {claude} (its version could not be read: Exec format error): "
        "The claude CLI is not installed or not executable. Install: npm install -g @anthropic-ai/claude-code"
        in out.splitlines()
    )
    gemini_line = next(line for line in out.splitlines() if "provider gemini-cli" in line)
    assert gemini_line.startswith(
        f"❌ provider gemini-cli (gemini-cli), {gemini} (--version failed with exit code 127"
    )
    assert gemini_line.endswith(
        "): The gemini CLI cannot start: Node.js (node) is not on relaybox's PATH. "
        "Add node's folder to PATH, or reinstall: npm install -g @google/gemini-cli"
    )


async def test_gemini_cli_logged_out(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    gemini = cli_executable("gemini")
    home = tmp_path / "home"
    home.mkdir()
    config = toml(
        tmp_path,
        f'[providers.gemini-cli.env]\nGOOGLE_GEMINI_BASE_URL = "{fake_gemini.base_url}"\nHOME = "{home}"\n',
    )
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    code, out = await doctor(
        tmp_path,
        free_port(),
        config=config,
        GEMINI_CLI_PATH=gemini,
        PATH=f"{os.path.dirname(sys.executable)}:{os.path.dirname(node)}",
    )
    assert code == 1, out
    assert re.search(
        rf"❌ provider gemini-cli \(gemini-cli\), {re.escape(gemini)} {VERSION}: "
        + re.escape(
            "The gemini CLI is not logged in or its login expired. Fix: gemini  (log in once, interactively)"
        ),
        out,
    ), out


async def test_a_database_newer_than_relaybox(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    code, out = await doctor(tmp_path, free_port(), provider("up", fake_openai.base_url))
    assert code == 0, out
    with sqlite3.connect(tmp_path / "data" / "relaybox.db") as db:
        db.execute("INSERT INTO schema_version (version) VALUES (999)")
    code, out = await doctor(tmp_path, free_port(), provider("up", fake_openai.base_url))
    assert code == 1 and "❌ database, SQLite file" in out and "newer" in out, out


async def test_a_provider_configured_but_not_found_is_a_failure(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Named explicitly (not merely looked for), a provider that cannot be activated is broken."""
    code, out = await doctor(
        tmp_path,
        free_port(),
        provider("up", fake_openai.base_url),
        OLLAMA_BASE_URL=DEAD,
        CLAUDE_CLI_PATH=str(tmp_path / "no-such-claude"),
    )
    assert code == 1, out
    assert (
        f"❌ provider ollama: configured, but nothing answers at {DEAD}; start it with `ollama serve`" in out
    )
    assert (
        f"❌ provider claude-cli: configured, but '{tmp_path / 'no-such-claude'}' not found on CLAUDE_CLI_PATH; "
        "install with `npm install -g @anthropic-ai/claude-code` or set CLAUDE_CLI_PATH" in out
    )
    assert "✅ provider up" in out and "Traceback" not in out
