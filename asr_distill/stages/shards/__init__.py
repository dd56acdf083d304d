"""WebDataset shards stage core (no Dagster): kept clips -> duration-bucketed, reproducible tar shards.

Entry point (what the Dagster asset does)::

    summary = run_shards(raw, lake, partition, ShardConfig(), progress=lambda p: log.info(str(p)))
    index, shards = load_outputs(lake, partition)
    problems = check_coverage(kept.column("key").to_pylist(), index) + check_buckets(index, cfg) + ...

Lake keys: :mod:`asr_distill.lake`; sample key rule: :mod:`asr_distill.stages.shards.layout`; order inside a bucket:
:mod:`asr_distill.stages.shards.plan`; tar format: :mod:`asr_distill.stages.shards.tar`.
"""

from asr_distill.stages.shards.config import DEFAULT_BUCKET_EDGES, FORMAT_VERSION, ShardConfig
from asr_distill.stages.shards.encode import ENCODE_ERRORS, StorageAudioLoader, encode_sample
from asr_distill.stages.shards.layout import SAMPLE_KEY_RULE, is_safe_sample_key, sample_key
from asr_distill.stages.shards.plan import (
    INPUT_COLUMNS,
    PLAN_REJECTIONS,
    PartitionPlan,
    PlannedSample,
    ShardPlanError,
    adjacent_same_group_rate,
    plan_partition,
)
from asr_distill.stages.shards.run import run_shards
from asr_distill.stages.shards.schema import SAMPLE_INDEX_SCHEMA, SHARD_TABLE_SCHEMA
from asr_distill.stages.shards.tar import TarWriter, ustar_header
from asr_distill.stages.shards.verify import (
    check_buckets,
    check_coverage,
    check_shard_sizes,
    check_tars,
    check_wids,
    load_outputs,
    read_member,
)
from asr_distill.stages.shards.writer import (
    ShardProgress,
    ShardSummary,
    wids_index,
    write_shards,
)

__all__ = [
    "DEFAULT_BUCKET_EDGES",
    "ENCODE_ERRORS",
    "FORMAT_VERSION",
    "INPUT_COLUMNS",
    "PLAN_REJECTIONS",
    "SAMPLE_INDEX_SCHEMA",
    "SAMPLE_KEY_RULE",
    "SHARD_TABLE_SCHEMA",
    "PartitionPlan",
    "PlannedSample",
    "ShardConfig",
    "ShardPlanError",
    "ShardProgress",
    "ShardSummary",
    "StorageAudioLoader",
    "TarWriter",
    "adjacent_same_group_rate",
    "check_buckets",
    "check_coverage",
    "check_shard_sizes",
    "check_tars",
    "check_wids",
    "encode_sample",
    "is_safe_sample_key",
    "load_outputs",
    "plan_partition",
    "read_member",
    "run_shards",
    "sample_key",
    "ustar_header",
    "wids_index",
    "write_shards",
]
