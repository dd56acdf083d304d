"""``webdataset_shards``: kept clips as duration-bucketed, pre-shuffled, byte-reproducible WebDataset tars."""

import json
from typing import Any

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

from asr_distill import lake as layout
from asr_distill.assets._metadata import PartitionFindings, md_counts, md_table, partition_check_results
from asr_distill.assets._policies import (
    CPU_BACKFILL,
    IO_RETRY,
    materialize_partitions,
    permanent_errors_fail_fast,
)
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.assets.segmented_audio import segmented_audio
from asr_distill.partitions import raw_prefix_partitions, run_partition_keys
from asr_distill.resources import StorageResource
from asr_distill.resources.ray import CPU_STAGE_EXECUTOR_DOC, cpu_stage_executor
from asr_distill.stages.progress import to_log
from asr_distill.stages.shards import ShardConfig, run_shards
from asr_distill.stages.shards.run import read_kept_segments
from asr_distill.stages.shards.schema import META_CONFIG
from asr_distill.stages.shards.verify import (
    check_buckets,
    check_coverage,
    check_shard_sizes,
    check_tars,
    check_wids,
    load_outputs,
)
from asr_distill.storage import Storage
from asr_distill.tableio import read_table


class ShardsConfig(dg.Config):
    shards: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Overrides of ShardConfig fields, e.g. {'bucket_edges': [0, 5, 10, 20, 30], "
            "'max_shard_bytes': 268435456, 'max_shard_samples': 10000, 'audio_format': 'flac'}."
        ),
    )
    workers: int = Field(
        default=0, description="Encoding processes (0 = one per core; Ray: the cluster's CPUs)."
    )
    executor: str = Field(default="auto", description=CPU_STAGE_EXECUTOR_DOC)


def _config(overrides: dict[str, Any]) -> ShardConfig:
    return ShardConfig.from_dict(overrides)


@dg.asset(
    partitions_def=raw_prefix_partitions,
    retry_policy=IO_RETRY,
    backfill_policy=CPU_BACKFILL,
    deps=[cleaned_audio, segmented_audio],
    group_name="ingest",
    kinds={"webdataset", "parquet"},
    description=(
        "Every kept clip as <key>.flac (16 kHz mono) + <key>.json in WebDataset tars, one duration bucket "
        "per shard, deterministic shuffle inside a bucket; index.parquet (member offsets), shards.parquet "
        "(sizes, BLAKE3 checksums) and wids.json per partition."
    ),
)
@permanent_errors_fail_fast()
def webdataset_shards(
    context: dg.AssetExecutionContext,
    config: ShardsConfig,
    raw: StorageResource,
    lake: StorageResource,
    ray_cluster: RayResource,
) -> dg.MaterializeResult:
    raw_store, lake_store = raw.get(), lake.get()
    cfg = _config(config.shards)
    # The workers read the raw audio and, for segments, the lake's segment tars.
    stores = {"raw": raw_store, "lake": lake_store}
    ray_tasks = cpu_stage_executor(config.executor, ray_cluster, stores, context, "webdataset_shards")
    return materialize_partitions(
        context, lambda p: _shard_partition(context, config, cfg, raw_store, lake_store, p, ray_tasks)
    )


def _shard_partition(
    context: dg.AssetExecutionContext,
    config: ShardsConfig,
    cfg: ShardConfig,
    raw_store: Storage,
    lake_store: Storage,
    partition: str,
    ray_tasks: Any = None,
) -> dict[str, Any]:
    s = run_shards(
        raw_store,
        lake_store,
        partition,
        cfg,
        progress=to_log(context.log.info),
        workers=config.workers or None,
        executor=ray_tasks or "process",
    )
    sl = layout.shard_layout(partition)
    return {
        "dagster/row_count": s.samples,
        "shards_prefix": dg.MetadataValue.path(lake_store.url(sl.prefix)),
        "wids_index": dg.MetadataValue.path(lake_store.url(sl.wids_key)),
        "kept_rows": s.input_rows,
        "kept_segments": s.input_segments,
        "segment_samples": s.planned_segments,
        "samples": s.samples,
        "hours": round(s.hours, 4),
        "shards": s.shards,
        "shards_written": s.shards_written,
        "shards_reused": s.shards_reused,
        "bytes_total": s.bytes_total,
        "bytes_written": s.bytes_written,
        "failed_samples": s.failed_samples,
        "failures_by_reason": md_counts(s.reasons, "reason"),
        "per_bucket": md_table(
            ["bucket", "shards", "samples", "hours", "MB"],
            [
                (b, v.shards, v.samples, round(v.hours, 4), round(v.bytes / 1e6, 2))
                for b, v in sorted(s.buckets.items())
            ],
        ),
        "elapsed_s": round(s.elapsed_s, 3),
        "swept_temporaries": s.swept_temporaries,
        "mb_per_s": s.mb_per_s,
        "realtime_factor": s.realtime_factor,
        "config_fingerprint": s.config_fingerprint,
    }


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "shards_cover_kept_rows",
            asset=webdataset_shards,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description="every kept row is in exactly one shard and every shard sample is a kept row",
        ),
        dg.AssetCheckSpec(
            "shards_tars_open",
            asset=webdataset_shards,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description="every tar opens, matches its BLAKE3 checksum/size and has two members per sample",
        ),
        dg.AssetCheckSpec(
            "shards_buckets",
            asset=webdataset_shards,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description="no sample outside its shard's duration bucket",
        ),
        dg.AssetCheckSpec(
            "shards_sizes",
            asset=webdataset_shards,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description="shard sizes within the configured byte and sample bounds; wids.json agrees",
        ),
    ],
    can_subset=True,
    name="webdataset_shards_checks",
)
def webdataset_shards_checks(context: dg.AssetCheckExecutionContext, lake: StorageResource):  # type: ignore[no-untyped-def]
    store = lake.get()
    selected = {k.name for k in context.selected_asset_check_keys}
    yield from partition_check_results(
        selected, run_partition_keys(context), lambda p: _shard_problems(store, p, selected)
    )


def _shard_problems(store: Storage, partition: str, selected: set[str]) -> PartitionFindings:
    """(check name, problems, metadata) of one partition for every selected shards check."""
    index, shards = load_outputs(store, partition)
    # The config that wrote the shards travels in shards.parquet's metadata.
    meta = shards.schema.metadata or {}
    cfg = ShardConfig.from_dict(json.loads(meta[META_CONFIG])) if META_CONFIG in meta else ShardConfig()
    if "shards_cover_kept_rows" in selected:
        kept = read_table(store, layout.cleaned_kept_key(partition)).column("key").to_pylist()
        segments = read_kept_segments(store, partition)
        if segments is not None:
            kept += segments.column("segment_key").to_pylist()
        yield "shards_cover_kept_rows", check_coverage(kept, index), {"checked": len(kept)}
    if "shards_tars_open" in selected:
        yield "shards_tars_open", check_tars(store, shards, index, cfg), {"checked": shards.num_rows}
    if "shards_buckets" in selected:
        yield "shards_buckets", check_buckets(index, cfg), {"checked": index.num_rows}
    if "shards_sizes" in selected:
        found = check_shard_sizes(shards, cfg) + check_wids(store, layout.shard_layout(partition), shards)
        yield "shards_sizes", found, {"checked": shards.num_rows}
