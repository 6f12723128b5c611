from __future__ import annotations

import random

import pytest

from domain.backoff import Backoff

POLICY = Backoff(base_ms=100, max_ms=10_000)


class Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("retry", "ceiling"), [(1, 100), (2, 200), (3, 400), (7, 6400), (8, 10_000), (100, 10_000)]
)
def test_the_envelope_doubles_from_base_up_to_max(retry: int, ceiling: int) -> None:
    assert POLICY.ceiling_ms(retry) == ceiling


def test_full_jitter_spans_zero_to_the_envelope() -> None:
    assert POLICY.delay_ms(3, Fixed(0.0)) == 0
    assert POLICY.delay_ms(3, Fixed(0.5)) == 200
    assert POLICY.delay_ms(3, Fixed(0.999999)) == 399


def test_delays_stay_inside_the_envelope_and_spread_out() -> None:
    rng = random.Random(1)
    delays = [POLICY.delay_ms(4, rng) for _ in range(2000)]
    assert all(0 <= d < 800 for d in delays)
    assert min(delays) < 80 and max(delays) > 720  # uniform, not clustered at the top
    assert 330 < sum(delays) / len(delays) < 470


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        POLICY.ceiling_ms(0)
