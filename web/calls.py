"""An HTTP request read once, at the edge: its body as JSON (400 when it is not), and everything else
the request pipeline needs as a `ModelCall` (who asked, the route, dedup and cache headers, the
compression level; a bad `x-relaybox-*` header, or a name with a control character in it, is a 400
naming it)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from quart import request
from relaybox.protocol.caching import cache_policy
from relaybox.protocol.chat import ChatRequest, ModelRequest
from relaybox.protocol.compression.pipeline import LEVELS
from relaybox.protocol.errors import RelayError
from relaybox.protocol.keys import client_of
from relaybox.protocol.names import check_name
from relaybox.storage.records import ApiKey
from relaybox.web.access_log import note
from relaybox.web.config import Settings
from relaybox.web.model_call import ModelCall

# Deeper JSON than any API here needs; deeper would reach Python's recursion limit further on.
NESTING_LIMIT = 64


async def read_json() -> Any:
    """The request's body as JSON; its digest is kept for deduplication."""
    raw = await request.get_data(cache=False)
    request.body_digest = hashlib.blake2b(raw, digest_size=16).digest()  # type: ignore[attr-defined]
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """JSON, or the 400 that says why not (not JSON, or nested too deep to handle safely)."""
    too_deep = RelayError(
        400, f"the request body nests deeper than {NESTING_LIMIT} levels", code="invalid_json"
    )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if "depth" in str(error).lower() or "recursion" in str(error).lower():  # orjson's own limit
            raise too_deep from None
        raise RelayError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    if _nesting(body) > NESTING_LIMIT:
        raise too_deep
    return body


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value (counted without recursing)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > NESTING_LIMIT:
                return depth
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def as_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RelayError(400, "the request body must be a JSON object", code="invalid_request")
    return body


def model_call(settings: Settings, chat: ModelRequest, request_id: str) -> ModelCall:
    """The call the request pipeline answers, from the parsed body and the request's headers."""
    route_header = request.headers.get("x-relaybox-route") or None
    check_names(chat, route_header)
    key = caller_key()
    note(request.scope, task_id=request_id)  # the access log's and the trace's
    cache = None
    if isinstance(chat, ChatRequest) and settings.cache_bytes > 0:
        cache = cache_policy(chat, request.headers, settings.cache_ttl)
    return ModelCall(
        request=chat,
        request_id=request_id,
        client=_client(),
        key=key,
        route_header=route_header,
        dedup_key=_dedup_key(),
        cache=cache,
        compression=_compression_level(settings.compression),
    )


def check_names(chat: ModelRequest, route_header: str | None) -> None:
    """The names a model call brings, whichever API it came by, before anything is paid for: none
    may hold a control character (they reach headers, log lines and storage; see protocol/names.py)."""
    check_name(chat.model, "model")
    user = chat.passthrough.get("user")
    if isinstance(user, str):
        check_name(user, "user")
    metadata = chat.passthrough.get("metadata")
    if isinstance(metadata, dict):
        for name in metadata:
            check_name(str(name), "metadata")
    if route_header is not None:
        check_name(route_header, "x-relaybox-route", code="invalid_header")


def caller_key() -> ApiKey | None:
    """The client key the request was made with (the app's key check puts it there)."""
    return getattr(request, "api_key", None)


def caller_sees_everyone(keys_in_force: bool) -> bool:
    """Whether the caller may see what other clients sent (a provider's last failure can quote a
    prompt): an admin key, or anyone while no key is in force (then only this machine can ask)."""
    key = caller_key()
    return key.admin if key is not None else not keys_in_force


def _client() -> str | None:
    """Who asked, for the log: the key's name when the request carried one, else its user agent."""
    key = caller_key()
    if key is not None:
        return client_of(key.name)
    return request.headers.get("user-agent", "")[:200] or None


def _compression_level(default: str) -> str:
    level = request.headers.get("x-relaybox-compression", default).strip().lower()
    if level not in LEVELS:
        raise RelayError(
            400,
            f"x-relaybox-compression must be one of {', '.join(LEVELS)}",
            code="invalid_header",
            param="x-relaybox-compression",
        )
    return level


def _dedup_key() -> bytes | None:
    """Identical requests: the same body bytes on the same endpoint and route header, with the same
    client key (one key never joins another's answer)."""
    digest = getattr(request, "body_digest", None)
    if digest is None or request.headers.get("x-relaybox-dedup", "").lower() == "off":
        return None  # e.g. best-of-n sampling: the client wants each answer of its own
    key = caller_key()
    owner = "" if key is None else key.name
    scope = f"{request.path}\n{request.headers.get('x-relaybox-route', '')}\n{owner}\n".encode()
    return scope + digest
