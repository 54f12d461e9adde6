"""What /dashboard serves: our page, plotly.js from the installed plotly package (gzipped when
the client takes it), and a clear 404 for anything else."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.harness import serve, settings_for


async def test_the_dashboard_and_its_files(tmp_path: Path) -> None:
    async with serve(settings_for(tmp_path)) as relay, httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/dashboard")
        plotly = await client.get("/dashboard/assets/plotly.min.js", headers={"accept-encoding": "gzip"})
        plain = await client.get("/dashboard/assets/plotly.min.js", headers={"accept-encoding": "identity"})
        script = await client.get("/dashboard/assets/dashboard.js")
        missing = await client.get("/dashboard/assets/secrets.toml")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/dashboard/assets/plotly.min.js"' in page.text
    assert plotly.headers["content-encoding"] == "gzip" and "javascript" in plotly.headers["content-type"]
    assert int(plotly.headers["content-length"]) < len(plotly.content) / 2  # sent compressed
    assert plotly.content == plain.content and b"plotly" in plain.content[:2000].lower()
    assert "content-encoding" not in plain.headers
    assert "refreshAlerts" in script.text
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
