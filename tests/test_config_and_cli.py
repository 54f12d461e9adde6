"""Configuration loading, provider discovery, and the `relaybox` command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from relaybox.protocol.routing.learned_route import LearnedPolicy
from relaybox.web.cli import YOUNG_COLLECTION_EVERY
from relaybox.web.config import ConfigError, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "web" / "relaybox.example.toml"


def fake_claude(tmp_path: Path) -> str:
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_embedded_defaults_discover_nothing_and_say_so(tmp_path: Path) -> None:
    settings = load_settings({"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.providers == ()
    assert any("claude-cli: inactive" in note and "npm install" in note for note in settings.notes)
    assert any("openai: inactive (set OPENAI_API_KEY" in note for note in settings.notes)
    assert settings.data_dir == str(tmp_path / ".local/share/relaybox")


def test_environment_discovers_providers(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    env = {
        "PATH": str(Path(claude).parent),
        "HOME": str(tmp_path),
        "OPENAI_API_KEY": "sk-secret",
        "TIMEOUT_CLAUDE": "42",
        "DEFAULT_PROVIDER": "openai",
        "CUSTOM_PROVIDERS": json.dumps(
            [
                {
                    "id": "groq",
                    "displayName": "Groq",
                    "baseUrl": "https://api.groq.com/openai/v1",
                    "apiKey": "gsk",
                    "models": [
                        {
                            "id": "llama-3.3-70b-versatile",
                            "tier": "standard",
                            "costPerMInput": 0.59,
                            "costPerMOutput": 0.79,
                            "maxContext": 128000,
                        }
                    ],
                    "embedding_models": [{"id": "bge-m3", "input_per_mtok": 0.01}],
                }
            ]
        ),
    }
    settings = load_settings(env)
    by_name = {p.name: p for p in settings.providers}
    assert list(by_name) == ["claude-cli", "openai", "groq"]
    assert by_name["claude-cli"].executable == claude and by_name["claude-cli"].limits.idle_timeout == 42
    assert by_name["openai"].base_url == "https://api.openai.com/v1"
    assert settings.routing.mode == "hybrid", "PROVIDER_MODE's default"
    assert by_name["openai"].embedding_models[0].id == "text-embedding-3-small"
    assert by_name["groq"].embedding_models[0].id == "bge-m3"
    assert by_name["groq"].embedding_models[0].input_per_mtok == 0.01
    groq = by_name["groq"].models[0]
    assert (groq.tier, groq.input_per_mtok, groq.output_per_mtok, groq.context_window) == (
        "standard",
        0.59,
        0.79,
        128000,
    )
    assert settings.default_provider == "openai"
    assert "sk-secret" not in repr(settings), "keys never appear in a settings dump"


def test_the_shipped_example_file_loads(tmp_path: Path) -> None:
    env = {"PATH": str(Path(fake_claude(tmp_path)).parent), "HOME": str(tmp_path)}
    settings = load_settings(env, str(EXAMPLE))
    assert settings.aliases["fast"] == "openai:gpt-4o-mini"
    assert settings.breaker.consecutive_failures == 5
    assert [p.name for p in settings.providers] == ["claude-cli"]  # no OPENAI_API_KEY; groq disabled
    assert any("groq: disabled" in note for note in settings.notes)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[server\nport=1", {}, "not valid TOML"),
        ("[breaker]\nbogus = 1", {}, "unknown setting .breaker. bogus"),
        ("[providers.x]\nkind = 'ollama'\nbase_url = 'http://h'\nmodels = ['m']", {}, "not supported yet"),
        ("[providers.x]\nbase_url = 'ftp://h'\nmodels = ['m']", {}, "http(s) URL"),
        (
            "[providers.x]\nbase_url = 'http://h'\nmodels = [{id = 'm', tier = 'gold'}]",
            {},
            "tier must be one of",
        ),
        ("", {"CUSTOM_PROVIDERS": "{not json"}, "not valid JSON"),
        ("", {"CONSECUTIVE_FAILURE_LIMIT": "many"}, "must be an integer"),
        ("[server]\nport = 'eighty'", {}, "port must be an integer"),
        ("", {"SUCCESS_THRESHOLD": "80"}, "between 0 and 1"),
        ("", {"PROVIDER_MODE": "offline"}, "PROVIDER_MODE must be one of hybrid, local, cloud"),
        ("[routing]\neconomy_max = 70", {}, "economy_max < standard_max"),
        ("[routes.x]\nprimary = 'a'\nbackup_9 = 'b'", {}, "unknown setting .routes.x. backup_9"),
        ("[routes]\nx = []", {}, "non-empty list"),
        ("[mcp.servers.fs]\nargs = ['x']", {}, "needs either 'command'"),
        ("[mcp.servers.fs]\ncommand = 'x'\nurl = 'http://h'", {}, "needs either 'command'"),
        ("[mcp.servers.fs]\ncommand = 'x'\nshell = true", {}, "unknown setting .mcp.servers.fs. shell"),
        ("[mcp.servers.a__b]\ncommand = 'x'", {}, "a server's name"),
        ("[mcp]\nmax_steps = 0", {}, "max_steps must be at least 1"),
        ("[mcp]\nsteps = 3", {}, "unknown setting .mcp. steps: did you mean `max_steps`"),
        ("[routes.x]\nchain = ['auto']\ntools = ['nope']", {}, "no .mcp.servers. named .'nope'."),
        ("[[ab_tests]]\nbaseline = 'a:m'\nchallenger = 'b:m'", {}, "names provider 'a', which is not active"),
        ("[providers.x]\nbase_url = 'http://h'\nslots = 2.5\nmodels = ['m']", {}, "slots must be an integer"),
        ("[providers.'a/b']\nbase_url = 'http://h'\nmodels = ['m']", {}, "may not contain '/' or ':'"),
        (
            "[routing]\nsavings_baseline = 'x:gpt-9'\n[providers.x]\nbase_url = 'http://h'\nmodels = ['m']",
            {},
            "savings_baseline must be 'provider:model' of a configured model",
        ),
        ("[routing]\nquality_target = 1.5", {}, "quality_target must be between 0 and 1"),
        ("[routing]\nshadow_rate = -0.1", {}, "shadow_rate must be between 0 and 1"),
        ("[routing]\nquality_kept = 'most'", {}, 'quality_kept must be a number from 0 to 1, or "off"'),
        ("[routing]\nquality_kept = 1.2", {}, "quality_kept must be between 0 and 1"),
        ("[routing]\nlearned = 'yes'", {}, "'learned' must be true or false"),
        (
            "[routing]\njudge_model = 'x:gpt-9'\n[providers.x]\nbase_url = 'http://h'\nmodels = ['m']",
            {},
            "judge_model must be 'provider:model' of a configured model",
        ),
    ],
)
def test_configuration_errors_say_what_to_fix(tmp_path: Path, text: str, env: dict, message: str) -> None:
    config = tmp_path / "relaybox.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings({"PATH": "", "HOME": str(tmp_path), **env}, str(config))


def run_relaybox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaybox.web.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_no_arguments_prints_what_to_do_next() -> None:
    result = run_relaybox()
    assert result.returncode == 0 and "relaybox serve" in result.stdout
    assert "Traceback" not in result.stderr


def test_bad_config_exits_2_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server\n")
    result = run_relaybox("serve", "--config", str(config))
    assert (
        result.returncode == 2 and "configuration error" in result.stderr and "Traceback" not in result.stderr
    )


def test_port_in_use_exits_1_with_a_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_relaybox(
            "serve", "--port", str(port), env={"PATH": "", "RELAYBOX_DATA_DIR": str(tmp_path)}
        )
    assert result.returncode == 1 and "cannot serve" in result.stderr and "Traceback" not in result.stderr


def test_every_builtin_api_provider_is_enabled_by_its_key(tmp_path: Path) -> None:
    env = {
        "PATH": "",
        "HOME": str(tmp_path),
        "OPENAI_API_KEY": "a",
        "ANTHROPIC_API_KEY": "b",
        "GEMINI_API_KEY": "c",
        "OPENROUTER_API_KEY": "d",
        "GEMINI_BASE_URL": "http://127.0.0.1:9",
        "OLLAMA_BASE_URL": "http://127.0.0.1:9",
    }
    settings = load_settings(env)
    by_name = {p.name: p for p in settings.providers}
    assert {name: p.kind for name, p in by_name.items()} == {
        "openai": "openai-compatible",
        "anthropic": "anthropic",
        "gemini": "gemini",
        "openrouter": "openai-compatible",
    }
    assert by_name["openrouter"].base_url == "https://openrouter.ai/api/v1"
    assert by_name["gemini"].base_url == "http://127.0.0.1:9"
    assert any("ollama: inactive (nothing answers at http://127.0.0.1:9" in note for note in settings.notes)


async def test_ollama_is_discovered_with_its_local_models(tmp_path: Path, fake_ollama) -> None:  # type: ignore[no-untyped-def]
    import trio

    env = {"PATH": "", "HOME": str(tmp_path), "OLLAMA_BASE_URL": fake_ollama.base_url}
    settings = await trio.to_thread.run_sync(load_settings, env)
    ollama = next(p for p in settings.providers if p.name == "ollama")
    assert [m.id for m in ollama.models] == ["llama3.2:3b", "qwen2.5-coder:7b"]
    assert all(m.input_per_mtok == 0 for m in ollama.models)
    assert ollama.embedding_models == ()
    assert any("ollama: active" in note for note in settings.notes)


def test_gemini_cli_is_found_on_path(tmp_path: Path) -> None:
    path = tmp_path / "bin" / "gemini"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    settings = load_settings({"PATH": str(path.parent), "HOME": str(tmp_path), "TIMEOUT_GEMINI": "33"})
    cli = next(p for p in settings.providers if p.name == "gemini-cli")
    assert cli.executable == str(path) and cli.limits.idle_timeout == 33


def test_routing_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    env = {
        "PATH": str(Path(claude).parent),
        "HOME": str(tmp_path),
        "SUCCESS_THRESHOLD": "0.9",
        "CONSECUTIVE_FAILURE_LIMIT": "4",
        "PROVIDER_MODE": "local",
        "ROLE_CHAT": "claude_cli",
        "ROLE_TRIAGE": "haiku",
        "DEDUP_SECONDS": "0",
    }
    settings = load_settings(env, str(EXAMPLE))
    routing = settings.routing
    assert routing.evidence.success_threshold == 0.9 and routing.evidence.consecutive_failure_limit == 4
    assert routing.mode == "local" and settings.dedup_seconds == 0
    assert (routing.thresholds.economy_max, routing.thresholds.standard_max) == (25, 60)
    assert routing.routes["planning"].chain == ("claude-cli:opus", "openai:o3", "premium", "auto")
    assert routing.routes["distill"].chain == ("gemini-cli", "economy", "auto")
    assert routing.routes["chat"].chain == ("claude_cli", "auto")  # seed 002's ROLE_CHAT first
    assert routing.routes["triage"].chain == ("haiku", "auto")  # a new role from the environment
    assert routing.routes["coder"].chain == ("standard", "auto")  # built in
    assert routing.learned == LearnedPolicy()  # the example spells out the defaults
    assert routing.learned.quality_kept == 0.8  # auto keeps the quality promise by default
    assert {p.name: p.local for p in settings.providers}["claude-cli"]


async def test_ollamas_embedding_models_are_told_apart_by_name(tmp_path: Path) -> None:
    import trio

    from tests.fakes.ollama_upstream import FakeOllama

    async with trio.open_nursery() as nursery:
        fake = await FakeOllama(models=("llama3.2:3b", "nomic-embed-text:latest")).start(nursery)
        env = {"PATH": "", "HOME": str(tmp_path), "OLLAMA_BASE_URL": fake.base_url}
        settings = await trio.to_thread.run_sync(load_settings, env)
        nursery.cancel_scope.cancel()
    ollama = next(p for p in settings.providers if p.name == "ollama")
    assert [m.id for m in ollama.models] == ["llama3.2:3b"]
    assert [m.id for m in ollama.embedding_models] == ["nomic-embed-text:latest"]


async def test_openai_base_url_at_another_server_uses_the_models_it_lists(tmp_path: Path) -> None:
    import trio

    from tests.fakes.openai_upstream import FakeOpenAI

    async with trio.open_nursery() as nursery:
        fake = await FakeOpenAI(models=("Qwen/Qwen3-8B", "gpt-4o-mini", "bge-m3-embed")).start(nursery)
        env = {"PATH": "", "HOME": str(tmp_path), "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": fake.base_url}
        settings = await trio.to_thread.run_sync(load_settings, env)
        nursery.cancel_scope.cancel()
    openai = next(p for p in settings.providers if p.name == "openai")
    assert [m.id for m in openai.models] == ["Qwen/Qwen3-8B", "gpt-4o-mini"]
    assert openai.models[1].tier == "economy" and openai.models[0].tier == "standard", (
        "known ids keep their tier"
    )
    assert openai.default_model == "gpt-4o-mini"
    assert [m.id for m in openai.embedding_models] == ["bge-m3-embed"] and openai.image_models == ()
    assert any("lists 3 models: Qwen/Qwen3-8B" in note for note in settings.notes)
    sent = fake.requests[-1]
    assert sent.path == "/v1/models" and sent.headers["authorization"] == "Bearer sk-x"


async def test_openai_base_url_that_lists_nothing_is_said_at_start(tmp_path: Path) -> None:
    import trio

    from tests.fakes.http_server import FakeHTTPServer, FakeRequest, ResponseWriter

    async def no_model_list(request: FakeRequest, out: ResponseWriter) -> None:
        await out.send(404, b"no such path")

    async with trio.open_nursery() as nursery:
        server = FakeHTTPServer(no_model_list)
        await server.start(nursery)
        env = {
            "PATH": "",
            "HOME": str(tmp_path),
            "OPENAI_API_KEY": "sk-x",
            "OPENAI_BASE_URL": server.base_url,
        }
        settings = await trio.to_thread.run_sync(load_settings, env)
        nursery.cancel_scope.cancel()
    openai = next(p for p in settings.providers if p.name == "openai")
    assert "gpt-4o-mini" in [m.id for m in openai.models] and openai.unreachable is None
    assert any("did not list its models" in note and "assuming" in note for note in settings.notes)


def test_once_serving_the_heap_startup_built_is_left_out_of_garbage_collections() -> None:
    # In a process of its own: freezing the test run's heap would change every later test's.
    script = (
        "import gc, json\n"
        "from relaybox.web.cli import settle_the_heap\n"
        "settle_the_heap()\n"
        "print(json.dumps([gc.get_freeze_count(), gc.get_threshold()[0], len(gc.get_objects())]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    frozen, young_threshold, still_walked = json.loads(done.stdout)
    assert frozen > 10_000  # the imported libraries and relaybox's modules
    assert still_walked < frozen / 10
    assert young_threshold == YOUNG_COLLECTION_EVERY


def test_the_quality_promise_is_on_by_default_and_off_by_name(tmp_path: Path) -> None:
    config = tmp_path / "relaybox.toml"
    env = {"PATH": "", "HOME": str(tmp_path)}
    assert load_settings(env, None).routing.learned.quality_kept == 0.8
    config.write_text('[routing]\nquality_kept = "off"\n')
    assert load_settings(env, str(config)).routing.learned.quality_kept is None
    config.write_text("[routing]\nquality_kept = 0.5\n")
    assert load_settings(env, str(config)).routing.learned.quality_kept == 0.5
