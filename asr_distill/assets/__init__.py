"""Software-defined assets, in lineage order."""

from asr_distill.assets.audio_index import audio_index, audio_index_schema
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.assets.raw_audio import raw_audio
from asr_distill.assets.segmented_audio import segmented_audio, segmented_audio_checks
from asr_distill.assets.teacher_labels import teacher_labels, teacher_labels_checks
from asr_distill.assets.training_manifests import training_manifests, training_manifests_checks
from asr_distill.assets.webdataset_shards import webdataset_shards, webdataset_shards_checks
from asr_distill.dbt_like_checks import build_asset_checks, default_check_files, load_check_specs
from asr_distill.lake import registered_tables
from asr_distill.partitions import raw_prefix_partitions

ALL_ASSETS = [
    raw_audio,
    audio_index,
    cleaned_audio,
    segmented_audio,
    webdataset_shards,
    teacher_labels,
    training_manifests,
]
# Declarative checks (dbt_like_checks/checks/*.yaml), compiled at load time; invalid YAML fails here.
DECLARATIVE_CHECKS = build_asset_checks(
    load_check_specs(default_check_files(), known_tables=registered_tables()),
    partitions_def=raw_prefix_partitions,
)
ALL_CHECKS = [
    audio_index_schema,
    segmented_audio_checks,
    webdataset_shards_checks,
    teacher_labels_checks,
    training_manifests_checks,
    *DECLARATIVE_CHECKS,
]

__all__ = [
    "ALL_ASSETS",
    "ALL_CHECKS",
    "DECLARATIVE_CHECKS",
    "cleaned_audio",
    "webdataset_shards",
    "audio_index",
    "audio_index_schema",
    "raw_audio",
    "segmented_audio",
    "segmented_audio_checks",
    "teacher_labels",
    "teacher_labels_checks",
    "training_manifests",
    "training_manifests_checks",
]
