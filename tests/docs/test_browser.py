"""/swagger/ and /docs/ in a real headless Chromium (Debian's), with no internet to lean on.

Every request the pages make is routed through a check: anything not addressed to
the kasp server under test is aborted and recorded, and the test fails. Console
errors, page errors, failed requests and 4xx/5xx answers fail it too. Screenshots
go to test-artifacts/ (gitignored), for a person to look at.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, sync_playwright

from service.openapi import OPERATIONS
from tests.support.server import RunningServer

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make test` installs it when missing
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Belt and braces: even a request that slipped past the route check could not resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
PAGE_TIMEOUT_MS = 15_000

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


@dataclass
class PageLog:
    """What a page did that a user with no internet would notice."""

    offsite: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return (
            [f"left localhost: {u}" for u in self.offsite]
            + [f"console error: {m}" for m in self.console_errors]
            + [f"failed: {f}" for f in self.failed]
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS, timeout=PAGE_TIMEOUT_MS
        )
        yield browser
        browser.close()


def _open(browser: Browser, url: str) -> tuple[Page, PageLog]:
    log = PageLog()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

    def guard(route: Route) -> None:
        url = route.request.url
        log.requested.append(url)
        scheme = urlsplit(url).scheme
        if scheme in ("data", "blob") or urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            log.offsite.append(url)
            route.abort("blockedbyclient")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            log.console_errors.append(message.text)

    def on_failed(request: Request) -> None:
        if urlsplit(request.url).hostname in LOCAL_HOSTS:
            log.failed.append(f"{request.url}: {request.failure}")

    def on_response(response: object) -> None:
        status = response.status  # type: ignore[attr-defined]
        if status >= 400:
            log.failed.append(f"{response.url}: HTTP {status}")  # type: ignore[attr-defined]

    context.route("**/*", guard)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: log.console_errors.append(f"uncaught: {exc}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    page.goto(url, wait_until="load")
    return page, log


def _screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def test_swagger_ui_shows_every_operation_with_local_assets_only(
    browser: Browser, make_server: MakeServer
) -> None:
    started = time.monotonic()
    server, _ = make_server()
    page, log = _open(browser, f"{server.url}/swagger/")
    page.wait_for_selector(".swagger-ui .information-container h2.title")
    page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {len(OPERATIONS)}")
    assert "kasp" in page.inner_text(".information-container h2.title")
    shown = page.eval_on_selector_all(
        ".opblock",
        "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent.toLowerCase(),"
        " b.querySelector('.opblock-summary-path').getAttribute('data-path')])",
    )
    assert {tuple(x) for x in shown} == set(OPERATIONS)
    assert not page.query_selector(".errors-wrapper"), page.inner_text(".errors-wrapper")
    _screenshot(page, "swagger-ui.png")
    page.click("#operations-jobs-post_enqueue .opblock-summary")  # the schemas render too
    page.wait_for_selector("#operations-jobs-post_enqueue .opblock-body .responses-table")
    assert "max_retries" in page.inner_text("#operations-jobs-post_enqueue .opblock-body")
    stats = "#operations-operations-get_stats"  # "Try it out" reaches the server from the page
    page.click(f"{stats} .opblock-summary")
    page.click(f"{stats} button.try-out__btn")
    page.click(f"{stats} button.execute")
    page.wait_for_selector(f"{stats} .live-responses-table tr.response .response-col_status")
    assert page.inner_text(f"{stats} .live-responses-table tr.response .response-col_status").strip() == "200"
    assert '"accepting": true' in page.inner_text(
        f"{stats} .live-responses-table tr.response .response-col_description"
    )
    page.locator(stats).screenshot(path=str(ARTIFACTS / "swagger-ui-try-it-out.png"))
    page.context.close()
    assert log.problems() == []
    assert f"{server.url}/openapi.json" in log.requested
    print(f"swagger page checked in {time.monotonic() - started:.2f} s")


def test_docs_page_shows_the_state_diagram_with_local_assets_only(
    browser: Browser, make_server: MakeServer
) -> None:
    started = time.monotonic()
    server, _ = make_server()
    page, log = _open(browser, f"{server.url}/docs/")
    diagram = page.wait_for_selector("img[src='state-diagram.svg']")
    assert diagram is not None
    page.wait_for_function("document.querySelector(\"img[src='state-diagram.svg']\").complete")
    width, height = page.eval_on_selector(
        "img[src='state-diagram.svg']", "img => [img.naturalWidth, img.naturalHeight]"
    )
    assert width > 200 and height > 50, (width, height)
    assert page.inner_text("h1") == "kasp documentation"
    assert page.eval_on_selector("link[rel=stylesheet]", "l => l.sheet.cssRules.length") > 5
    headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
    assert {"Configuration", "State diagram", "Event catalogue", "HTTP API"} <= set(headings)
    _screenshot(page, "docs.png")
    diagram.screenshot(path=str(ARTIFACTS / "docs-state-diagram.png"))
    page.context.close()
    assert log.problems() == []
    assert f"{server.url}/docs/state-diagram.svg" in log.requested
    print(f"docs page checked in {time.monotonic() - started:.2f} s")
