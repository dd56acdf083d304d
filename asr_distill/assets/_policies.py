"""Execution policies shared by the stage assets."""

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dagster as dg

from asr_distill.partitions import run_partition_keys
from asr_distill.storage import InvalidKeyError, ObjectNotFoundError, StorageAccessDeniedError

# Stage steps read and write object storage: a transient failure (network, a node lost mid-step) is
# retried with exponential backoff and jitter. Storage backends retry single requests themselves;
# this covers what escapes them. Asset checks carry no retry policy: a failed check is never retried.
IO_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# Backfills. The CPU stages (index, clean, segment, shards) take up to CPU_PARTITIONS_PER_RUN partitions per
# run: a prefix is often small, and one run per prefix would spend more time starting runs (a process,
# imports, the code location) than working. They loop over the run's partitions, record one
# materialization with its own metadata per partition, and their checks evaluate every partition of
# the run. Labelling backfills take one partition per run, so the `gpu` pool and the run queue schedule
# the cluster one partition at a time and a failure costs one partition of GPU work. It has no policy
# on purpose: Dagster's default launches one run per partition tagged `dagster/partition` (what the run
# queue's per-partition limit and the per-partition check results key on), whereas multi_run(1) would
# tag single-key ranges instead. A range launched by hand (`make demo` does) still works: every asset
# loops over its run's partitions, and labelling then starts one Ray cluster for all of them.
CPU_PARTITIONS_PER_RUN = 8
CPU_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=CPU_PARTITIONS_PER_RUN)
LABELS_BACKFILL: dg.BackfillPolicy | None = None


def materialize_partitions(
    context: dg.AssetExecutionContext, one: Callable[[str], Mapping[str, Any]]
) -> dg.MaterializeResult:
    """Run ``one(partition)`` for every partition of the run, in order; each partition's materialization
    gets the metadata ``one`` returned for it."""
    partitions = run_partition_keys(context)
    for i, partition in enumerate(partitions, 1):
        if len(partitions) > 1:
            context.log.info(f"partition {i}/{len(partitions)}: {partition}")
        context.add_asset_metadata(dict(one(partition)), partition_key=partition)
    return dg.MaterializeResult()


@contextlib.contextmanager
def permanent_errors_fail_fast() -> Iterator[None]:
    """Storage errors that a retry cannot fix (access denied, missing object or root, invalid key)
    fail the step at once instead of going through :data:`IO_RETRY`."""
    try:
        yield
    except (StorageAccessDeniedError, ObjectNotFoundError, InvalidKeyError) as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
