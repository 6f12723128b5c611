"""The dashboard's other pages, on the memory store only: they exercise pages, not stores (the
store paths they read are the API's, covered on every store by tests/api and tests/access)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from service.ui import routes
from tests.support.server import wait_until
from tests.ui.conftest import Dashboard, MakeServer, live, screenshot

API = "ui-api-token"
READ = "ui-read-token"


def enqueue(client: httpx.Client, job_id: str, payload: str = "ok", **extra: object) -> None:
    response = client.post("/enqueue", json={"id": job_id, "payload": payload, **extra})
    assert response.status_code == 202, response.text


def event_types(client: httpx.Client, job_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/jobs/{job_id}/events").json()["events"]]


def test_a_failure_shows_on_failures_and_retry_shows_the_new_attempts_live(
    dashboard: Dashboard, make_server: MakeServer
) -> None:
    server, client = make_server(processor=None, error_rate=100, work_min_ms=50, work_max_ms=80)
    empty, _ = dashboard.page(f"{server.url}/ui/failures")
    assert empty.inner_text("#failures .empty") == "No failed jobs."
    screenshot(empty, "failures-empty.png")
    live(empty)
    enqueue(client, "doomed", max_retries=1)
    # the page learns of it over the stream, without a reload
    empty.wait_for_selector("#failures .group")
    group = empty.inner_text("#failures .group h2")
    assert "simulated failure" in group and "1" in group
    assert "doomed" in empty.inner_text("#failures .group")
    screenshot(empty, "failures.png")

    page, _ = dashboard.page(f"{server.url}/ui/jobs/doomed")
    live(page)
    assert page.locator(".timeline li").count() == 5  # enqueued, 2 x (started, outcome)
    assert "error: simulated failure" in page.inner_text(".timeline")
    assert "reason: error" in page.inner_text(".timeline") or "retry in" in page.inner_text(".timeline")
    page.click("button[data-action=retry][data-job='doomed']")
    page.wait_for_selector("#flash.ok")
    page.wait_for_function("document.querySelectorAll('.timeline li').length >= 10")
    page.wait_for_selector("#job-panel[data-state=failed]")
    assert event_types(client, "doomed")[5:] == [
        "requeued",
        "started",
        "retry_scheduled",
        "started",
        "failed",
    ]
    screenshot(page, "job-failed.png")
    empty.wait_for_function(
        "document.querySelector('#failures .failed-jobs li .meta').textContent.startsWith('4 attempts')"
    )


def test_cancel_a_running_job_from_its_page_and_a_queued_one_from_the_table_live(
    dashboard: Dashboard, make_server: MakeServer
) -> None:
    server, client = make_server(workers=1)
    enqueue(client, "long", "forever")  # holds the one worker until its attempt is cut
    enqueue(client, "behind")  # queued behind it
    wait_until(lambda: client.get("/jobs/long").json()["state"] == "running")
    page, _ = dashboard.page(f"{server.url}/ui/jobs/long")
    live(page)
    page.evaluate("window.kaspNotReloaded = true")
    assert page.locator("button[data-action=retry]").count() == 0
    page.click("button[data-action=cancel][data-job='long']")
    page.wait_for_selector("#flash.ok")
    assert "being cancelled" in page.inner_text("#flash")
    # the attempt is cut and the page follows over the stream, without a reload
    page.wait_for_selector("#job-panel[data-state=cancelled]")
    page.wait_for_selector(".timeline li.type-cancelled")
    assert page.evaluate("window.kaspNotReloaded") is True
    assert "running → cancelled" in page.inner_text(".timeline li.type-cancelled")
    assert page.locator("button[data-action=cancel]").count() == 0
    assert page.locator("button[data-action=retry][data-job='long']").count() == 1  # retry takes it
    assert event_types(client, "long") == ["enqueued", "started", "cancelled"]
    screenshot(page, "job-cancelled.png")

    # "behind" ran once the worker was free; a queued job is cancelled at once (200)
    wait_until(lambda: client.get("/jobs/behind").json()["state"] == "done")
    enqueue(client, "blocker", "forever")
    wait_until(lambda: client.get("/jobs/blocker").json()["state"] == "running")
    enqueue(client, "waiting")
    table, _ = dashboard.page(f"{server.url}/ui/jobs?state=queued")
    live(table)
    table.click("button[data-action=cancel][data-job='waiting']")
    table.wait_for_selector("#flash.ok")
    assert table.inner_text("#flash") == "job waiting is cancelled"
    table.wait_for_selector("#jobs-table .empty")  # it left the queued filter, live
    assert client.get("/jobs/waiting").json()["state"] == "cancelled"
    assert client.post("/jobs/blocker/cancel").status_code == 202


def test_jobs_filter_by_state_search_by_id_and_page_through_2500(
    dashboard: Dashboard, make_server: MakeServer
) -> None:
    server, client = make_server(queue_size=5000, workers=8)
    for first in range(0, 2500, 500):  # by batch: the table is under test, not 2,500 round trips
        jobs = [
            {"id": f"job-{i:04d}", "payload": "fail" if i % 10 == 0 else "ok"}
            for i in range(first, first + 500)
        ]
        response = client.post("/enqueue/batch", json={"jobs": jobs})
        assert response.status_code == 200 and all(r["status"] == 202 for r in response.json()["results"]), (
            response.text
        )
    wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == 2250, timeout=60)
    wait_until(lambda: client.get("/stats").json()["jobs"]["failed"] == 250, timeout=30)

    page, _ = dashboard.page(f"{server.url}/ui/jobs")
    screenshot(page, "jobs.png")
    seen: list[str] = []
    pages = 0
    while True:
        ids = page.eval_on_selector_all(
            "#jobs-table tbody tr td:first-child a", "as => as.map(a => a.textContent)"
        )
        seen.extend(ids)
        pages += 1
        following = page.locator("#jobs-table a[rel=next]")
        if following.count() == 0:
            break
        last = ids[-1]
        following.click()
        page.wait_for_function(
            "last => !Array.from(document.querySelectorAll('#jobs-table tbody tr td:first-child a'))"
            ".some(a => a.textContent === last)",
            arg=last,
        )
    assert seen == [f"job-{i:04d}" for i in range(2500)]
    assert pages == 50
    assert re.search(r"cursor=\d+", page.url), "paging is in the URL (back and reload work)"

    page.goto(f"{server.url}/ui/jobs")
    page.select_option("select[name=state]", "failed")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**/ui/jobs?state=failed*")
    page.wait_for_function("document.querySelector('#jobs-table caption').textContent.startsWith('failed')")
    states = page.eval_on_selector_all("#jobs-table tbody .badge", "bs => bs.map(b => b.textContent)")
    assert len(states) == 50 and set(states) == {"failed"}
    screenshot(page, "jobs-failed.png")

    page.fill("input[name=q]", "job-1234")
    page.click(".filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#jobs-table tbody tr').length === 1")
    assert page.inner_text("#jobs-table tbody tr td:first-child") == "job-1234"
    page.fill("input[name=q]", "no-such-job")
    page.click(".filters button[type=submit]")
    page.wait_for_selector("#jobs-table .empty")
    assert "no-such-job" in page.inner_text("#jobs-table .empty")


def test_tokens_login_wrong_token_read_only_and_the_api_token(
    dashboard: Dashboard, make_server: MakeServer
) -> None:
    server, client = make_server(api_token=API, read_token=READ)
    auth = {"Authorization": f"Bearer {API}"}
    assert client.post("/enqueue", json={"id": "broken", "payload": "fail"}, headers=auth).status_code == 202
    wait_until(lambda: client.get("/jobs/broken", headers=auth).json()["state"] == "failed")
    assert client.post("/enqueue", json={"id": "long", "payload": "forever"}, headers=auth).status_code == 202
    wait_until(lambda: client.get("/jobs/long", headers=auth).json()["state"] == "running")

    page, watch = dashboard.page(f"{server.url}/ui/failures")
    assert "/ui/login" in page.url and page.inner_text("h1") == "Sign in"  # no token: the login
    screenshot(page, "login.png")
    watch.expect(401, "/ui/login")
    page.fill("input[name=token]", "not-the-token")
    page.click("form.login button[type=submit]")
    assert page.inner_text("[role=alert]") == "that token is not valid"

    page.fill("input[name=token]", READ)
    page.click("form.login button[type=submit]")
    page.wait_for_url("**/ui/failures")
    assert page.inner_text(".badge.readonly") == "read-only"
    cookie = next(c for c in page.context.cookies() if c["name"] == "kasp_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the token
    assert READ not in page.url
    live(page)  # the event stream takes the cookie
    watch.expect(403, "/jobs/broken/retry")
    page.click("button[data-action=retry][data-job='broken']")  # the button is there: the server must refuse
    page.wait_for_selector("#flash.refused")
    assert "403" in page.inner_text("#flash") and "read token" in page.inner_text("#flash")
    assert event_types_with(client, "broken", auth)[-1] == "failed"
    screenshot(page, "failures-read-only.png")

    page.goto(f"{server.url}/ui/jobs/long")  # a running job: its Cancel is refused as well
    live(page)
    watch.expect(403, "/jobs/long/cancel")
    page.click("button[data-action=cancel][data-job='long']")
    page.wait_for_selector("#flash.refused")
    assert "403" in page.inner_text("#flash") and "cancel of long" in page.inner_text("#flash")
    assert client.get("/jobs/long", headers=auth).json()["state"] == "running"
    assert event_types_with(client, "long", auth) == ["enqueued", "started"]

    page.click("form.session button[type=submit]")  # sign out, then in with the API token
    page.wait_for_url("**/ui/login")
    page.fill("input[name=token]", API)
    page.click("form.login button[type=submit]")
    page.wait_for_url("**/ui/")
    page.goto(f"{server.url}/ui/failures")
    page.click("button[data-action=retry][data-job='broken']")
    page.wait_for_selector("#flash.ok")
    wait_until(lambda: "requeued" in event_types_with(client, "broken", auth))
    assert client.post("/jobs/long/cancel", headers=auth).status_code == 202


def event_types_with(client: httpx.Client, job_id: str, headers: dict[str, str]) -> list[str]:
    return [e["type"] for e in client.get(f"/jobs/{job_id}/events", headers=headers).json()["events"]]


def test_keyboard_only_reaches_a_failed_job_s_retry_and_presses_it(
    dashboard: Dashboard, make_server: MakeServer
) -> None:
    server, client = make_server()
    enqueue(client, "first-ok")
    enqueue(client, "keyboard", "fail")
    wait_until(lambda: client.get("/jobs/keyboard").json()["state"] == "failed")
    page, _ = dashboard.page(f"{server.url}/ui/failures")
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate("[document.activeElement.dataset.action, document.activeElement.dataset.job]")
        if focused == ["retry", "keyboard"]:
            break
    else:
        raise AssertionError("Tab never reached the Retry button of the failed job")
    page.keyboard.press("Enter")
    page.wait_for_selector("#flash.ok")
    wait_until(lambda: "requeued" in event_types(client, "keyboard"))


def test_every_page_reads_on_a_phone_and_in_the_dark_with_local_times(
    dashboard: Dashboard, make_server: MakeServer
) -> None:
    server, client = make_server()
    enqueue(client, "phone-ok")
    # Scheduled ten minutes ahead: queued with next_attempt_at for the whole test, so its
    # countdown is there to read (a retry's full-jitter delay can be short enough to be over).
    enqueue(client, "phone-waits", delay_ms=600_000)
    assert client.get("/jobs/phone-waits").json()["next_attempt_at"]
    context, _ = dashboard.context(width=375, height=740, color_scheme="dark")
    page = context.new_page()
    for path, name in [
        ("/ui/", "overview"),
        ("/ui/jobs", "jobs"),
        ("/ui/jobs/phone-waits", "job"),
        ("/ui/failures", "failures"),
        ("/ui/enqueue", "enqueue"),
    ]:
        page.goto(f"{server.url}{path}")
        live(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide on a 375-px phone"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(18, 19, 22)", f"{path}: not the dark scheme ({background})"
        screenshot(page, f"phone-dark-{name}.png")
    time = page.locator("time").first if page.locator("time").count() else None
    page.goto(f"{server.url}/ui/jobs/phone-waits")
    time = page.locator(".fields time").first
    utc = time.get_attribute("datetime")
    assert time.get_attribute("title") == f"{utc} (UTC)"
    assert time.inner_text() != utc  # shown in the browser's zone (Europe/Berlin here)
    countdown = page.locator(".countdown").first
    first = countdown.inner_text()
    assert re.fullmatch(r"\(in \d+\.\d s\)", first), first
    page.wait_for_function("t => document.querySelector('.countdown').textContent !== t", arg=first)


def test_the_overview_counters_follow_a_burst_from_the_events_alone(
    dashboard: Dashboard, make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No /stats re-read while the test runs: the page's numbers must come from the events.
    monkeypatch.setattr(routes, "RESYNC_MS", 600_000)
    server, client = make_server(queue_size=1000, workers=4, backoff_base_ms=20, backoff_max_ms=50)
    enqueue(client, "before")  # in the snapshot the page is rendered with
    wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == 1)
    page, _ = dashboard.page(f"{server.url}/ui/")
    live(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    # done, failed, and failed once then done: its retry delay makes it delayed, then due
    # with no event, then started
    for i in range(300):
        enqueue(client, f"burst-{i}", ("ok", "fail", "fail,ok")[i % 3], max_retries=1)

    def settled() -> dict[str, Any] | None:
        s: dict[str, Any] = client.get("/stats").json()
        finished = s["jobs"]["done"] + s["jobs"]["failed"] == 301
        return s if finished and s["queue"]["depth"] == s["queue"]["delayed"] == 0 else None

    stats = wait_until(settled, timeout=60)
    expected = {**stats["jobs"], **stats["queue"], "busy": stats["workers"]["busy"]}
    expected.pop("capacity")
    shown = """() => Object.fromEntries([...document.querySelectorAll('[data-count],[data-gauge]')]
                 .map(d => [d.dataset.count || d.dataset.gauge, d.textContent]))"""

    def caught_up() -> bool:
        on_page = page.evaluate(shown)
        return all(on_page.get(name) == str(value) for name, value in expected.items())

    # A starved browser (a loaded 2-core machine) can take seconds to apply ~1,300 events; a
    # counter that drifted never matches, and the message shows which one.
    wait_until(
        caught_up, timeout=30, interval=0.2, describe=lambda: f"page {page.evaluate(shown)} vs {expected}"
    )
    assert page.inner_text("[data-count=done]") == "201" and page.inner_text("[data-count=failed]") == "100"
    assert requests == [], "the counters cost the server no request: no fragment, no /stats"
    screenshot(page, "overview-after-burst.png")
