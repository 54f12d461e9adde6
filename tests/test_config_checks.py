"""The configuration checked against what relaybox reads (a typo or a number out of range refuses
the start, naming each problem), start-up messages that name the setting as the user wrote it,
MCP schema notes only for an active Gemini provider, and an unreachable OPENAI_BASE_URL shown as
such, not as active with an assumed model list."""

from __future__ import annotations

import json
import logging
import socket
import stat
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import attrs
import httpx
import pytest
import trio
from relaybox.actors.breaker import BreakerPolicy
from relaybox.actors.mcp_server import schema_notes
from relaybox.actors.provider import ProviderLimits
from relaybox.protocol.tool_loop import McpServerSpec, McpSettings, McpTool
from relaybox.web.cli import startup_report
from relaybox.web.config import ConfigError, ProviderConfig, discovery, load_settings, schema
from relaybox.web.config.values import Section
from relaybox.web.diagnosis import diagnose

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.tcp_proxy import CuttableProxy
from tests.harness import api_provider, cli_executable, openai_provider, serve, settings_for

EXAMPLE = Path(__file__).resolve().parent.parent / "web" / "relaybox.example.toml"


def load(tmp_path: Path, text: str, **env: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "relaybox.toml"
    config.write_text(text)
    return load_settings({"PATH": "", "HOME": str(tmp_path), **env}, str(config))


def refusal(tmp_path: Path, text: str, **env: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text, **env)
    return refused.value.problems


def fake_claude(tmp_path: Path) -> str:
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- item 2: typos and numbers out of range -------------------------------------------------


def test_every_typo_and_bad_number_is_refused_at_once_with_the_nearest_known_name(tmp_path: Path) -> None:
    problems = refusal(
        tmp_path,
        '[servr]\nhost = "0.0.0.0"\n'
        "[server]\nprot = 18083\n"
        '[routing]\nunknown_model = "reject"\n'
        "[cache]\nmax_mb = -5\n",
    )
    assert problems == (
        "unknown section [servr]: did you mean [server]?",
        "unknown setting [server] prot: did you mean `port`?",
        "unknown setting [routing] unknown_model: did you mean `unknown_models`?",
        "[cache] max_mb must be at least 0, got -5",
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "journal = 'os'",
            "unknown setting journal at the top of the file, outside any [section]: it belongs in [storage]",
        ),
        ("[server]\njournal = 'os'", "unknown setting [server] journal: it belongs in [storage]"),
        ("[[ab_test]]\nname = 'x'", "unknown section [[ab_test]]: did you mean [[ab_tests]]?"),
        ("[breaker]\ncooldwn = 3", "unknown setting [breaker] cooldwn: did you mean `cooldown`?"),
        (
            "[supervisor]\nmax_restart = 3",
            "unknown setting [supervisor] max_restart: did you mean `max_restarts`?",
        ),
        (
            "[routes.x]\nchain = ['auto']\ntool = ['fs']",
            "unknown setting [routes.x] tool: did you mean `tools`?",
        ),
        (
            "[mcp.servers.fs]\ncommand = 'x'\narg = ['y']",
            "unknown setting [mcp.servers.fs] arg: did you mean `args`?",
        ),
        (
            "[providers.claude-cli]\nsystem_promt = 'append'",
            "unknown setting [providers.claude-cli] system_promt: did you mean `system_prompt`?",
        ),
        (
            "[providers.groq]\nbase_url = 'http://h'\nmodels = [{id = 'm', input_per_mtoken = 1}]",
            "unknown setting [providers.groq] models[0] input_per_mtoken: did you mean `input_per_mtok`?",
        ),
        (
            "[providers.openrouter]\nkind = 'openai-compatible'",
            "unknown setting [providers.openrouter] kind: [providers.openrouter] is the built-in openrouter; "
            "a provider of your own (with kind) needs another name",
        ),
        (
            "[providers.opena]\napi_key = 'sk'",
            "[providers.opena]: base_url must be an http(s) URL, got None "
            "(or did you mean the built-in [providers.openai]?)",
        ),
        ("[[ab_tests]]\nbaseline = 'a:m'\nchalenger = 'b:m'", "unknown setting [[ab_tests]] #1 chalenger"),
    ],
)
def test_a_name_relaybox_does_not_read_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    assert any(p.startswith(problem) for p in refusal(tmp_path, text)), problem


@pytest.mark.parametrize(
    ("text", "env", "problem"),
    [
        ("[server]\nport = 0", {}, "[server] port must be between 1 and 65535, got 0"),
        ("[server]\nport = 70000", {}, "[server] port must be between 1 and 65535, got 70000"),
        ("[server]\nmax_body_mb = 0", {}, "[server] max_body_mb must be above 0, got 0"),
        ("[server]\ngrace_seconds = -1", {}, "[server] grace_seconds must be at least 0, got -1"),
        (
            "[breaker]\nfailure_rate = 1.5",
            {},
            "[breaker] failure_rate must be above 0 and at most 1, got 1.5",
        ),
        ("[breaker]\ncooldown = 0", {}, "[breaker] cooldown must be above 0, got 0"),
        ("[supervisor]\nperiod = -60", {}, "[supervisor] period must be above 0, got -60"),
        ("[cache]\nttl_seconds = 0", {}, "[cache] ttl_seconds must be above 0, got 0"),
        ("", {"RESPONSE_CACHE_MB": "-1"}, "RESPONSE_CACHE_MB must be at least 0, got '-1'"),
        ("[routing]\nbudget_pressure = 2", {}, "[routing] budget_pressure must be between 0 and 1, got 2"),
        ("[routing]\ncascade_below = 101", {}, "[routing] cascade_below must be between 0 and 100, got 101"),
        ("[routing]\ndedup_seconds = -1", {}, "[routing] dedup_seconds must be at least 0, got -1"),
        ("[mcp]\ntool_timeout = 0", {}, "[mcp] tool_timeout must be above 0, got 0"),
        ("", {"TIMEOUT_LOCAL": "0"}, "TIMEOUT_LOCAL must be above 0, got '0'"),
        # A provider's table is checked whether or not the provider is active (no OPENAI_API_KEY).
        ("[providers.openai]\nslots = 0", {}, "[providers.openai] slots must be at least 1, got 0"),
        ("[providers.openai]\ntimeout = -3", {}, "[providers.openai] timeout must be above 0, got -3"),
        (
            "[providers.x]\nbase_url = 'http://h'\nenabled = false\nmodels = [{id = 'm', input_per_mtok = -1}]",
            {},
            "[providers.x]: models[0] input price must be at least 0, got -1",
        ),
    ],
)
def test_a_number_out_of_range_is_refused_naming_key_value_and_range(
    tmp_path: Path, text: str, env: dict[str, str], problem: str
) -> None:
    assert problem in refusal(tmp_path, text, **env)


def test_a_route_with_both_a_chain_and_primary_is_refused(tmp_path: Path) -> None:
    problems = refusal(tmp_path, "[routes.x]\nchain = ['auto']\nprimary = 'economy'")
    assert problems == (
        "[routes.x]: either chain = [...] or primary, backup_1, backup_2, backup_3, backup_4, not both",
    )


def test_a_misspelt_custom_providers_key_is_refused(tmp_path: Path) -> None:
    entry = {"id": "groq", "baseURL": "https://api.groq.com/openai/v1", "models": ["llama"]}
    problems = refusal(tmp_path, "", CUSTOM_PROVIDERS=json.dumps([entry]))
    assert "unknown setting CUSTOM_PROVIDERS entry groq baseURL: did you mean `baseUrl`?" in problems


def test_the_known_keys_of_a_policy_are_its_fields_and_every_read_key_is_known() -> None:
    assert schema.SECTIONS["breaker"] == {field.name for field in attrs.fields(BreakerPolicy)}
    assert "escalation_initial" in schema.SECTIONS["supervisor"]
    with pytest.raises(AssertionError, match="does not list it"):
        Section("[server]", {}, schema.SECTIONS["server"]).get("colour")


def test_the_shipped_example_file_passes_the_check(tmp_path: Path) -> None:
    assert schema.unknown_names(tomllib.loads(EXAMPLE.read_text())) == []
    settings = load_settings(
        {"PATH": str(Path(fake_claude(tmp_path)).parent), "HOME": str(tmp_path)}, str(EXAMPLE)
    )
    assert settings.routing.unknown_models == "route" and settings.cache_bytes == 64 * 1024 * 1024


# --- item 4: messages name the setting as the user wrote it ---------------------------------


def test_the_example_files_default_provider_is_named_as_written(tmp_path: Path) -> None:
    settings = load_settings({"PATH": "", "HOME": str(tmp_path)}, str(EXAMPLE))  # no claude on PATH
    assert '[routing] default_provider = "claude-cli" is ignored: claude-cli is not active' in "\n".join(
        settings.notes
    )
    assert not any("DEFAULT_PROVIDER" in note for note in settings.notes)
    assert settings.default_provider is None


def test_default_provider_from_the_environment_is_named_so_with_the_nearest_name(tmp_path: Path) -> None:
    settings = load(tmp_path, "", DEFAULT_PROVIDER="opnai", OPENAI_API_KEY="sk")
    assert (
        "DEFAULT_PROVIDER=opnai is ignored: no provider is named 'opnai'; did you mean `openai`?"
        in settings.notes
    )
    underscored = load(
        tmp_path, "", DEFAULT_PROVIDER="claude_cli", PATH=str(Path(fake_claude(tmp_path)).parent)
    )
    assert underscored.default_provider == "claude-cli", "seed 002 spells provider ids with underscores"


@pytest.mark.parametrize(
    ("text", "env", "problem"),
    [
        (
            "[routing]\nsuccess_threshold = 80",
            {},
            "[routing] success_threshold must be between 0 and 1, got 80",
        ),
        ("", {"SUCCESS_THRESHOLD": "80"}, "SUCCESS_THRESHOLD must be between 0 and 1, got '80'"),
        (
            "[routing]\nprovider_mode = 'offline'",
            {},
            "[routing] provider_mode must be one of hybrid, local, cloud",
        ),
        (
            "[compression]\nlevel = 'max'",
            {},
            "[compression] level must be one of off, safe, aggressive, got 'max'",
        ),
        (
            "[storage]\ndatabase_url = 'mysql://h/db'",
            {},
            "[storage] database_url must be a postgresql:// URL (without it relaybox uses its SQLite file)",
        ),
        ("[providers.claude-cli]\ntimeout = 0", {}, "[providers.claude-cli] timeout must be above 0, got 0"),
        ("", {"TIMEOUT_CLAUDE": "soon"}, "TIMEOUT_CLAUDE must be a number, got 'soon'"),
        (
            "[providers.x]\nbase_url = 'http://h'\npriority = 1.5\nmodels = ['m']",
            {},
            "[providers.x] priority must be an integer, got 1.5",
        ),
    ],
)
def test_a_refused_value_is_named_as_the_user_wrote_it(
    tmp_path: Path, text: str, env: dict[str, str], problem: str
) -> None:
    assert any(p.startswith(problem) for p in refusal(tmp_path, text, **env)), problem


def test_a_key_from_the_file_is_named_in_notes_and_in_a_refused_keys_diagnosis(tmp_path: Path) -> None:
    settings = load(tmp_path, "[providers.openai]\napi_key = 'sk-from-the-file'")
    assert "openai: active ([providers.openai] api_key is set)" in settings.notes
    openai = next(p for p in settings.providers if p.name == "openai")
    refused = diagnose(openai, "openai/gpt-4o-mini: auth: HTTP 401: invalid api key")
    assert refused == "❌ The API key was refused. Check [providers.openai] api_key."
    by_variable = load(tmp_path, "[providers.openai]\napi_key_env = 'WORK_OPENAI_KEY'", WORK_OPENAI_KEY="sk")
    assert "openai: active (WORK_OPENAI_KEY is set)" in by_variable.notes


def test_an_executable_from_the_file_is_named_when_missing(tmp_path: Path) -> None:
    settings = load(tmp_path, "[providers.claude-cli]\nexecutable = '/nowhere/claude'")
    assert settings.unavailable == (
        (
            "claude-cli",
            "configured, but '/nowhere/claude' ([providers.claude-cli] executable) not found; "
            "install with `npm install -g @anthropic-ai/claude-code` or set CLAUDE_CLI_PATH",
        ),
    )


# --- item 5: MCP schema notes only for an active Gemini provider ----------------------------


def test_schema_notes_concern_only_an_active_gemini_provider() -> None:
    tools = (
        McpTool(
            "fs",
            "read",
            "reads",
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
        ),
        McpTool("fs", "list", "lists", {"type": "object", "properties": {"path": {"type": "string"}}}),
    )
    assert schema_notes(tools, gemini_active=False) == ()
    assert schema_notes(tools, gemini_active=True) == ("read: Gemini drops (top): $schema",)


async def test_actors_show_gemini_schema_notes_only_when_gemini_is_active(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relaybox.mcp")
    root = tmp_path / "project"
    root.mkdir()
    fs = McpServerSpec("fs", command=cli_executable("mcp-server-filesystem"), args=(str(root),))
    openai = openai_provider("upstream", "http://127.0.0.1:9/v1")
    gemini = api_provider("gemini", "gemini", "http://127.0.0.1:9", models=("gemini-2.5-flash",))
    seen = {}
    for name, providers in (("openai only", (openai,)), ("with gemini", (openai, gemini))):
        settings = settings_for(tmp_path / name, *providers, mcp=McpSettings(servers=(fs,)))
        caplog.clear()
        async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
            with trio.fail_after(30):
                await relay.system.mcp_servers["fs"].wait_ready()
            tree = (await client.get("/actors")).json()["supervisor"]
        shown = next(child for child in tree["children"] if child["name"] == "mcp:fs")["schema_notes"]
        logged = [r.getMessage() for r in caplog.records if "Gemini" in r.getMessage()]
        seen[name] = (shown, logged)
    assert seen["openai only"] == ([], [])
    shown, logged = seen["with gemini"]
    assert shown and all("Gemini drops" in note for note in shown)
    assert logged == [f"MCP server fs: Gemini drops part of {len(shown)} tools' schemas (each at /actors)"]


# --- item 7: an unreachable OPENAI_BASE_URL -------------------------------------------------


def test_an_unreachable_openai_base_url_is_configured_but_not_active_with_assumed_models(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = load(tmp_path, "[providers.ollama]\nenabled = false", OPENAI_API_KEY="sk", OPENAI_BASE_URL=url)
    openai = next(p for p in settings.providers if p.name == "openai")
    assert openai.unreachable == "connection refused"
    assert (openai.models, openai.image_models, openai.embedding_models) == ((), (), ())
    assert any(f"nothing answers at {url} (connection refused)" in note for note in settings.notes)
    assert not any("assuming" in note or "openai: active" in note for note in settings.notes)
    report = startup_report(SimpleNamespace(settings=settings, keys=None), ["http://127.0.0.1:8080"])  # type: ignore[arg-type]
    configured = report.split("configured, but not reachable at start-up", 1)[1]
    assert (
        "active providers:" not in report
        and f"openai         openai-compatible  {url}: connection refused" in configured
    )


def test_the_start_up_check_of_a_silent_server_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "PROBE_SECONDS", 0.2)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        started = time.monotonic()
        settings = load(
            tmp_path, "[providers.ollama]\nenabled = false", OPENAI_API_KEY="sk", OPENAI_BASE_URL=url
        )
        waited = time.monotonic() - started
    assert waited < 1.5
    assert next(p for p in settings.providers if p.name == "openai").unreachable == "no answer within 0.2 s"


async def test_an_unreachable_provider_serves_by_itself_once_its_server_answers(
    tmp_path: Path, fake_openai: FakeOpenAI, nursery: trio.Nursery
) -> None:
    proxy = await CuttableProxy("127.0.0.1", fake_openai.server.port).start(nursery)
    proxy.cut()
    env = {
        "PATH": "",
        "HOME": str(tmp_path),
        "RELAYBOX_DATA_DIR": str(tmp_path / "data"),
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{proxy.port}/v1",
    }
    config = tmp_path / "relaybox.toml"
    config.write_text("[providers.ollama]\nenabled = false\n")
    settings = await trio.to_thread.run_sync(load_settings, env, str(config))
    assert next(p for p in settings.providers if p.name == "openai").unreachable is not None
    ask = {"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with serve(settings) as relay, httpx.AsyncClient(base_url=relay.base_url, timeout=30) as client:
        listed = (await client.get("/v1/models")).json()["data"]
        while_down = await client.post("/v1/chat/completions", json=ask)
        proxy.restore()
        pinned = await client.post("/v1/chat/completions", json=ask)
        by_prefix = await client.post("/v1/chat/completions", json={**ask, "model": "gpt-4o-mini"})
    assert not [m for m in listed if m["relaybox"].get("provider") == "openai"], "no assumed model list"
    assert while_down.status_code >= 500
    assert pinned.status_code == 200 and by_prefix.status_code == 200
    assert len(fake_openai.chat_requests()) == 2


def test_provider_limits_are_unchanged_by_the_checks(tmp_path: Path) -> None:
    settings = load(
        tmp_path, "[providers.x]\nbase_url = 'http://h'\nslots = 3\nmailbox = 4\ntimeout = 5\nmodels = ['m']"
    )
    x: ProviderConfig = next(p for p in settings.providers if p.name == "x")
    assert x.limits == ProviderLimits(slots=3, mailbox=4, idle_timeout=5.0)
