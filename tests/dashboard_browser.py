"""Drives every dashboard page in Debian's Chromium with Playwright and prints what it saw (JSON).

    python -m tests.dashboard_browser http://127.0.0.1:PORT [alerts | key KEY | first-day NAME | statuses | empty | promise]

A process of its own: Playwright's sync API runs an asyncio loop, which trio-asyncio (loaded by
relaybox in the test process) would take over. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def browse(base_url: str) -> dict[str, Any]:
    """Every page in headless Chromium: what rendered, what the console said, screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    seen: dict[str, Any] = {"errors": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))

        page.goto(f"{base_url}/dashboard")
        page.wait_for_selector("#chart-cost .main-svg")
        page.wait_for_selector("#chart-budgets .main-svg")
        seen["kpis"] = page.locator("#kpis .kpi").all_inner_texts()
        seen["cost_bars"] = page.locator("#chart-cost .trace.bars").count()
        seen["cost_legend"] = sorted(page.locator("#chart-cost .legendtext").all_text_contents())
        seen["model_bars"] = page.locator("#chart-models .point").count()
        page.wait_for_selector("#alerts .alert")
        seen["alerts"] = page.locator("#alerts .alert").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)
        week = page.locator("#kpis .kpi .value").first.inner_text()
        page.click("[data-days='1']")
        page.wait_for_function(
            f"document.querySelector('#kpis .kpi .value').textContent !== {json.dumps(week)}"
        )
        seen["requests_today"] = page.locator("#kpis .kpi .value").first.inner_text()
        page.click("[data-days='7']")

        page.click("nav a[data-page=providers]")
        page.wait_for_selector('[data-provider="gone"] .badge')
        seen["badges"] = page.locator(".card .badge").all_inner_texts()
        page.locator('[data-provider="gone"] button.test').click()
        page.wait_for_selector('[data-provider="gone"] .diagnosis.bad', timeout=30_000)
        seen["diagnosis"] = page.locator('[data-provider="gone"] .diagnosis').inner_text()
        page.locator('[data-provider="spare"] input.enabled').uncheck()
        page.wait_for_timeout(300)
        seen["matrix_rows"] = page.locator("#routing-matrix tbody tr").count()
        page.screenshot(path=str(ARTIFACTS / "dashboard-providers.png"), full_page=True)
        page.reload()
        page.wait_for_selector('[data-provider="spare"] input.enabled')
        page.wait_for_timeout(300)
        seen["spare_enabled_after_reload"] = page.locator(
            '[data-provider="spare"] input.enabled'
        ).is_checked()

        page.click("nav a[data-page=requests]")
        page.wait_for_selector("#requests-table tbody tr[data-group]")
        seen["request_rows"] = page.locator("#requests-table tbody tr[data-group]").count()
        page.select_option("#filter-provider", "dead")
        page.wait_for_timeout(500)
        seen["filtered_providers"] = sorted(
            set(page.locator("#requests-table tbody tr td:nth-child(2)").all_inner_texts())
        )
        page.locator("#requests-table tbody tr[data-group] td:first-child").first.click()
        page.wait_for_selector("#request-detail [data-rating]")
        page.locator('#request-detail [data-rating="4"]').click()
        page.wait_for_selector('#request-detail [data-rating="4"].active')
        page.select_option("#filter-provider", "")  # every provider's rows, background calls among them
        page.wait_for_selector("#requests-table .badge.background")
        page.screenshot(path=str(ARTIFACTS / "dashboard-requests.png"))

        page.click("nav a[data-page=actors]")
        page.wait_for_selector("#actor-tree .actor")
        seen["actors"] = page.locator("#actor-tree .actor strong").all_inner_texts()
        seen["actor_details"] = page.locator("#actor-tree .actor .muted").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "dashboard-actors.png"), full_page=True)

        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(f"{base_url}/dashboard")
        phone.wait_for_selector("#chart-cost .main-svg")
        seen["phone_overflow"] = phone.evaluate(
            "document.documentElement.scrollWidth > window.innerWidth + 1"
        )
        phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
        browser.close()
    return seen


def alerts(base_url: str) -> dict[str, Any]:
    """The overview's alerts and status line, once the alerts have appeared."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base_url}/dashboard")
        page.wait_for_selector("#alerts .alert")
        page.wait_for_function("document.querySelector('#updated').textContent !== ''")
        seen = {
            "alerts": page.locator("#alerts .alert").all_inner_texts(),
            "status": page.locator("#updated").inner_text(),
        }
        browser.close()
    return seen


def with_key(base_url: str, key: str) -> dict[str, Any]:
    """Keys exist: the page asks for one, and with it the overview renders, with each key's use."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{base_url}/dashboard")
        page.wait_for_selector("#key-form:not([hidden])")
        seen = {"asked": True, "status_before": page.locator("#updated").inner_text()}
        page.fill("#key-input", key)
        page.click("#key-form button")
        page.wait_for_selector("#budgets-unlimited p, #chart-budgets .main-svg")
        seen["form_hidden_after"] = page.locator("#key-form").is_hidden()
        page.wait_for_selector("#keys-panel:not([hidden]) #keys-table tbody tr")
        seen["keys"] = {
            row.get_attribute("data-key"): row.inner_text()
            for row in page.locator("#keys-table tbody tr").all()
        }
        browser.close()
    return seen


def first_day(base_url: str, name: str) -> dict[str, Any]:
    """The overview and the requests page with one day of data (or a single request): the charts'
    axes and bars, the costs shown, the budgets, the latency chart's unit."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base_url}/dashboard")
        page.wait_for_selector("#chart-cost .main-svg")
        page.wait_for_selector("#chart-volume .main-svg")
        page.wait_for_selector("#budgets-unlimited p")

        def bar_share(chart: str) -> float:
            """The widest bar's width as a share of the plot area's."""
            return page.evaluate(
                """(chart) => {
                    const root = document.querySelector(chart);
                    const area = root.querySelector('.draglayer .nsewdrag').getBoundingClientRect();
                    const bars = [...root.querySelectorAll('.bars path')].map((p) => p.getBoundingClientRect().width);
                    return Math.max(0, ...bars) / area.width;
                }""",
                chart,
            )

        seen: dict[str, Any] = {
            "errors": errors,
            "cost_ticks": page.locator("#chart-cost .xtick text").all_text_contents(),
            "volume_ticks": page.locator("#chart-volume .xtick text").all_text_contents(),
            "cost_bar_share": bar_share("#chart-cost"),
            "volume_bar_share": bar_share("#chart-volume"),
            "latency_axis": page.locator("#chart-latency .g-ytitle").all_text_contents(),
            "latency_ticks": page.locator("#chart-latency .ytick text").all_text_contents(),
            "kpis": page.locator("#kpis .kpi").all_inner_texts(),
            "budgets_text": page.locator("#budgets-unlimited").inner_text(),
            "budget_dials": page.locator("#chart-budgets .indicatorlayer .trace").count(),
            "http_errors": page.locator("#http-errors tbody tr").all_inner_texts(),
        }
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
        page.click("nav a[data-page=requests]")
        page.wait_for_selector("#requests-table tbody tr[data-group]")
        seen["request_costs"] = page.locator(
            "#requests-table tbody tr[data-group] td:nth-child(8)"
        ).all_inner_texts()
        browser.close()
    return seen


def statuses(base_url: str) -> dict[str, Any]:
    """What a reader is told about hand-countable traffic: the overview's cards (with their tooltips),
    what the charts add up to, the HTTP errors, every cost shown; on the requests page each status
    as drawn, and a long router reason before and after a click (and after the table is redrawn)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base_url}/dashboard")
        page.wait_for_selector("#chart-volume .main-svg")
        page.wait_for_selector("#chart-models .main-svg")
        page.wait_for_selector("#http-errors tbody tr")
        seen: dict[str, Any] = {"errors": errors}
        seen["kpis"] = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll('#kpis .kpi')].map((k) => [
                k.querySelector('.label').textContent,
                {value: k.querySelector('.value').textContent, detail: k.querySelector('.detail').textContent,
                 title: k.title}]))"""
        )
        seen["chart_sums"] = page.evaluate(
            """() => Object.fromEntries(['chart-volume', 'chart-models', 'chart-success'].map((id) => [id,
                Object.fromEntries(document.getElementById(id).data.map((t) => [t.name || 'bars',
                    t.y.reduce((sum, y) => sum + Number(y), 0)]))]))"""
        )
        seen["success_labels"] = page.evaluate("document.getElementById('chart-success').data[0].text")
        seen["cost_hovers"] = page.evaluate(
            "document.getElementById('chart-cost').data.flatMap((t) => t.customdata)"
        )
        seen["cost_ticks"] = page.locator("#chart-cost .ytick text").all_text_contents()
        seen["http_errors"] = page.evaluate(
            """() => [...document.querySelectorAll('#http-errors tbody tr')].map((row) => ({
                cells: [...row.cells].map((c) => c.innerText),
                color: getComputedStyle(row.cells[2].querySelector('span')).color}))"""
        )
        seen["http_summary"] = page.locator("#http-errors .summary").inner_text()
        seen["learning"] = page.locator("#learning").inner_text()
        seen["overview_text"] = page.locator("main").inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard-statuses-overview.png"), full_page=True)

        page.click("nav a[data-page=requests]")
        page.wait_for_selector("#requests-table tbody tr[data-group]")
        seen["rows"] = page.evaluate(
            """() => [...document.querySelectorAll('#requests-table tbody tr[data-group]')].map((row) => {
                const cell = row.querySelector('td.status');
                const first = cell.querySelector('span');
                return {status: cell.dataset.status, shown: cell.innerText, color: getComputedStyle(first).color,
                        badge: !!cell.querySelector('.badge.background'), cost: row.cells[7].innerText};
            })"""
        )
        reason = page.locator("#requests-table button.reason[title^='auto: code_generation']").first

        def measured() -> dict[str, Any]:
            return reason.evaluate(
                """(b) => ({shown: b.innerText, title: b.title, cut: b.scrollWidth > b.clientWidth,
                           ellipsis: getComputedStyle(b).textOverflow, expanded: b.getAttribute('aria-expanded')})"""
            )

        seen["reason_before"] = measured()
        reason.click()
        page.wait_for_selector("#requests-table button.reason.expanded")
        seen["reason_open"] = measured()
        seen["detail_hidden_after_reason_click"] = page.locator("#request-detail").is_hidden()
        page.screenshot(path=str(ARTIFACTS / "dashboard-statuses-requests.png"), full_page=True)
        page.select_option("#filter-status", "judge")  # the table is drawn again, for one status
        page.wait_for_function(
            "document.querySelectorAll('#requests-table tbody tr[data-group]').length === 1"
        )
        seen["judge_only"] = page.locator("#requests-table tbody tr[data-group] td.status").all_inner_texts()
        page.select_option("#filter-status", "")
        page.wait_for_function("document.querySelectorAll('#requests-table tbody tr[data-group]').length > 1")
        seen["reason_after_redraw"] = measured()
        page.locator("#requests-table tbody tr[data-group] td:first-child").first.click()
        page.wait_for_selector("#request-detail [data-rating]")
        seen["detail_statuses"] = page.locator("#request-detail tbody tr td:nth-child(4)").all_inner_texts()
        browser.close()
    return seen


def empty(base_url: str) -> dict[str, Any]:
    """No provider configured: what each page says to configure, and the start-up notes."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base_url}/dashboard")
        page.wait_for_selector("#setup:not([hidden]) li")
        seen: dict[str, Any] = {"errors": errors, "overview": page.locator("#setup").inner_text()}
        page.wait_for_selector("#http-errors tbody tr")
        seen["http_errors"] = page.locator("#http-errors tbody tr").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "dashboard-empty.png"))
        page.click("nav a[data-page=requests]")
        page.wait_for_selector("#page-requests.active")
        seen["requests_page_says"] = page.locator("#setup").is_visible()
        page.click("nav a[data-page=providers]")
        page.wait_for_selector("#discovery-notes li", state="attached")
        page.click(".discovery summary")
        seen["discovery"] = page.locator("#discovery-notes li").all_inner_texts()
        browser.close()
    return seen


def promise(base_url: str) -> dict[str, Any]:
    """The quality promise's panel: what it says, and the chart's traces as drawn (names, days,
    values, the interval's bars, the axis they are on)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base_url}/dashboard")
        page.wait_for_selector("#chart-promise .main-svg")
        traces = page.evaluate(
            """() => document.getElementById('chart-promise').data.map((t) => ({
                name: t.name, x: t.x, y: t.y, yaxis: t.yaxis || 'y',
                plus: t.error_y ? t.error_y.array : null, minus: t.error_y ? t.error_y.arrayminus : null,
            }))"""
        )
        seen: dict[str, Any] = {
            "errors": errors,
            "panel": page.locator("#promise").inner_text(),
            "traces": traces,
            "drawn_points": page.locator("#chart-promise .scatterlayer .point").count(),
        }
        page.locator("#chart-promise").screenshot(path=str(ARTIFACTS / "dashboard-promise.png"))
        browser.close()
    return seen


if __name__ == "__main__":
    if sys.argv[2:3] == ["key"]:
        print(json.dumps(with_key(sys.argv[1], sys.argv[3])))
    elif sys.argv[2:3] == ["first-day"]:
        print(json.dumps(first_day(sys.argv[1], sys.argv[3])))
    elif sys.argv[2:3] == ["statuses"]:
        print(json.dumps(statuses(sys.argv[1])))
    elif sys.argv[2:3] == ["empty"]:
        print(json.dumps(empty(sys.argv[1])))
    elif sys.argv[2:3] == ["promise"]:
        print(json.dumps(promise(sys.argv[1])))
    else:
        what = alerts if sys.argv[2:] == ["alerts"] else browse
        print(json.dumps(what(sys.argv[1])))
