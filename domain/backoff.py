"""Retry delay policy: exponential envelope with full jitter (SPEC.md, Jobs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RandomSource(Protocol):
    """Anything with `random() -> float` in [0, 1): `random.Random`, or a fixed stub in tests."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    base_ms: int
    max_ms: int

    def ceiling_ms(self, retry: int) -> int:
        """The envelope before retry `retry` (1 for the first): min(max, base * 2^(retry-1))."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, got {retry}")
        return min(self.max_ms, self.base_ms << (retry - 1))

    def delay_ms(self, retry: int, rng: RandomSource) -> int:
        """Full jitter: uniform(0, ceiling), so retries of many jobs spread out instead of colliding."""
        return int(self.ceiling_ms(retry) * rng.random())
