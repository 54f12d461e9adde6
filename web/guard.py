"""Keeping strangers out: which requests relaybox serves at all, decided before any work is done.

Any web page the user visits can make the browser send requests to relaybox on this machine. It
cannot read the answers of a plain cross-site request, but the request itself runs (and spends the
user's subscription or keys); and a page that rebinds its own host name to 127.0.0.1 (DNS
rebinding) becomes same-origin with relaybox and can read everything. Three checks stop both:

- Host: only the names relaybox answers to: loopback names and addresses, the address it is bound
  to (every address of this machine, and its names, when it serves on every interface), and those
  the operator adds (`[server] allowed_hosts`; `*` switches the check off, e.g. behind a proxy). The
  name is checked, not the port: a forwarded port (ssh -L, a container) changes it legitimately.
- Origin: a request from a web page carries `Origin` (and, from a browser, `Sec-Fetch-Site`); only
  relaybox's own origin (the dashboard), a link the user follows, and the origins the operator adds
  for the model API (`[server] allowed_origins`, with CORS headers) pass. Requests from programs
  (SDKs, curl, CLIs, agents) carry neither and are not affected. No page may frame relaybox's.
- Content type: a request that changes or asks something (POST, PUT, PATCH, DELETE) must say it is
  JSON. A browser sends that only after asking relaybox first (a CORS preflight), which the origin
  check answers, so no page can slip a text/plain or form body past it. A DELETE without a body
  (`curl -X DELETE`) needs no content type: a browser preflights every cross-site DELETE anyway.
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
MODEL_API = "/v1/"
_JSON = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
# What a page an operator allowed may see of an answer beyond the simple headers.
EXPOSED_HEADERS = (
    "x-task-id, x-provider, x-model, x-router-reason, x-fallback-used, x-overhead-ms, x-cost-usd, "
    "x-tokens-saved, x-cache-hit, x-cached-from, x-deduplicated-from, retry-after"
)


@attrs.frozen
class Asked:
    """What the guard reads of a request: its method and path, and the headers that say where it
    comes from (each as sent, repeated headers and all)."""

    method: str
    path: str
    hosts: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    content_type: str | None = None
    fetch_site: str | None = None  # Sec-Fetch-Site: a browser says whose page sent the request
    fetch_mode: str | None = None  # Sec-Fetch-Mode: "navigate" for a page the user opens
    has_body: bool = True


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
        allowed = {host_name(h) if h != "*" else h for h in settings.allowed_hosts}
        return cls(
            hosts=frozenset(hosts | allowed - {"*"}),
            any_host="*" in allowed,
            origins=frozenset(settings.allowed_origins),
        )

    def refusal(self, asked: Asked) -> RelayError | None:
        """Why this request is not served, or None."""
        host = asked.hosts[0] if len(asked.hosts) == 1 else ""
        if not self.any_host and not (host and self.serves_host(host_name(host))):
            name = host_name(host) if host else "(none)"
            return self._refuse(
                "host",
                f"relaybox does not answer to the host {name!r}; add it to [server] allowed_hosts "
                "(RELAYBOX_ALLOWED_HOSTS) if it is yours",
                "host_not_allowed",
            )
        if not self._from_a_page_it_may_serve(asked, host):
            origin = asked.origins[0] if asked.origins else f"another site ({asked.fetch_site})"
            return self._refuse(
                "origin",
                f"requests from web pages at {origin} are not served; add the origin to [server] "
                "allowed_origins (RELAYBOX_ALLOWED_ORIGINS) to let a browser client there use the model API",
                "origin_not_allowed",
            )
        bodiless_delete = asked.method == "DELETE" and not asked.has_body
        if asked.method in WRITES and not bodiless_delete and not _JSON.match(asked.content_type or ""):
            self.refused["content_type"] += 1
            return RelayError(
                415,
                "send the request body as JSON, with Content-Type: application/json",
                "invalid_request_error",
                code="unsupported_media_type",
            )
        return None

    def _from_a_page_it_may_serve(self, asked: Asked, host: str) -> bool:
        """No page at all (SDKs, curl, agents), relaybox's own page, a page the user opened by
        following a link, or a page the operator allowed to use the model API."""
        if len(asked.origins) > 1:
            return False
        if asked.origins:
            origin = asked.origins[0]
            return self.own_origin(origin, host) or self.may_use(origin, asked.path)
        if asked.fetch_site in ("cross-site", "same-site"):
            # No Origin (an image, a frame, a GET): a navigation the user made is fine, nothing else.
            return asked.fetch_mode == "navigate" and asked.method == "GET"
        return True

    def serves_host(self, name: str) -> bool:
        if name in self.hosts:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def may_use(self, origin: str, path: str) -> bool:
        """An origin the operator allowed, for the model API only (not the management API or the
        dashboard): it gets CORS headers there."""
        return path.startswith(MODEL_API) and origin.rstrip("/").lower() in self.origins

    @staticmethod
    def own_origin(origin: str, host: str | None) -> bool:
        """A page relaybox served itself (the dashboard): its origin names the host asked."""
        netloc = urllib.parse.urlsplit(origin).netloc
        return bool(host) and bool(netloc) and netloc.lower() == (host or "").lower()

    def _refuse(self, reason: str, message: str, code: str) -> RelayError:
        self.refused[reason] += 1
        return RelayError(403, message, "permission_error", code=code)


def host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8080` -> `::1`, `Example.com.:80` ->
    `example.com`; anything else after an IPv6 address's bracket leaves it unrecognised."""
    host = host.strip().lower()
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        if bracket and (not rest or (rest.startswith(":") and rest[1:].isdigit())):
            return address
        return host
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        host = name
    return host.rstrip(".")
