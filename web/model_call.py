"""One model call, as the request pipeline takes it: the parsed request and what came with it
(who asked, the route header, dedup and cache settings, the compression level)."""

from __future__ import annotations

import attrs
from relaybox.protocol.caching import CachePolicy
from relaybox.protocol.chat import ModelRequest
from relaybox.storage.records import ApiKey


@attrs.frozen
class ModelCall:
    """One model call, as the pipeline takes it: the parsed request and what came with it."""

    request: ModelRequest
    request_id: str
    client: str | None = None  # who asked, for the log: "key:NAME", else the user agent
    key: ApiKey | None = None  # the client key it was made with
    route_header: str | None = None  # x-relaybox-route
    dedup_key: bytes | None = None  # identical requests have the same (None: never shared)
    cache: CachePolicy | None = None  # what the request allows the cache (None: no part in it)
    compression: str = "safe"  # "off", "safe" or "aggressive"
    attempts_before: int = 0  # a tool loop's later steps: the attempts its earlier steps made
