"""Teacher pseudo-labelling stage core (no Dagster): shards of audio in, one labels table per shard out.

Entry point (what the Dagster asset does)::

    summary = run_labels(lake, partition, LabelsConfig(), teacher=FasterWhisperConfig(),
                         pool=lambda: LabelPool(teacher_cfg, PoolConfig(num_actors=4)),  # started lazily
                         reader=WebDatasetShardReader(lake.uri), force=False, progress=log_it)
    summary.record        # the LabelsRecord written to teacher_labels/<p>/current.json

The protocol (change detection, labels versions, finished shards, the record) is in
:mod:`asr_distill.stages.labels.run`; ``current.json`` is :class:`~asr_distill.stages.labels.record.LabelsRecord`.
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
from asr_distill.stages.labels.record import NO_SHARDS_VERSION, LabelsRecord
from asr_distill.stages.labels.run import (
    META_SHARD_BLAKE3,
    LabelsConfig,
    LabelsIncomplete,
    LabelsSummary,
    labelled_blake3,
    read_labels,
    references,
    run_labels,
    teacher_config_dict,
)
from asr_distill.stages.labels.schema import ERROR_REASONS, LABELS_COLUMNS, LABELS_SCHEMA
from asr_distill.teachers.base import labels_version

__all__ = [
    "ERROR_REASONS",
    "LABELS_COLUMNS",
    "LABELS_SCHEMA",
    "META_SHARD_BLAKE3",
    "NO_SHARDS_VERSION",
    "QUALITY_FLAGS",
    "LabelInput",
    "LabelPool",
    "LabelsConfig",
    "LabelsIncomplete",
    "LabelsRecord",
    "LabelsSummary",
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
    "labelled_blake3",
    "labels_version",
    "normalize_text",
    "read_labels",
    "references",
    "run_labels",
    "split_member",
    "teacher_config_dict",
    "write_labels",
]
