"""Execution policies shared by the stage assets."""

import contextlib
from collections.abc import Iterator

import dagster as dg

from asr_distill.storage import InvalidKeyError, ObjectNotFoundError, StorageAccessDeniedError

# Stage steps read and write object storage: a transient failure (network, a node lost mid-step) is
# retried with exponential backoff and jitter. Storage backends retry single requests themselves;
# this covers what escapes them. Asset checks carry no retry policy: a failed check is never retried.
IO_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# Backfills: no BackfillPolicy is set, so Dagster launches one run per partition (tagged
# dagster/partition). Each stage already uses every core of its machine, and per-partition runs keep
# metadata, checks and retries per partition.


@contextlib.contextmanager
def permanent_errors_fail_fast() -> Iterator[None]:
    """Storage errors that a retry cannot fix (access denied, missing object or root, invalid key)
    fail the step at once instead of going through :data:`IO_RETRY`."""
    try:
        yield
    except (StorageAccessDeniedError, ObjectNotFoundError, InvalidKeyError) as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
