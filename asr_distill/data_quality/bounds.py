"""A closed numeric range, the one form in which a data-quality bound is written down."""

from __future__ import annotations

from typing import NamedTuple


class Bounds(NamedTuple):
    """``min <= value <= max`` (both inclusive)."""

    min: int | float
    max: int | float

    def contains(self, value: int | float) -> bool:
        return self.min <= value <= self.max

    def __str__(self) -> str:
        return f"[{self.min:,}, {self.max:,}]"
