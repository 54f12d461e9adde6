"""Keeping strangers out: web pages the user happens to open (cross-site requests, DNS rebinding)
cannot use relaybox, and one client key cannot read another's prompts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from relaybox.protocol.keys import key_hash, new_key, shown_prefix
from relaybox.storage.records import ApiKey
from relaybox.web.app import create_app
from relaybox.web.config import Settings
from relaybox.web.guard import Asked, Guard, host_name

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.scripts import Reply
from tests.harness import Running, eventually, openai_provider, serve, settings_for

REPO = Path(__file__).parent.parent
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
FOREIGN = "http://127.0.0.1:3000"  # another local origin: a dev server, any page the user opened


# --- the guard, as pure decisions ----------------------------------------------------------


def test_host_names_are_read_without_their_port() -> None:
    assert host_name("127.0.0.1:8080") == "127.0.0.1"
    assert host_name("[::1]:8080") == "::1"
    assert host_name("Relay.Example.COM.:443") == "relay.example.com"
    assert host_name("localhost") == "localhost"
    assert host_name("[::1]evil.example") == "[::1]evil.example", "not an address with a port"


def asked(method: str = "POST", path: str = "/v1/chat/completions", **headers: object) -> Asked:
    return Asked(
        method, path, **{"hosts": ("127.0.0.1:8080",), "content_type": "application/json", **headers}
    )  # type: ignore[arg-type]


def test_the_guard_answers_loopback_its_own_addresses_and_what_the_operator_adds() -> None:
    local = Guard.for_settings(Settings())
    assert all(local.serves_host(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not local.serves_host("evil.example") and not local.serves_host("192.168.1.5")
    added = Guard.for_settings(Settings(allowed_hosts=("Relay.Example.com:443",)))
    assert added.serves_host("relay.example.com")
    bound = Guard.for_settings(Settings(host="10.1.2.3"))
    assert bound.serves_host("10.1.2.3") and not bound.serves_host("10.1.2.4")
    anything = Guard.for_settings(Settings(allowed_hosts=("*",)))
    assert anything.refusal(asked(hosts=("evil.example",))) is None
    assert anything.refusal(asked(hosts=())) is None


def test_the_guard_refuses_in_order_host_origin_then_a_body_that_is_not_json() -> None:
    guard = Guard.for_settings(Settings(allowed_origins=("http://localhost:5173",)))
    own = "http://127.0.0.1:8080"
    cases = {
        "foreign host": (asked(hosts=("evil.example:8080",), origins=(FOREIGN,)), "host_not_allowed"),
        "no host": (asked(hosts=()), "host_not_allowed"),
        "two hosts": (asked(hosts=("127.0.0.1:8080", "evil.example")), "host_not_allowed"),
        "foreign page": (asked(origins=(FOREIGN,)), "origin_not_allowed"),
        "null origin": (asked(origins=("null",)), "origin_not_allowed"),
        "two origins": (asked(origins=(own, FOREIGN)), "origin_not_allowed"),
        "an image or frame of another site": (
            asked("GET", "/api/requests", fetch_site="same-site", fetch_mode="no-cors"),
            "origin_not_allowed",
        ),
        "allowed origin, management API": (
            asked("PUT", "/api/budget", origins=("http://localhost:5173",)),
            "origin_not_allowed",
        ),
        "text/plain": (asked(content_type="text/plain"), "unsupported_media_type"),
        "no content type": (asked(content_type=None), "unsupported_media_type"),
        "a DELETE with a text body": (
            asked("DELETE", "/v1/responses/r", content_type="text/plain"),
            "unsupported_media_type",
        ),
        "a DELETE without a body": (
            asked("DELETE", "/v1/responses/r", content_type=None, has_body=False),
            None,
        ),
        "a POST without a body": (asked(content_type=None, has_body=False), "unsupported_media_type"),
        "the dashboard": (asked(origins=(own,), content_type="application/json; charset=utf-8"), None),
        "allowed origin, model API": (asked(origins=("http://localhost:5173",)), None),
        "a link the user followed": (
            asked("GET", "/dashboard", fetch_site="cross-site", fetch_mode="navigate"),
            None,
        ),
        "a program": (asked("GET", "/v1/models", content_type=None), None),
        "a JSON media type": (asked(content_type="application/vnd.api+json"), None),
    }
    codes = {case: getattr(guard.refusal(request), "code", None) for case, (request, _) in cases.items()}
    assert codes == {case: code for case, (_, code) in cases.items()}
    assert dict(guard.refused) == {"host": 3, "origin": 5, "content_type": 4}


# --- over HTTP ---------------------------------------------------------------------------------


async def test_cross_site_requests_and_foreign_hosts_are_refused_before_any_work(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        text_plain = {"content-type": "text/plain"}
        cross_site = await client.post(
            "/v1/chat/completions", content=json.dumps(HELLO), headers={**text_plain, "origin": FOREIGN}
        )
        not_json = await client.post("/v1/chat/completions", content=json.dumps(HELLO), headers=text_plain)
        budget = await client.put(
            "/api/budget",
            content=json.dumps({"period": "daily", "limit_usd": 0.01}),
            headers={**text_plain, "origin": FOREIGN},
        )
        preflight = await client.options(
            "/v1/chat/completions",
            headers={"origin": FOREIGN, "access-control-request-method": "POST"},
        )
        rebound = {"host": f"rebound.test:{relay.base_url.rsplit(':', 1)[1]}"}
        rebinding = [
            await client.get(path, headers=rebound) for path in ("/api/requests", "/actors", "/metrics")
        ]
        own_page = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"origin": relay.base_url}
        )  # the dashboard's own origin
        sdk = await client.post("/v1/chat/completions", json=HELLO)  # no Origin: SDKs, curl, agents
        budgets = (await client.get("/api/budget")).json()["data"]
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in (cross_site, budget, preflight)] == [403, 403, 403]
    assert cross_site.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in preflight.headers
    assert not_json.status_code == 415 and "application/json" in not_json.json()["error"]["message"]
    assert [r.status_code for r in rebinding] == [403, 403, 403]
    assert rebinding[0].json()["error"]["code"] == "host_not_allowed"
    assert own_page.status_code == 200 and sdk.status_code == 200
    assert len(fake_openai.chat_requests()) == 2, "only the dashboard's and the SDK's calls went upstream"
    assert not any(b["enabled"] for b in budgets)
    assert 'relaybox_requests_refused_total{reason="origin"} 3' in metrics  # the preflight too
    assert 'relaybox_requests_refused_total{reason="host"} 3' in metrics
    assert 'relaybox_requests_refused_total{reason="content_type"} 1' in metrics


async def test_an_origin_the_operator_allows_gets_cors_headers(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = settings_for(
        tmp_path, openai_provider("up", fake_openai.base_url), allowed_origins=("http://localhost:5173",)
    )
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "origin": "http://localhost:5173",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        answer = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"origin": "http://localhost:5173"}
        )
        other = await client.post("/v1/chat/completions", json=HELLO, headers={"origin": FOREIGN})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert (
        answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "http://localhost:5173"
    )
    assert "x-provider" in answer.headers["access-control-expose-headers"]
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


async def test_admin_changes_from_a_web_page_are_refused_even_with_an_admin_key(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    admin = new_key()
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10, headers={"x-api-key": admin}) as client,
    ):
        await add_key(relay, "ops", admin, admin=True)
        cross_site = await client.put(
            "/api/providers/up", json={"enabled": False}, headers={"origin": FOREIGN}
        )
        providers = (await client.get("/api/providers")).json()["data"]
    assert cross_site.status_code == 403
    assert providers[0]["enabled"] is True


# --- one key cannot read another's prompts ------------------------------------------------------


async def add_key(relay: Running, name: str, key: str, *, admin: bool = False) -> None:
    await relay.system.storage.create_key(ApiKey(name, key_hash(key), shown_prefix(key), admin, time.time()))
    assert relay.system.keys is not None
    await relay.system.keys.load()


async def test_every_api_route_keeps_a_members_view_to_its_own_requests(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    alice, bob, admin = new_key(), new_key(), new_key()
    secret = "alice's secret plan for the merger"
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        for name, key, is_admin in (("alice", alice, False), ("bob", bob, False), ("ops", admin, True)):
            await add_key(relay, name, key, admin=is_admin)
        as_alice, as_bob, as_admin = ({"x-api-key": k} for k in (alice, bob, admin))
        said = await client.post(
            "/v1/chat/completions",
            json={**HELLO, "messages": [{"role": "user", "content": secret}]},
            headers=as_alice,
        )
        task = said.headers["x-task-id"]
        await client.post("/v1/chat/completions", json=HELLO, headers=as_bob)
        await eventually(lambda: relay.system.recorder.statistics().written >= 2, within=10)
        group = (await client.get("/api/requests", headers=as_alice)).json()["data"][0]["request_group_id"]
        # Each route of the management API as bob (a member) sees it: `checks` must name them all.
        checks = {
            ("GET", "/api/stats"): await client.get("/api/stats", headers=as_bob),
            ("GET", "/api/requests"): await client.get("/api/requests", headers=as_bob),
            ("GET", "/api/requests?group"): await client.get(
                "/api/requests", params={"group": group}, headers=as_bob
            ),
            ("POST", "/api/feedback"): await client.post(
                "/api/feedback", json={"taskId": task, "rating": 1}, headers=as_bob
            ),
            ("GET", "/api/budget"): await client.get("/api/budget", headers=as_bob),
            ("PUT", "/api/budget"): await client.put(
                "/api/budget", json={"period": "daily", "limit_usd": 1}, headers=as_bob
            ),
            ("GET", "/api/providers"): await client.get("/api/providers", headers=as_bob),
            ("PUT", "/api/providers/<provider_id>"): await client.put(
                "/api/providers/up", json={"enabled": False}, headers=as_bob
            ),
            ("POST", "/api/providers/<provider_id>/test"): await client.post(
                "/api/providers/up/test", json={}, headers=as_bob
            ),
        }
        in_chat = await client.post(
            "/v1/chat/completions",
            json={**HELLO, "messages": [{"role": "user", "content": f"/feedback 1 {task}"}]},
            headers=as_bob,
        )
        operations = [await client.get(path, headers=as_bob) for path in ("/actors", "/metrics", "/health")]
        admin_view = (await client.get("/api/requests", headers=as_admin)).json()["data"]
        alices_view = (await client.get("/api/requests", headers=as_alice)).json()["data"]
    app = create_app(relay.system)
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == {route for route in checks if "?" not in route[1]}, "a new /api route: add it here"
    for route, answer in checks.items():
        assert secret not in answer.text, route
    assert checks[("GET", "/api/requests")].json()["data"][0]["client"] == "key:bob"
    assert checks[("GET", "/api/requests?group")].json()["data"] == []
    assert checks[("POST", "/api/feedback")].status_code == 404, "not bob's answer to rate"
    assert [checks[r].status_code for r in checks if r[0] in ("PUT",) or r[1].endswith("/test")] == [403] * 3
    assert "no answer to rate" in in_chat.text
    # Operations hold no prompt text: any key may read them (the dashboard's Actors page).
    assert [r.status_code for r in operations] == [200, 200, 200]
    assert all(secret not in r.text for r in operations)
    assert {r["client"] for r in admin_view} == {"key:alice", "key:bob"}
    assert alices_view[0]["prompt_summary"] == secret and alices_view[0]["user_rating"] is None


async def test_what_a_member_sees_of_others_failures_and_answers(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    alice, bob, admin = new_key(), new_key(), new_key()
    quoted = "alice-merger-plan-XYZZY"
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        for name, key, is_admin in (("alice", alice, False), ("bob", bob, False), ("ops", admin, True)):
            await add_key(relay, name, key, admin=is_admin)
        # An upstream that quotes the prompt in its error, as some OpenAI-compatible servers do.
        fake_openai.replies.push(Reply(status=400, error_message=f"Invalid content: {quoted!r}"))
        refused = await client.post(
            "/v1/chat/completions",
            json={**HELLO, "messages": [{"role": "user", "content": quoted}]},
            headers={"x-api-key": alice},
        )
        deterministic = {**HELLO, "temperature": 0}
        alices = await client.post("/v1/chat/completions", json=deterministic, headers={"x-api-key": alice})
        bobs = await client.post("/v1/chat/completions", json=deterministic, headers={"x-api-key": bob})
        seen_by = {
            who: [
                (await client.get(path, headers=headers)).text
                for path in ("/actors", "/api/providers", "/health")
            ]
            for who, headers in (("bob", {"x-api-key": bob}), ("ops", {"x-api-key": admin}))
        }
        dashboard = await client.get("/dashboard")
    assert refused.status_code == 400
    assert all(quoted not in text for text in seen_by["bob"]), "a member sees the failure's kind only"
    assert quoted in seen_by["ops"][0] and quoted in seen_by["ops"][1], "an admin sees its details"
    assert quoted not in seen_by["ops"][2], "/health is open: never the details"
    assert '"last_failure": "rejected"' in seen_by["bob"][1]
    assert alices.headers["x-cache-hit"] == "false" and bobs.headers["x-cache-hit"] == "false"
    assert "x-deduplicated-from" not in bobs.headers, "one key never shares another's answer"
    assert dashboard.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in dashboard.headers["content-security-policy"]


async def test_with_prompts_none_no_prompt_text_is_stored(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    secret = "the launch codes are 0000"
    settings = settings_for(tmp_path, openai_provider("up", fake_openai.base_url), log_prompts="none")
    async with (
        serve(settings) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        fake_openai.replies.push(Reply(status=400, error_message=f"cannot take {secret!r}"))
        refused = await client.post(
            "/v1/chat/completions", json={**HELLO, "messages": [{"role": "user", "content": secret}]}
        )
        answer = await client.post(
            "/v1/chat/completions", json={**HELLO, "messages": [{"role": "user", "content": secret}]}
        )
        await eventually(lambda: relay.system.recorder.statistics().written >= 2, within=10)
        rows = (await client.get("/api/requests")).json()["data"]
    assert answer.status_code == 200
    assert rows[0]["prompt_summary"] is None and rows[0]["status"] == "success"
    assert refused.status_code == 400 and rows[1]["status"] == "rejected" and rows[1]["error_message"] is None
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert secret.encode() not in stored


# --- in a real browser --------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="Debian's Chromium")
async def test_a_hostile_page_in_a_real_browser_gets_nothing(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    secret = "what only the user should see"
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        await client.post(
            "/v1/chat/completions", json={**HELLO, "messages": [{"role": "user", "content": secret}]}
        )
        await eventually(lambda: relay.system.recorder.statistics().written >= 1, within=10)
        tried = await trio.run_process(
            [sys.executable, "-m", "tests.browser_attacks", relay.base_url], capture_stdout=True, cwd=REPO
        )
        budgets = (await client.get("/api/budget")).json()["data"]
        rows = (await client.get("/api/requests")).json()["data"]
    seen = json.loads(tried.stdout)
    assert seen["page"] == {"no_cors": "sent", "preflighted": "blocked by the browser", "form": "submitted"}
    assert len(fake_openai.chat_requests()) == 1, "nothing the page sent reached the upstream"
    assert len(rows) == 1, "nor the request log"
    assert not any(b["enabled"] for b in budgets), "the form did not set a budget"
    assert seen["framed"]["dashboard"] is False, f"the dashboard loaded in a frame: {seen['framed']}"
    for path in ("/api/requests", "/actors", "/v1/models"):
        assert seen[f"rebound {path}"]["status"] == 403
        assert secret not in seen[f"rebound {path}"]["body"]


async def test_a_delete_without_a_body_needs_no_content_type(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """`curl -X DELETE .../v1/responses/ID` sends no body and no content type."""
    async with (
        serve(settings_for(tmp_path, openai_provider("up", fake_openai.base_url))) as relay,
        httpx.AsyncClient(base_url=relay.base_url, timeout=10) as client,
    ):
        made = await client.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "hello"})
        deleted = await client.delete(f"/v1/responses/{made.json()['id']}")
        gone = await client.get(f"/v1/responses/{made.json()['id']}")
    assert made.status_code == 200
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True, deleted.text
    assert gone.status_code == 404
