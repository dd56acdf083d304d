"""Jobs users run from the UI or ``dagster job execute``."""

from typing import Any

import dagster as dg

from asr_distill.assets.audio_index import audio_index
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.assets.segmented_audio import segmented_audio
from asr_distill.assets.teacher_labels import teacher_labels
from asr_distill.assets.training_manifests import training_manifests
from asr_distill.assets.webdataset_shards import webdataset_shards
from asr_distill.partitions import is_valid_partition_name, raw_prefix_partitions
from asr_distill.resources import StorageResource


@dg.op(description="List top-level prefixes of the raw store and register new ones as partitions.")
def register_raw_prefixes(context: dg.OpExecutionContext, raw: StorageResource) -> dg.Output[list[str]]:
    store = raw.get()
    found = [p.rstrip("/") for p in store.list_prefixes("")]
    valid = [p for p in found if is_valid_partition_name(p)]
    invalid = sorted(set(found) - set(valid))
    for name in invalid:
        context.log.warning(
            f"prefix {name!r} cannot be a partition name (hidden, or has , [ ] or control chars)"
        )
    known = set(context.instance.get_dynamic_partitions(raw_prefix_partitions.name))
    new = [p for p in valid if p not in known]
    if new:
        context.instance.add_dynamic_partitions(raw_prefix_partitions.name, new)
    context.log.info(
        f"{store.url()}: {len(found)} prefixes, {len(new)} new partitions registered, {len(invalid)} rejected"
    )
    return dg.Output(
        new,
        metadata={
            "raw_store": store.url(),
            "prefixes_found": len(found),
            "new_partitions": dg.MetadataValue.json(new),
            "rejected_prefixes": dg.MetadataValue.json(invalid),
            "total_partitions": len(known) + len(new),
        },
    )


@dg.job(description="Register every top-level prefix of the raw store as a partition.")
def discover_partitions() -> None:
    register_raw_prefixes()


def _asset_job(name: str, description: str, *assets: dg.AssetsDefinition) -> Any:
    # No executor here: jobs inherit the code location's (ASR_DISTILL_EXECUTOR, in-process by default).
    return dg.define_asset_job(name, selection=dg.AssetSelection.assets(*assets), description=description)


distill_job = _asset_job(
    "distill_job",
    "The whole lineage for one partition (a raw prefix).",
    audio_index,
    cleaned_audio,
    segmented_audio,
    webdataset_shards,
    teacher_labels,
    training_manifests,
)
cpu_stages_job = _asset_job(
    "cpu_stages_job",
    "Index, clean, segmentation and shards (the CPU stages) for one partition or a range of partitions "
    "in one run.",
    audio_index,
    cleaned_audio,
    segmented_audio,
    webdataset_shards,
)
index_job = _asset_job("index_job", "Only the Parquet index of a partition.", audio_index)
clean_job = _asset_job(
    "clean_job", "Only the clean stage of a partition (its index must exist).", cleaned_audio
)
segment_job = _asset_job(
    "segment_job",
    "Only the segmentation of a partition's long-form recordings (its clean stage must exist).",
    segmented_audio,
)
shards_job = _asset_job(
    "shards_job", "Only the WebDataset shards of a partition (its clean stage must exist).", webdataset_shards
)
labels_job = _asset_job(
    "labels_job",
    "Only the teacher pseudo-labels of a partition (its shards must exist); uses the `gpu` pool.",
    teacher_labels,
)
manifests_job = _asset_job(
    "manifests_job",
    "Only the training manifests, over every partition with current labels (not partitioned).",
    training_manifests,
)

__all__ = [
    "clean_job",
    "cpu_stages_job",
    "shards_job",
    "discover_partitions",
    "distill_job",
    "index_job",
    "labels_job",
    "manifests_job",
    "register_raw_prefixes",
    "segment_job",
]
