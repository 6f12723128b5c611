from __future__ import annotations

import asyncio

import pytest

from domain.processor import Attempt, SimulatedFailure, SimulatedProcessor

ATTEMPT = Attempt(job_id="a", payload="p", attempt=1, max_retries=0)


class Sequence:
    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def run(processor: SimulatedProcessor) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    processor._sleep = sleep
    asyncio.run(processor(ATTEMPT))
    return slept


def test_work_duration_is_uniform_between_min_and_max() -> None:
    assert run(SimulatedProcessor(min_ms=100, max_ms=500, error_rate=0, rng=Sequence(0.0, 0.9))) == [0.1]
    assert run(SimulatedProcessor(min_ms=100, max_ms=500, error_rate=0, rng=Sequence(0.5, 0.9))) == [
        pytest.approx(0.3)
    ]


def test_fails_error_rate_percent_of_attempts() -> None:
    with pytest.raises(SimulatedFailure, match="simulated failure"):
        run(SimulatedProcessor(min_ms=0, max_ms=0, error_rate=20, rng=Sequence(0.0, 0.19)))
    run(SimulatedProcessor(min_ms=0, max_ms=0, error_rate=20, rng=Sequence(0.0, 0.2)))


def test_error_rate_extremes() -> None:
    with pytest.raises(SimulatedFailure):
        run(SimulatedProcessor(min_ms=0, max_ms=0, error_rate=100, rng=Sequence(0.0, 0.9999)))
    run(SimulatedProcessor(min_ms=0, max_ms=0, error_rate=0, rng=Sequence(0.0, 0.0)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_ms": 5, "max_ms": 1, "error_rate": 0}, "min_ms"),
        ({"min_ms": 0, "max_ms": 1, "error_rate": 101}, "percentage"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimulatedProcessor(**kwargs)
