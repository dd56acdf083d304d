"""Progress events of the segmentation stage (one place; shaped like the stage contract's ``Progress``
so that the lead can point :data:`ProgressFn` at the shared type after the merge)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STAGE = "segment"


@dataclass(frozen=True, slots=True)
class Progress:
    """One event: ``message`` is the line to log; ``done`` counts recordings when it is a count."""

    stage: str
    partition: str | None
    message: str
    done: int | None = None
    total: int | None = None
    elapsed_s: float | None = None

    def __str__(self) -> str:
        return self.message


ProgressFn = Callable[[Progress], None]


class Reporter:
    """Sends events of one partition to ``progress`` (a no-op when None)."""

    def __init__(self, partition: str, progress: ProgressFn | None) -> None:
        self.partition, self._progress = partition, progress

    def __call__(
        self,
        message: str,
        *,
        done: int | None = None,
        total: int | None = None,
        elapsed_s: float | None = None,
    ) -> None:
        if self._progress is not None:
            self._progress(Progress(STAGE, self.partition, message, done, total, elapsed_s))
