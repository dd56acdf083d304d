"""Leftovers of killed runs: the temporaries of atomic writes that never finished.

A SIGKILL between the start of an atomic write and its rename leaves a ``.asrd-tmp-*`` file in the lake
folder (local lakes; OSS writes leave no visible object). Each stage sweeps the folder it is about to
write with :func:`sweep_stage_folder` and reports the count in its summary. What is swept is
:meth:`~asr_distill.storage.Storage.sweep_temporaries`'s rule: not modified for
``ASR_DISTILL_TMP_MAX_AGE_S`` seconds (default one hour) and not a live local writer's.
"""

from __future__ import annotations

from asr_distill import settings
from asr_distill.stages.progress import Reporter
from asr_distill.storage import Storage
from asr_distill.storage.base import SweepResult
from asr_distill.storage.scratch import sweep_scratch


def tmp_max_age_s() -> float:
    """``ASR_DISTILL_TMP_MAX_AGE_S`` as seconds (a clear error for a value that is not a number)."""
    value = settings.TMP_MAX_AGE_S.get() or "3600"
    try:
        age = float(value)
    except ValueError:
        raise ValueError(
            f"{settings.TMP_MAX_AGE_S.name} must be a number of seconds, not {value!r}"
        ) from None
    if age < 0:
        raise ValueError(f"{settings.TMP_MAX_AGE_S.name} must be >= 0, not {value!r}")
    return age


def sweep_stage_folder(
    lake: Storage, prefix: str, say: Reporter | None = None, *, max_age_s: float | None = None
) -> SweepResult:
    """Remove stale temporaries below the stage's output folder ``prefix``; log what was removed."""
    age = tmp_max_age_s() if max_age_s is None else max_age_s
    result = lake.sweep_temporaries(prefix, max_age_s=age)
    if result.removed and say is not None:
        say(
            f"swept {result.removed} stale temporaries ({result.removed_bytes} bytes) of killed writes "
            f"from {lake.url(prefix)}: {', '.join(result.sample)}"
        )
    # Scratch folders of killed processes on this machine (copies of and uploads to remote stores):
    # logged, not counted in the lake's result (they belong to no partition).
    scratch = sweep_scratch(age)
    if scratch.removed and say is not None:
        say(
            f"swept {scratch.removed} scratch folders ({scratch.removed_bytes} bytes) of killed processes "
            f"from this machine's temporary directory: {', '.join(scratch.sample)}"
        )
    return result
