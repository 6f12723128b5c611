"""The dashboard's main flow on every store: enqueue from the form, watch the job finish live."""

from __future__ import annotations

import os

import pytest

from tests.conftest import STORES, store_url_for
from tests.ui.conftest import Dashboard, MakeServer, live, screenshot


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    return store_url_for(request, tmp_path)


def test_a_job_enqueued_from_the_form_reaches_done_live_on_its_page_and_the_overview(
    dashboard: Dashboard, make_server: MakeServer, store_url: str
) -> None:
    server, client = make_server()
    store = store_url.split(":", 1)[0]
    overview, _ = dashboard.page(f"{server.url}/")
    assert overview.url == f"{server.url}/ui/"  # GET / leads to the dashboard
    live(overview)
    overview.evaluate("window.kaspSamePage = true")  # gone if the page ever reloads
    assert overview.inner_text("[data-count=done]") == "0"

    page, _ = dashboard.page(f"{server.url}/ui/enqueue")
    page.fill("input[name=id]", "from-the-form")
    page.fill("textarea[name=payload]", "sleep=3")  # long enough to see it running first
    page.fill("input[name=max_retries]", "2")
    screenshot(page, f"enqueue-{store}.png")
    page.click("button[type=submit]")
    page.wait_for_selector("#flash.ok")
    assert "from-the-form accepted" in page.inner_text("#flash")
    page.click("#flash a")
    page.wait_for_url("**/ui/jobs/from-the-form")
    live(page)
    assert page.get_attribute("#job-panel", "data-state") in ("queued", "running")
    page.wait_for_selector("#job-panel[data-state=done]")
    # htmx keeps the old node classes for its settle delay (20 ms) after a swap: wait it out
    page.wait_for_selector("#job-panel[data-state=done] .diagram .node.current[data-state=done]")
    assert page.locator("#job-panel .diagram .node.current").count() == 1
    timeline = page.inner_text("#job-panel[data-state=done] .timeline")
    assert "enqueued" in timeline and "started" in timeline and "succeeded" in timeline
    assert client.get("/jobs/from-the-form").json()["state"] == "done"
    screenshot(page, f"job-{store}.png")

    overview.wait_for_function("document.querySelector('[data-count=done]').textContent === '1'")
    assert overview.evaluate("window.kaspSamePage") is True
    assert "succeeded" in overview.inner_text("#feed")
    screenshot(overview, f"overview-{store}.png")
