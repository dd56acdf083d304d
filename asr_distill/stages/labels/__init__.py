"""Teacher pseudo-labelling stage core (no Dagster): shards of audio in, one labels table per shard out.

Typical use (what the Dagster asset does)::

    ray.init(address=...)                                   # the caller's job
    with LabelPool(FasterWhisperConfig(), PoolConfig(num_actors=4)) as pool:
        version = labels_version(pool.fingerprint)          # lake path component of this labels version
        done = {shard ids already written under version}
        summary = pool.run(shard_ids, WebDatasetShardReader(shards_uri),
                           on_result=lambda r: write_labels(lake, key_for(version, r.shard_id), r.table),
                           done=done, on_failure=log_it)
    metadata = summary.to_dict()

:func:`label_shard` does one shard in-process (no Ray), with any loaded :class:`~asr_distill.teachers.Teacher`.
"""

from asr_distill.stages.labels.core import ShardError, ShardStats, label_shard, labels_table, write_labels
from asr_distill.stages.labels.inputs import LabelInput, ShardReader, WebDatasetShardReader, split_member
from asr_distill.stages.labels.pool import (
    LabelPool,
    PoolConfig,
    RunSummary,
    ShardFailure,
    ShardResult,
    iter_shard_ids,
)
from asr_distill.stages.labels.quality import (
    QUALITY_FLAGS,
    QualityConfig,
    QualityResult,
    assess,
    error_rate,
    normalize_text,
)
from asr_distill.stages.labels.schema import ERROR_REASONS, LABELS_COLUMNS, LABELS_SCHEMA
from asr_distill.teachers.base import labels_version

__all__ = [
    "ERROR_REASONS",
    "LABELS_COLUMNS",
    "LABELS_SCHEMA",
    "QUALITY_FLAGS",
    "LabelInput",
    "LabelPool",
    "PoolConfig",
    "QualityConfig",
    "QualityResult",
    "RunSummary",
    "ShardError",
    "ShardFailure",
    "ShardReader",
    "ShardResult",
    "ShardStats",
    "WebDatasetShardReader",
    "assess",
    "error_rate",
    "iter_shard_ids",
    "label_shard",
    "labels_table",
    "labels_version",
    "normalize_text",
    "split_member",
    "write_labels",
]
