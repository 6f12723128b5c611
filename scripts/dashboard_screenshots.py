"""Regenerate docs/dashboard-overview.png and docs/dashboard-job.png (the README's pictures).

Runs kasp in-process with the simulated processor (ERROR_RATE=30, 50-400 ms
attempts), keeps a trickle of jobs coming for a while, and photographs the
overview and the page of a job that needed retries, in headless Chromium.

    .venv/bin/python scripts/dashboard_screenshots.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.config import Config  # noqa: E402
from tests.docs.test_browser import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402
from tests.support.server import RunningServer, wait_until  # noqa: E402


def main() -> None:
    config = Config(
        workers=4, error_rate=30, work_min_ms=50, work_max_ms=400, backoff_base_ms=500, log_level="WARNING"
    )
    server = RunningServer(config).start()
    client = httpx.Client(base_url=server.url)
    stop = threading.Event()

    def trickle() -> None:
        i = 0
        while not stop.is_set():
            client.post("/enqueue", json={"id": f"report-{i:04d}", "payload": f"page {i}", "max_retries": 3})
            i += 1
            time.sleep(0.08)

    feeder = threading.Thread(target=trickle, daemon=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
            )
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{server.url}/ui/")
            page.wait_for_selector("#live[data-state='open']")
            feeder.start()
            time.sleep(25)  # let the chart and the feed fill
            page.screenshot(path=str(ROOT / "docs" / "dashboard-overview.png"), full_page=True)
            retried = wait_until(
                lambda: next(
                    (j["id"] for j in client.get("/jobs?limit=1000").json()["jobs"] if j["attempts"] >= 3),
                    None,
                ),
                timeout=30,
            )
            page.goto(f"{server.url}/ui/jobs/{retried}")
            page.wait_for_selector("#live[data-state='open']")
            page.screenshot(path=str(ROOT / "docs" / "dashboard-job.png"), full_page=True)
            browser.close()
    finally:
        stop.set()
        client.close()
        server.stop()


if __name__ == "__main__":
    main()
