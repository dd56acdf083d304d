"""The one partitions definition of the lineage: a partition is a top-level raw prefix."""

from __future__ import annotations

import re
import warnings

import dagster as dg

from asr_distill.lake import raw_prefix

# Partitioned asset checks (one check result per partition) are marked "preview" in Dagster 1.13; the
# lineage relies on them deliberately, so this one notice is silenced rather than printed on every load.
warnings.filterwarnings(
    "ignore", message=r".*partitions_def on an AssetCheckSpec.*", category=dg.PreviewWarning
)
# The same for per-asset backfill policies ("beta"): the CPU stages take many partitions per run.
warnings.filterwarnings("ignore", message=r".*`backfill_policy`.*", category=dg.BetaWarning)

raw_prefix_partitions = dg.DynamicPartitionsDefinition(name="raw_prefix")

# Characters Dagster and our lake layout accept in a partition key (a prefix name).
_VALID_PARTITION = re.compile(r"^[^/\\\x00-\x1f\x7f,\[\]]{1,255}$")


def is_valid_partition_name(name: str) -> bool:
    return bool(_VALID_PARTITION.match(name)) and name not in (".", "..") and not name.startswith(".")


def prefix_of(partition_key: str) -> str:
    """The raw-store key prefix of a partition (:func:`asr_distill.lake.raw_prefix`)."""
    return raw_prefix(partition_key)


def run_partition_keys(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[str]:
    """The partitions a run covers, in order: its one key, every key of its range, or [] when the run
    is not partitioned."""
    if context.has_partition_key:
        return [context.partition_key]
    if context.has_partition_key_range:
        return list(context.partition_keys)
    return []
