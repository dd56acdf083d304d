"""One check's per-partition findings combined into the result of a multi-partition run.

A check evaluates each partition of a run on its own (thresholds apply per partition, exactly as in one
run per partition: a rate over the union would let one bad prefix hide among good ones), then
:func:`combine` merges the findings: the worst status wins, counts add up, the failing partitions are
named in order (worst first), and the failing rows of every failing partition are kept, each with its
partition. With one partition the finding is that partition's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

Status = Literal["pass", "warn", "error"]
STATUS_ORDER: Mapping[str, int] = {"pass": 0, "warn": 1, "error": 2}

Row = TypeVar("Row")


@dataclass(frozen=True)
class Finding(Generic[Row]):
    """What one check found in one partition.

    ``rows`` are the failing rows (or problems) found, all of them or a sample; ``failures`` counts them
    all. ``metadata`` holds the partition's facts (counts, versions) for a per-partition table.
    """

    status: Status
    failures: int
    considered: int = 0
    message: str = ""
    rows: tuple[Row, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None  # the check could not be evaluated

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass(frozen=True)
class Combined(Generic[Row]):
    """The findings of every partition of a run, and what they add up to."""

    per_partition: tuple[tuple[str, Finding[Row]], ...]

    @property
    def partitions(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.per_partition)

    @property
    def failing(self) -> list[tuple[str, Finding[Row]]]:
        """Partitions that did not pass, worst status first, then in run order."""
        bad = [(p, f) for p, f in self.per_partition if not f.passed]
        return sorted(bad, key=lambda pf: -STATUS_ORDER[pf[1].status])

    @property
    def worst(self) -> tuple[str, Finding[Row]]:
        """The first partition with the worst status."""
        return max(self.per_partition, key=lambda pf: STATUS_ORDER[pf[1].status])

    @property
    def status(self) -> Status:
        return self.worst[1].status

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failures(self) -> int:
        return sum(f.failures for _, f in self.per_partition)

    @property
    def considered(self) -> int:
        return sum(f.considered for _, f in self.per_partition)

    @property
    def rows(self) -> list[tuple[str, Row]]:
        """Every failing row with its partition, the worst partitions first."""
        return [(p, row) for p, f in self.failing for row in f.rows]

    @property
    def message(self) -> str:
        bad = self.failing
        if not bad:
            return f"passed in all {len(self.per_partition)} partitions"
        return f"{len(bad)} of {len(self.per_partition)} partitions failing; " + "; ".join(
            f"{p}: {f.message}" for p, f in bad
        )

    @property
    def failing_summary(self) -> str:
        """``"p1 (error: 3), p2 (warn: 1)"``, or ``"none"``."""
        return ", ".join(f"{p} ({f.status}: {f.failures})" for p, f in self.failing) or "none"

    @property
    def problem(self) -> str | None:
        return next((f"{p}: {f.problem}" for p, f in self.failing if f.problem is not None), None)

    def totals(self) -> dict[str, int]:
        """Integer metadata present in every partition, summed (``checked``, ``rows`` ...)."""
        keys = [k for k, v in self.per_partition[0][1].metadata.items() if _is_count(v)]
        return {
            k: sum(f.metadata[k] for _, f in self.per_partition)
            for k in keys
            if all(_is_count(f.metadata.get(k)) for _, f in self.per_partition)
        }

    def metadata_columns(self) -> list[str]:
        """Sorted names of the scalar metadata of any partition (for a per-partition table)."""
        return sorted(
            {
                k
                for _, f in self.per_partition
                for k, v in f.metadata.items()
                if isinstance(v, int | float | str)
            }
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def combine(partitions: Iterable[str], evaluate: Callable[[str], Finding[Row]]) -> Combined[Row]:
    """Evaluate every partition on its own, in order, and combine the findings."""
    per_partition = tuple((p, evaluate(p)) for p in partitions)
    if not per_partition:
        raise ValueError("a check runs over at least one partition")
    return Combined(per_partition)


def combine_findings(per_partition: Sequence[tuple[str, Finding[Row]]]) -> Combined[Row]:
    """Combine findings already evaluated (one per partition, in run order)."""
    if not per_partition:
        raise ValueError("a check runs over at least one partition")
    return Combined(tuple(per_partition))
