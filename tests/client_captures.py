"""What a real client sends to relaybox, kept as a fixture (tests/golden/<client>_request_<turn>.json)
and compared by its structure, so a client's next version that sends something new fails a test
instead of a user's request.

A capture is the request as the client sent it: method, path, the headers (secrets redacted) and
the JSON body, with long texts (system prompts, tool descriptions, tool output) cut to a short
prefix. Everything else is kept: every field, every message and its role, every content part and
its type, every tool and the whole shape of its parameters.

The signature of a capture is its structure without its texts: the endpoint; the header names
(and the values of the headers that switch features on: `*-beta*`, `*feature*`, `anthropic-version`,
`content-encoding`, `content-type`, `accept`); and the body's shape, where every string becomes
"string" except the values of `role`, `type` and `name` (they say what a thing is), every number
"number", and a list the set of its elements' shapes. It works alike for OpenAI chat, Responses
and Anthropic Messages bodies.

    capture = capture_request(method, path, headers, body, client="codex-cli 0.171.0")
    check_against_golden("codex_request_first", capture)   # the live test: fails on a new shape
    response = await replay(http, load_golden("codex_request_first"))   # relaybox takes it
    assert not answer_problems(load_golden(...), response.status_code, response.text)

RELAYBOX_REFRESH_CAPTURES=1 writes the fixtures whose shape changed (or that are missing) instead
of failing; RELAYBOX_REFRESH_CAPTURES=force rewrites them all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
REFRESH_ENV = "RELAYBOX_REFRESH_CAPTURES"
# A long text keeps this many characters, then says how much was cut.
KEEP = 80
# The values that say what a thing is (a message's role, a part's or a tool's type, a tool's name):
# kept in the signature, where every other string is just "string".
LITERAL_KEYS = frozenset({"role", "type", "name"})
# Headers the proxy or the transport set, or that say nothing about the request's meaning.
TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "accept-encoding",
        "user-agent",
    }
)
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"})
REDACTED = "<redacted>"
# Headers whose value (not only their name) is part of the signature.
VALUE_HEADERS = frozenset({"anthropic-version", "content-encoding", "content-type", "accept"})


# --- a capture ----------------------------------------------------------------------------------


def capture_request(
    method: str, path: str, headers: Mapping[str, str], body: bytes | str | dict, *, client: str
) -> dict[str, Any]:
    """The fixture form of a request a client sent: secrets redacted, long texts cut."""
    if isinstance(body, bytes | str):
        body = json.loads(body)
    kept = {}
    for name, value in sorted(headers.items()):
        name = name.lower()
        if name in TRANSPORT_HEADERS - {"user-agent"}:
            continue
        kept[name] = (
            REDACTED if name in SECRET_HEADERS else value
        )  # whole: a beta list is compared item by item
    return {"client": client, "method": method.upper(), "path": path, "headers": kept, "body": trimmed(body)}


def trimmed(value: Any, keep: int = KEEP) -> Any:
    """`value` with every long text cut to `keep` characters. A string that is JSON (a tool call's
    arguments, a metadata header) is kept whole: relaybox parses it."""
    if isinstance(value, dict):
        return {k: trimmed(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [trimmed(v, keep) for v in value]
    if isinstance(value, str) and len(value) > keep and not _is_json(value):
        return f"{value[:keep]}[... {len(value) - keep} characters cut]"
    return value


def _is_json(text: str) -> bool:
    if not text.lstrip().startswith(("{", "[")):
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# --- its signature ------------------------------------------------------------------------------


def signature(capture: Mapping[str, Any]) -> dict[str, Any]:
    """The structure of a capture, without its texts (see the module's docstring)."""
    headers: dict[str, Any] = {}
    for name, value in capture.get("headers", {}).items():
        name = name.lower()
        if name in TRANSPORT_HEADERS or name.startswith("x-stainless-"):
            continue
        if "beta" in name or "feature" in name:
            headers[name] = sorted({part.strip() for part in str(value).split(",") if part.strip()})
        elif name in VALUE_HEADERS:
            headers[name] = str(value).split(";")[0].strip()
        else:
            headers[name] = "present"
    return {
        "endpoint": f"{capture['method']} {capture['path']}",
        "headers": dict(sorted(headers.items())),
        "body": shape(capture["body"]),
    }


def shape(value: Any, key: str | None = None) -> Any:
    """The JSON shape of a value: strings, numbers, booleans and null by their type (but the values
    of role, type and name as they are), objects key by key, lists as the set of their elements'
    shapes."""
    if isinstance(value, dict):
        return {k: shape(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        shapes = {_canonical(shape(v)): shape(v) for v in value}
        return [shapes[k] for k in sorted(shapes)]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, str) and key in LITERAL_KEYS:
        return value
    return "string"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """What changed between two signatures (or shapes), one line per change: `+ where: what` is
    new, `- where: what` is no longer sent, `~ where: before -> now` changed."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for key in sorted(expected.keys() | actual.keys()):
            where = f"{path}.{key}" if path else key
            if key not in actual:
                lines.append(f"- {where}: {_brief(expected[key])}")
            elif key not in expected:
                lines.append(f"+ {where}: {_brief(actual[key])}")
            else:
                lines += differences(expected[key], actual[key], where)
        return lines
    if isinstance(expected, list) and isinstance(actual, list):
        before = {_canonical(e): e for e in expected}
        after = {_canonical(a): a for a in actual}
        gone = [before[k] for k in before if k not in after]
        new = [after[k] for k in after if k not in before]
        lines = []
        # An element that changed (a tool with a new parameter) shows as one change, where it has
        # one counterpart of the same identity on the other side (its type, role and name; else
        # its type and role).
        for identity in (_identity, _kind):
            for old in list(gone):
                same = [n for n in new if identity(n) is not None and identity(n) == identity(old)]
                if len(same) == 1 and len([g for g in gone if identity(g) == identity(old)]) == 1:
                    label = ",".join(str(part) for part in identity(old) or () if part)
                    lines += differences(old, same[0], f"{path}[{label}]")
                    gone.remove(old)
                    new.remove(same[0])
        lines += [f"- {path}[]: {_brief(g)}" for g in gone]
        lines += [f"+ {path}[]: {_brief(n)}" for n in new]
        return lines
    if expected != actual:
        return [f"~ {path}: {_brief(expected)} -> {_brief(actual)}"]
    return []


def _identity(element: Any) -> tuple[Any, ...] | None:
    if not isinstance(element, dict):
        return None
    function = element.get("function") if isinstance(element.get("function"), dict) else {}
    identity = (element.get("type"), element.get("role"), element.get("name"), function.get("name"))
    return identity if any(isinstance(part, str) and part != "string" for part in identity) else None


def _kind(element: Any) -> tuple[Any, ...] | None:
    identity = _identity(element)
    return None if identity is None or identity[:2] == (None, None) else identity[:2]


def _brief(value: Any, limit: int = 300) -> str:
    text = _canonical(value)
    return text if len(text) <= limit else text[:limit] + " ..."


# --- fixtures -----------------------------------------------------------------------------------


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.json"


def load_golden(name: str) -> dict[str, Any]:
    return json.loads(golden_path(name).read_text())


def golden_captures(pattern: str = "*_request_*.json") -> list[str]:
    """The names of the stored captures (every client's, by default)."""
    return sorted(path.stem for path in GOLDEN.glob(pattern))


def check_against_golden(name: str, capture: dict[str, Any]) -> None:
    """The live test: the capture's signature must be the stored fixture's. With
    RELAYBOX_REFRESH_CAPTURES set, write the fixture instead (when its shape changed, or always
    with `force`)."""
    path = golden_path(name)
    refresh = os.environ.get(REFRESH_ENV, "").strip().lower()
    stored = json.loads(path.read_text()) if path.exists() else None
    changed = [] if stored is None else differences(signature(stored), signature(capture))
    if refresh and refresh not in ("0", "false", "no") and (stored is None or changed or refresh == "force"):
        path.write_text(json.dumps(capture, indent=1, ensure_ascii=False) + "\n")
        return
    if stored is None:
        pytest.fail(
            f"no stored capture {path.relative_to(GOLDEN.parent.parent)}: run this test with "
            f"{REFRESH_ENV}=1 to write it, check it, and commit it"
        )
    if changed:
        pytest.fail(
            f"{capture['client']} now sends requests of another shape than {stored['client']} did "
            f"({path.relative_to(GOLDEN.parent.parent)}):\n  "
            + "\n  ".join(changed)
            + "\nCheck that relaybox handles what is new (parses it, forwards it or drops it knowingly, "
            "across every upstream format), then refresh the fixture: rerun this test with "
            f"{REFRESH_ENV}=1 and commit the changed file (tests/test_client_captures.py then "
            "replays it through relaybox).",
            pytrace=False,
        )


# --- replaying a fixture ------------------------------------------------------------------------


def replay_headers(capture: Mapping[str, Any], key: str) -> dict[str, str]:
    """The stored headers, with the key in the place the client put its own."""
    headers = {
        name: value
        for name, value in capture["headers"].items()
        if value != REDACTED and name not in TRANSPORT_HEADERS
    }
    if capture["headers"].get("x-api-key") == REDACTED:
        headers["x-api-key"] = key
    else:
        headers["authorization"] = f"Bearer {key}"
    return headers


async def replay(http: Any, capture: Mapping[str, Any], *, key: str = "sk-relaybox-test") -> Any:
    """Send a stored capture to relaybox (`http`: an httpx.AsyncClient on its base URL) and read
    the whole answer (the stream to its end)."""
    return await http.request(
        capture["method"],
        capture["path"],
        headers=replay_headers(capture, key),
        content=json.dumps(capture["body"]).encode(),
    )


def answer_problems(capture: Mapping[str, Any], status: int, text: str) -> list[str]:
    """What is wrong with relaybox's answer to a replayed capture (nothing, when it answered in full
    in the endpoint's own format)."""
    if status != 200:
        return [f"HTTP {status}: {text[:1000]}"]
    body = capture["body"]
    path = urlsplit(capture["path"]).path  # Claude Code posts to /v1/messages?beta=true
    if not body.get("stream"):
        try:
            json.loads(text)
        except ValueError:
            return [f"not JSON: {text[:500]}"]
        return []
    problems = []
    ends = {"/responses": "response.completed", "/messages": "message_stop", "/chat/completions": "[DONE]"}
    end = next((mark for suffix, mark in ends.items() if path.endswith(suffix)), None)
    if end and end not in text:
        problems.append(f"the stream did not end with {end!r}: ...{text[-800:]}")
    for line in text.splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        try:
            frame = json.loads(line[5:])
        except ValueError:
            problems.append(f"a frame that is not JSON: {line[:300]}")
            continue
        if isinstance(frame, dict) and (
            frame.get("error") or frame.get("type") in ("error", "response.failed", "response.incomplete")
        ):
            problems.append(f"an error frame: {line[:500]}")
    return problems
