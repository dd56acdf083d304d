"""The one progress type of every stage core: what a stage reports while it runs (for logs).

Every ``run_<stage>`` entry point takes ``progress: ProgressFn | None`` and calls it with a
:class:`Progress` now and then (counts so far) and at its decisions (what it reuses, what it redoes).
The Dagster assets pass ``context.log.info`` wrapped by :func:`to_log`; tests may collect the events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress event of a stage: ``message`` is the line to log; ``done``/``total`` count the
    stage's unit of work (clips, samples, shards...) when the event is a count, else None."""

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
    """Sends :class:`Progress` events of one stage and partition to ``progress`` (no-op when None)."""

    def __init__(self, stage: str, partition: str | None, progress: ProgressFn | None) -> None:
        self.stage, self.partition, self._progress = stage, partition, progress

    def __call__(
        self,
        message: str,
        *,
        done: int | None = None,
        total: int | None = None,
        elapsed_s: float | None = None,
    ) -> None:
        if self._progress is not None:
            self._progress(Progress(self.stage, self.partition, message, done, total, elapsed_s))


def to_log(log: Callable[[str], None]) -> ProgressFn:
    """A progress function that logs each event's message."""
    return lambda p: log(p.message)
