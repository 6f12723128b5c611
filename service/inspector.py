"""kasp's commands for Sanic's Inspector: `sanic inspect kasp_stats|kasp_retry_failed|kasp_drain`.

Sanic runs the Inspector in a process of its own, beside the worker (only
under its worker manager: not with --single-process). So these commands reach
the service the way any client does, over HTTP with the configured token,
never by sharing the worker's memory: the store's projection stays the one
truth, and the access rules of service/http/access.py apply to them too.
The Inspector listens on 127.0.0.1 only, and its API key is API_TOKEN when set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sanic.worker.inspector import Inspector

from service.config import Config
from service.parts import App

log = logging.getLogger("kasp")

INSPECTOR_HOST = "127.0.0.1"  # the Inspector can reload and stop the service: never off the machine
HTTP_TIMEOUT_S = 30.0  # a guess: longer than any one kasp request takes
FAILED_PAGE = 1000  # GET /jobs?limit= maximum


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """Where the worker serves, and the tokens a client of it needs."""

    url: str
    api_token: str
    read_token: str


class KaspInspector(Inspector):
    #: set in the main process before Sanic builds the Inspector (main_process_start);
    #: the instance keeps a copy, which is what reaches the Inspector's own process
    address: ServiceAddress | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = type(self).address

    def kasp_stats(self) -> Any:
        """The counters of GET /stats."""
        return self._call("GET", "/stats", acting=False)

    async def kasp_retry_failed(self) -> dict[str, Any]:
        """Requeue every failed job (POST /jobs/{id}/retry for each, paging GET /jobs?state=failed)."""
        return await asyncio.to_thread(self._retry_failed)

    async def kasp_drain(self) -> Any:
        """Stop taking new work, as SIGTERM does, without exiting (POST /drain)."""
        return await asyncio.to_thread(self._call, "POST", "/drain", acting=True)

    def _retry_failed(self) -> dict[str, Any]:
        requeued: list[str] = []
        refused: dict[str, str] = {}
        cursor = ""
        while True:
            page = self._call("GET", f"/jobs?state=failed&limit={FAILED_PAGE}&cursor={cursor}", acting=False)
            for job in page["jobs"]:
                try:
                    self._call("POST", f"/jobs/{quote(job['id'], safe=':@~-_.')}/retry", acting=True)
                    requeued.append(job["id"])
                except ServiceError as exc:  # e.g. retried by someone else meanwhile: 409
                    refused[job["id"]] = str(exc)
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        return {"requeued": len(requeued), "refused": refused}

    def _call(self, method: str, path: str, *, acting: bool) -> Any:
        service = self.service
        if service is None:
            raise ServiceError("the Inspector does not know where kasp serves (started without create_app?)")
        token = service.api_token if acting or not service.read_token else service.read_token
        token = token or service.api_token
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(service.url + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise ServiceError(f"{method} {path}: HTTP {exc.code} {body}") from None


class ServiceError(Exception):
    """kasp answered an Inspector command's request with an error."""


def configure(app: App, config: Config) -> None:
    """Turn Sanic's Inspector on (INSPECTOR=1) with kasp's commands; off by default."""
    if not config.inspector:
        return
    app.config.INSPECTOR = True
    app.config.INSPECTOR_HOST = INSPECTOR_HOST
    app.config.INSPECTOR_PORT = config.inspector_port
    app.config.INSPECTOR_API_KEY = config.api_token
    app.main_process_start(_locate_service)
    app.before_server_start(_warn_if_single_process)


def _locate_service(app: App) -> None:
    config: Config = app.ctx.config
    host = app.state.host or config.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # listening everywhere: reach it on loopback
    if ":" in host:
        host = f"[{host}]"
    KaspInspector.address = ServiceAddress(
        url=f"http://{host}:{app.state.port or config.port}",
        api_token=config.api_token,
        read_token=config.read_token,
    )


def _warn_if_single_process(app: App) -> None:
    if not os.environ.get("SANIC_WORKER_PROCESS"):  # Sanic sets it in the manager's workers only
        log.warning(
            "INSPECTOR=1 has no effect with --single-process: Sanic runs its Inspector only under the "
            "worker manager (start without --single-process)",
            extra={"action": "inspector_single_process"},
        )
