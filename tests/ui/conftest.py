"""The dashboard in a real headless Chromium (Debian's), as tests/docs/test_browser.py drives it.

Every page is watched: a request that leaves localhost is aborted and fails the
test, and so does a console error, an uncaught exception, a failed request or a
4xx/5xx answer, unless the test says it expects that exact answer (a refused
action, a wrong token). Screenshots of every page go to test-artifacts/ui/.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, Response, Route

from tests.conftest import PG_ADMIN_DSN
from tests.docs.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, LOCAL_HOSTS, PAGE_TIMEOUT_MS
from tests.support.server import RunningServer

UI_ARTIFACTS = ARTIFACTS / "ui"
STREAM_PATH = "/events/stream"

T = TypeVar("T")
MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


@dataclass
class Watch:
    """What the pages of one browser context did that a person would notice."""

    offsite: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: (status, path) answers the test expects, e.g. (403, "/jobs/x/retry")
    expected: set[tuple[int, str]] = field(default_factory=set)

    def expect(self, status: int, path: str) -> None:
        self.expected.add((status, path))

    def problems(self) -> list[str]:
        # Chromium reports every 4xx as "Failed to load resource": expected ones are not problems.
        errors = [
            m
            for m in self.console_errors
            if not (self.expected and "Failed to load resource" in m and _status_in(m, self.expected))
        ]
        return (
            [f"left localhost: {u}" for u in self.offsite]
            + [f"console error: {m}" for m in errors]
            + [f"failed: {f}" for f in self.failed]
        )


def _status_in(message: str, expected: set[tuple[int, str]]) -> bool:
    return any(f"status of {status}" in message for status, _ in expected)


def _run_outside_playwright(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread: Playwright's sync API keeps a loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """tests/conftest.py's database, created and dropped outside Playwright's loop."""
    from tests.support.postgres import create_database, drop_database, dsn_for

    name = f"kasp_ui_test_{uuid.uuid4().hex[:12]}"
    _run_outside_playwright(create_database(PG_ADMIN_DSN, name))
    yield dsn_for(PG_ADMIN_DSN, name)
    _run_outside_playwright(drop_database(PG_ADMIN_DSN, name))


@pytest.fixture
def fresh_pg(pg_dsn: str) -> str:
    from tests.support.postgres import drop_schema

    _run_outside_playwright(drop_schema(pg_dsn))
    return pg_dsn


# Package scope, not session: Playwright's sync API runs an event loop in this thread until
# it is stopped, and tests/docs/test_browser.py starts its own. Torn down when tests/ui ends,
# the two never overlap, in whatever order the packages run (`pytest tests/ui tests/docs`).
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS, timeout=PAGE_TIMEOUT_MS
        )
        yield launched
        launched.close()


class Dashboard:
    """Opens watched browser contexts on one kasp server; closes them before the server stops."""

    def __init__(self, browser: Browser) -> None:
        self._browser = browser
        self._contexts: list[tuple[BrowserContext, Watch]] = []

    def context(
        self, *, width: int = 1280, height: int = 900, color_scheme: str = "light"
    ) -> tuple[BrowserContext, Watch]:
        watch = Watch()
        context = self._browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme=color_scheme,  # type: ignore[arg-type]
            service_workers="block",
            timezone_id="Europe/Berlin",  # not UTC, so a local time differs from the UTC value
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)

        def guard(route: Route) -> None:
            url = route.request.url
            if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in LOCAL_HOSTS:
                route.continue_()
            else:
                watch.offsite.append(url)
                route.abort("blockedbyclient")

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                watch.console_errors.append(message.text)

        def on_failed(request: Request) -> None:
            parts = urlsplit(request.url)
            background = parts.path == STREAM_PATH or request.headers.get("hx-request") == "true"
            if background and "ERR_ABORTED" in (request.failure or ""):
                return  # leaving a page ends its event stream and cancels a fragment refresh in flight
            if parts.hostname in LOCAL_HOSTS:
                watch.failed.append(f"{request.url}: {request.failure}")

        def on_response(response: Response) -> None:
            path = urlsplit(response.url).path
            if response.status >= 400 and (response.status, path) not in watch.expected:
                watch.failed.append(f"{response.url}: HTTP {response.status}")

        context.route("**/*", guard)
        context.on("console", on_console)
        context.on("weberror", lambda error: watch.console_errors.append(f"uncaught: {error.error}"))
        context.on("requestfailed", on_failed)
        context.on("response", on_response)
        self._contexts.append((context, watch))
        return context, watch

    def page(self, url: str, **options: object) -> tuple[Page, Watch]:
        context, watch = self.context(**options)  # type: ignore[arg-type]
        page = context.new_page()
        page.goto(url, wait_until="load")
        return page, watch

    def close(self) -> list[str]:
        problems = []
        for context, watch in self._contexts:
            context.close()
            problems.extend(watch.problems())
        self._contexts.clear()
        return problems


@pytest.fixture
def dashboard(browser: Browser, make_server: MakeServer) -> Iterator[Dashboard]:
    """Depends on make_server so its contexts close before the servers stop."""
    board = Dashboard(browser)
    yield board
    problems = board.close()
    assert problems == [], problems


def screenshot(page: Page, name: str) -> Path:
    UI_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = UI_ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000, f"{path} looks empty"
    return path


def live(page: Page) -> None:
    """Wait until the page's event stream is open."""
    page.wait_for_selector("#live[data-state='open']")
