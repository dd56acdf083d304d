"""Training-manifests stage core (no Dagster): shards + teacher labels + clean metadata -> training manifests.

Typical use (what the Dagster asset does)::

    summary = run_manifests(lake, ManifestConfig(), partitions=None, force=False, progress=log_it)
    record, manifest, dropped = load_version(lake, summary.version)
    problems = (check_splits_disjoint(manifest) + check_counts(lake, record, manifest, dropped)
                + check_members(lake, manifest) + check_durations(manifest, cfg))

Drop rules and splits: :mod:`asr_distill.stages.manifests.config`; formats:
:mod:`asr_distill.stages.manifests.formats`; lake keys: :mod:`asr_distill.lake` (:class:`~asr_distill.lake.ManifestLayout`).
"""

from asr_distill.stages.manifests.checks import (
    check_counts,
    check_durations,
    check_formats,
    check_members,
    check_splits_disjoint,
    load_version,
)
from asr_distill.stages.manifests.config import (
    DEFAULT_DROP_FLAGS,
    DROP_RULES,
    FORMAT_VERSION,
    SPLITS,
    ManifestConfig,
)
from asr_distill.stages.manifests.core import (
    ManifestBuild,
    ManifestInputError,
    PartitionInputs,
    build_manifest,
    load_partition,
    manifest_stats,
    split_group,
)
from asr_distill.stages.manifests.formats import lhotse_cut, nemo_entries, read_jsonl, tar_location
from asr_distill.stages.manifests.schema import DROPPED_SCHEMA, MANIFEST_SCHEMA
from asr_distill.stages.manifests.versioning import (
    ManifestSummary,
    manifest_version,
    read_latest,
    read_record,
    run_manifests,
)

__all__ = [
    "DEFAULT_DROP_FLAGS",
    "DROPPED_SCHEMA",
    "DROP_RULES",
    "FORMAT_VERSION",
    "MANIFEST_SCHEMA",
    "SPLITS",
    "ManifestBuild",
    "ManifestConfig",
    "ManifestInputError",
    "ManifestSummary",
    "PartitionInputs",
    "build_manifest",
    "check_counts",
    "check_durations",
    "check_formats",
    "check_members",
    "check_splits_disjoint",
    "lhotse_cut",
    "load_partition",
    "load_version",
    "manifest_stats",
    "manifest_version",
    "nemo_entries",
    "read_jsonl",
    "read_latest",
    "read_record",
    "run_manifests",
    "split_group",
    "tar_location",
]
