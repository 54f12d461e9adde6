"""`GET /dashboard`: the analytics and operations pages, served by relaybox itself.

The pages are static files of ours (`web/dashboard/`) that read the JSON APIs (`/api/stats`,
`/api/providers`, `/api/budget`, `/api/requests`, `/actors`, `/v1/models`) and poll them. Charts
are drawn by plotly.js, taken from the `plotly` Python package's bundled copy: it arrives with
`pip install`, works offline, and no third-party JavaScript lives in this repository.
"""

from __future__ import annotations

import gzip
import importlib.resources
import mimetypes
from functools import cache

from quart import Blueprint, Response, request
from relaybox.protocol.errors import RelayError

blueprint = Blueprint("dashboard", __name__)

# Our own files, by the name the page asks for.
PAGE_FILES = ("index.html", "dashboard.js", "dashboard.css")


@cache
def _our_file(name: str) -> bytes:
    return importlib.resources.files("relaybox.web").joinpath("dashboard", name).read_bytes()


@cache
def _plotly_js() -> bytes:
    return importlib.resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()


@cache
def _gzipped(body: bytes) -> bytes:
    return gzip.compress(body, mtime=0)


def _asset(body: bytes, name: str, max_age: int) -> Response:
    """A file, gzipped for clients that take it (plotly.js: 4.6 MB, 1.4 MB gzipped; the
    dashboard is often opened across a LAN)."""
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {"cache-control": f"public, max-age={max_age}", "vary": "accept-encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = _gzipped(body)
        headers["content-encoding"] = "gzip"
    return Response(body, mimetype=kind, headers=headers)


@blueprint.get("/dashboard")
@blueprint.get("/dashboard/")
async def dashboard() -> Response:
    return _asset(_our_file("index.html"), "index.html", 0)


@blueprint.get("/dashboard/assets/<name>")
async def dashboard_asset(name: str) -> Response:
    if name == "plotly.min.js":
        return _asset(_plotly_js(), name, 86400)
    if name not in PAGE_FILES:
        raise RelayError(404, f"no dashboard file {name}", "not_found_error", code="not_found")
    return _asset(_our_file(name), name, 60)
