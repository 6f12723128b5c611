"""Run kasp as a user does: the Sanic CLI in a subprocess, signalled for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.service_process import SINGLE, ServiceProcess

#: Fast work and a deterministic processor; everything else at the service's own defaults
#: (LOG_LEVEL=INFO included: these tests read the lifecycle log).
DEFAULTS = {
    "WORK_MIN_MS": "1",
    "WORK_MAX_MS": "3",
    "ERROR_RATE": "0",
    "PROCESSOR": "tests.support.processors:scripted",
}


@pytest.fixture
def start_service(
    request: pytest.FixtureRequest, tmp_path: Path, store_url: str
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start kasp on the test's store (each start of one test shares it: a restart resumes)."""
    services: list[ServiceProcess] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = SINGLE) -> ServiceProcess:
        # HOST/PORT from the environment: this also proves the plain Sanic CLI listens
        # where kasp's configuration says.
        service = ServiceProcess(
            {"STORE": store_url, **(env or {})},
            tmp_path / f"kasp-{len(services)}.log",
            args,
            defaults=DEFAULTS,
            address_from_env=True,
        )
        services.append(service)
        return service

    yield start
    for service in services:
        service.close()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        # A failed signal test is only diagnosable with what the service said: show its log.
        for service in services:
            print(f"--- {service.log_path.name} ---\n{service.log()}")
