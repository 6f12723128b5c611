"""`value_type`: how the domain declares its immutable records (Event, JobView).

Type checkers see a frozen dataclass: assigning to a field is a type error
(mypy runs on `domain/`). At run time the class is a plain slots dataclass,
hashable by value. The reason is speed: a frozen dataclass's `__init__` sets
every field through `object.__setattr__`, ~5x slower than a plain one
(1.47 µs vs 0.27 µs for 9 fields on the bench machine). kasp builds six such
records per job on its hot path (three events, three views), and that was
28% of the no-HTTP engine benchmark (docs/PERFORMANCE.md). Nothing in kasp
assigns to them, and the static check keeps it so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def value_type(cls: type[T]) -> type[T]:
    return dataclass(slots=True, unsafe_hash=True)(cls)
