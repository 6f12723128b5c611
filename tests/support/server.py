"""A real kasp server on a free port, run in a background thread with its own loop.

Unlike sanic-testing's clients, the loop runs all the time, so the worker pool
makes progress between requests exactly as in production.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from sanic import Sanic

from service.app import create_app
from service.config import Config

FAST = {
    "work_min_ms": 1,
    "work_max_ms": 3,
    "error_rate": 0,
    "backoff_base_ms": 5,
    "backoff_max_ms": 20,
    "shutdown_timeout": 5.0,
    "log_level": "WARNING",
}


class RunningServer:
    def __init__(self, config: Config) -> None:
        self.app: Sanic = create_app(config=config)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1024)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kasp-test-server", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await self.app.create_server(sock=self._sock, return_asyncio_server=True, access_log=False)
        assert server is not None
        await server.startup()
        await server.before_start()
        await server.after_start()
        self._server = server
        self._stop_requested = asyncio.Event()
        self._started.set()
        await server.start_serving()
        await self._stop_requested.wait()
        await server.before_stop()
        server.close()
        await server.wait_closed()
        for connection in list(server.connections):
            connection.close_if_idle()
        await server.after_stop()
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def start(self) -> RunningServer:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the test server did not start within 10 s")
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` (sync or returning an awaitable) on the server's loop and return its result."""

        async def runner() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(30)

    def begin_shutdown(self) -> Any:
        """Start the server's before_server_stop drain, as a signal would; returns a future."""
        return asyncio.run_coroutine_threadsafe(self._server.before_stop(), self._loop)

    def stop(self) -> None:
        """Run the whole shutdown (before_server_stop, close, after_server_stop) and wait for it."""
        if self._server is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("the test server did not stop within 30 s")
        self._loop.close()
        Sanic.unregister_app(self.app)


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = 10.0,
    interval: float = 0.005,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds,
    saying what `describe` returns then (what was seen instead), if given."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            seen = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"condition not met within {timeout} s: {predicate}{seen}")
        time.sleep(interval)


def job_state(client: httpx.Client, job_id: str) -> str:
    return client.get(f"/jobs/{job_id}").json()["state"]
