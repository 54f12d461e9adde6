"""Keeping strangers out: which requests relaybox serves at all, decided before any work is done.

Any web page the user visits can make the browser send requests to relaybox on this machine. It
cannot read the answers of a plain cross-site request, but the request itself runs (and spends the
user's subscription or keys); and a page that rebinds its own host name to 127.0.0.1 (DNS
rebinding) becomes same-origin with relaybox and can read everything. Three checks stop both:

- Host: only the names relaybox answers to: loopback names and addresses, the address it is bound
  to (every address of this machine, and its names, when it serves on every interface), and those
  the operator adds (`[server] allowed_hosts`; `*` switches the check off, e.g. behind a proxy). The
  name is checked, not the port: a forwarded port (ssh -L, a container) changes it legitimately.
- Origin: a request from a web page carries `Origin`; only relaybox's own origin (the dashboard)
  and those the operator adds (`[server] allowed_origins`) pass, and only those get CORS headers.
  Requests without `Origin` (SDKs, curl, CLIs, agents) are not affected.
- Content type: a request that changes or asks something (POST, PUT, PATCH, DELETE) must say it is
  JSON. A browser sends that only after asking relaybox first (a CORS preflight), which the origin
  check answers, so no page can slip a text/plain or form body past it.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections import Counter

import attrs
from relaybox.protocol.errors import RelayError
from relaybox.web.addresses import lan_addresses, machine_names
from relaybox.web.config import Settings

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
# What a page an operator allowed may see of an answer beyond the simple headers.
EXPOSED_HEADERS = (
    "x-task-id, x-provider, x-model, x-router-reason, x-fallback-used, x-overhead-ms, x-cost-usd, "
    "x-tokens-saved, x-cache-hit, x-cached-from, x-deduplicated-from, retry-after"
)


@attrs.define
class Guard:
    hosts: frozenset[str]  # lower-case names and addresses, no port
    any_host: bool = False
    origins: frozenset[str] = frozenset()  # allowed foreign origins, "scheme://host[:port]", lower case
    refused: Counter[str] = attrs.field(factory=Counter)  # by reason, for /metrics

    @classmethod
    def for_settings(cls, settings: Settings) -> Guard:
        hosts = {"localhost", settings.host.lower().strip("[]")}
        if settings.host in WILDCARD_BINDS:
            hosts |= set(lan_addresses()) | set(machine_names())
        allowed = {h.lower() for h in settings.allowed_hosts}
        return cls(
            hosts=frozenset(hosts | allowed - {"*"}),
            any_host="*" in allowed,
            origins=frozenset(settings.allowed_origins),
        )

    def refusal(
        self, method: str, host: str | None, origin: str | None, content_type: str | None
    ) -> RelayError | None:
        """Why this request is not served, or None."""
        if host and not self.any_host and not self.serves_host(host_name(host)):
            return self._refuse(
                "host",
                RelayError(
                    403,
                    f"relaybox does not answer to the host {host_name(host)!r}; add it to [server] "
                    "allowed_hosts (RELAYBOX_ALLOWED_HOSTS) if it is yours",
                    "permission_error",
                    code="host_not_allowed",
                ),
            )
        if origin is not None and not self.own_origin(origin, host) and not self.allowed_origin(origin):
            return self._refuse(
                "origin",
                RelayError(
                    403,
                    f"requests from web pages at {origin} are not served; add the origin to [server] "
                    "allowed_origins (RELAYBOX_ALLOWED_ORIGINS) to allow a browser client there",
                    "permission_error",
                    code="origin_not_allowed",
                ),
            )
        if method in WRITES and not _JSON.match(content_type or ""):
            return self._refuse(
                "content_type",
                RelayError(
                    415,
                    "send the request body as JSON, with Content-Type: application/json",
                    "invalid_request_error",
                    code="unsupported_media_type",
                ),
            )
        return None

    def serves_host(self, name: str) -> bool:
        if name in self.hosts:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def allowed_origin(self, origin: str) -> bool:
        """A foreign origin the operator allowed: it gets CORS headers."""
        return origin.rstrip("/").lower() in self.origins

    @staticmethod
    def own_origin(origin: str, host: str | None) -> bool:
        """A page relaybox served itself (the dashboard): its origin names the host asked."""
        netloc = urllib.parse.urlsplit(origin).netloc
        return bool(host) and bool(netloc) and netloc.lower() == (host or "").lower()

    def _refuse(self, reason: str, error: RelayError) -> RelayError:
        self.refused[reason] += 1
        return error


def host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8080` -> `::1`, `Example.com.:80` -> `example.com`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        host = name
    return host.rstrip(".")
