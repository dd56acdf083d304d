"""``segmented_audio``: the clean stage's long-form recordings cut into <= 30 s speech segments (VAD)."""

import dataclasses
import json
from typing import Any

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

from asr_distill import lake as layout
from asr_distill.assets._metadata import (
    PartitionFindings,
    md_counts,
    md_histogram,
    md_table,
    partition_check_results,
)
from asr_distill.assets._policies import (
    CPU_BACKFILL,
    IO_RETRY,
    materialize_partitions,
    permanent_errors_fail_fast,
)
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.partitions import raw_prefix_partitions, run_partition_keys
from asr_distill.resources import StorageResource
from asr_distill.resources.ray import CPU_STAGE_EXECUTOR_DOC, cpu_stage_executor
from asr_distill.stages._procpool import ExecutorSpec
from asr_distill.stages.clean import CleanConfig
from asr_distill.stages.clean.schema import META_CONFIG as CLEAN_META_CONFIG
from asr_distill.stages.progress import to_log
from asr_distill.stages.segment.config import SegmentStageConfig
from asr_distill.stages.segment.core import SEGMENT_DURATION_EDGES_S, SegmentSummary, run_segment
from asr_distill.stages.segment.schema import SEGMENT_REASONS, STATUSES
from asr_distill.stages.segment.tables import read_recordings
from asr_distill.stages.segment.verify import verify_partition
from asr_distill.storage import Storage
from asr_distill.tableio import read_parquet_metadata, read_table


class SegmentedAudioConfig(dg.Config):
    segment: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the planner's SegmentConfig, e.g. {'threshold': 0.5, 'pack_gap_s': 1.0}.",
    )
    flac_compression_level: float = Field(default=0.5, description="FLAC level of the segment members.")
    workers: int = Field(default=0, description="Segmentation processes (0 = one per core).")
    force: bool = Field(default=False, description="Segment every recording again, even when reusable.")
    executor: str = Field(default="auto", description=CPU_STAGE_EXECUTOR_DOC)


def clean_config_of(lake: Storage, partition: str) -> CleanConfig:
    """The rules the partition was cleaned with (the long-form table records them): its resampler is
    what the recordings' hashes were computed with, its level rules are the segment-level rules."""
    meta = read_parquet_metadata(lake, layout.cleaned_long_form_key(partition)) or {}
    raw = meta.get(CLEAN_META_CONFIG)
    return CleanConfig.from_dict(json.loads(raw)) if raw else CleanConfig()


def stage_config(config: SegmentedAudioConfig, clean: CleanConfig) -> SegmentStageConfig:
    return SegmentStageConfig.from_dict(
        {
            "segment": dict(config.segment),
            "clean": clean.to_dict(),
            "flac_compression_level": config.flac_compression_level,
            "workers": config.workers or None,
        }
    )


@dg.asset(
    partitions_def=raw_prefix_partitions,
    retry_policy=IO_RETRY,
    backfill_policy=CPU_BACKFILL,
    deps=[cleaned_audio],
    group_name="ingest",
    kinds={"parquet", "flac"},
    description=(
        "The clean stage's long-form recordings (> 30 s, <= 12 h) decoded once, VAD (Silero v6, ONNX), "
        "cut into <= 30 s speech segments packed across short pauses; kept segments as 16 kHz FLAC "
        "members of one tar per recording. recordings.parquet (one row per recording: status, sample "
        "accounting, fingerprint) and segments.parquet (one row per segment, kept or quarantined)."
    ),
)
@permanent_errors_fail_fast()
def segmented_audio(
    context: dg.AssetExecutionContext,
    config: SegmentedAudioConfig,
    raw: StorageResource,
    lake: StorageResource,
    ray_cluster: RayResource,
) -> dg.MaterializeResult:
    raw_store, lake_store = raw.get(), lake.get()
    # Workers write each recording's tar to the lake themselves: both stores must reach them.
    ray_tasks = cpu_stage_executor(
        config.executor, ray_cluster, {"raw": raw_store, "lake": lake_store}, context, "segmented_audio"
    )
    return materialize_partitions(
        context,
        lambda p: _segment_partition(context, config, raw_store, lake_store, p, ray_tasks or "process"),
    )


def _segment_partition(
    context: dg.AssetExecutionContext,
    config: SegmentedAudioConfig,
    raw_store: Storage,
    lake_store: Storage,
    partition: str,
    executor: ExecutorSpec = "process",
) -> dict[str, Any]:
    cfg = dataclasses.replace(stage_config(config, clean_config_of(lake_store, partition)), executor=executor)
    s = run_segment(
        raw_store, lake_store, partition, cfg, force=config.force, progress=to_log(context.log.info)
    )
    return segment_metadata(lake_store, partition, s)


def segment_metadata(lake: Storage, partition: str, s: SegmentSummary) -> dict[str, Any]:
    edges = [0.0, *SEGMENT_DURATION_EDGES_S, float("inf")]
    return {
        "dagster/row_count": s.kept_segments,
        "recordings_path": dg.MetadataValue.path(lake.url(layout.segmented_recordings_key(partition))),
        "segments_path": dg.MetadataValue.path(lake.url(layout.segmented_segments_key(partition))),
        "recordings": s.recordings,
        "recordings_by_status": md_counts({k: v for k, v in s.by_status.items() if v}, "status", STATUSES),
        "hours_in": round(s.hours_in, 4),
        "speech_hours_kept": round(s.speech_hours_kept, 4),
        "non_speech_hours": round(s.non_speech_hours, 4),
        "quarantined_hours": round(s.quarantined_hours, 4),
        "quarantined_hours_by_reason": md_table(
            ["first reason", "hours", "meaning"],
            [(r, round(h, 4), SEGMENT_REASONS.get(r, "")) for r, h in s.quarantined_hours_by_reason.items()],
        ),
        "kept_segments": s.kept_segments,
        "quarantined_segments": s.quarantined_segments,
        "segment_duration_histogram": md_histogram(edges, s.duration_hist, " s"),
        "forced_cuts": s.forced_cuts,
        "vad_realtime_factor": round(s.vad_realtime_factor, 1),
        "realtime_factor": round(s.realtime_factor, 1),
        "recordings_segmented": s.segmented,
        "recordings_reused": s.reused,
        "orphan_tars_deleted": s.orphan_tars_deleted,
        "tar_bytes": s.tar_bytes,
        "elapsed_s": round(s.elapsed_s, 3),
    }


_CHECKS = {
    "segments_accounting": "per recording: kept + quarantined + non-speech samples = recording samples, "
    "the recording row's counts match its segments; one recording row per long-form row",
    "segments_no_overlap_max_30s": "segments in time order inside their recording, never overlapping; "
    "every kept segment at most 30 s; segment keys unique, in time order, never a raw key",
    "segments_members_match": "every kept segment's FLAC member exists in its tar at the recorded "
    "offset and decodes to the row's samples and pcm_blake3",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            name,
            asset=segmented_audio,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description=description,
        )
        for name, description in _CHECKS.items()
    ],
    can_subset=True,
    name="segmented_audio_checks",
)
def segmented_audio_checks(context: dg.AssetCheckExecutionContext, lake: StorageResource):  # type: ignore[no-untyped-def]
    store = lake.get()
    selected = {k.name for k in context.selected_asset_check_keys}
    yield from partition_check_results(
        selected, run_partition_keys(context), lambda p: _segment_problems(store, p, selected)
    )


def _segment_problems(store: Storage, partition: str, selected: set[str]) -> PartitionFindings:
    """(check name, problems, metadata) of one partition for every selected segmentation check."""
    members = "segments_members_match" in selected
    report = verify_partition(store, partition, check_members=members, check_hashes=members)
    accounting, order = list(report.accounting_problems), report.order_problems
    if "segments_accounting" in selected:
        long_keys = read_table(store, layout.cleaned_long_form_key(partition), ["key"]).column(0).to_pylist()
        rec_keys = [r["source_key"] for r in read_recordings(store, partition)]
        if sorted(long_keys) != rec_keys:
            missing = sorted(set(long_keys) - set(rec_keys))
            extra = sorted(set(rec_keys) - set(long_keys))
            accounting.append(
                f"recordings differ from the long-form table: missing {missing[:5]}, extra {extra[:5]}"
            )
        meta = {"recordings": report.recordings, "long_form_rows": len(long_keys)}
        yield "segments_accounting", [{"problem": p} for p in accounting], meta
    if "segments_no_overlap_max_30s" in selected:
        yield "segments_no_overlap_max_30s", [{"problem": p} for p in order], {"segments": report.segments}
    if members:
        found = [{"problem": p} for p in report.member_problems]
        yield "segments_members_match", found, {"members_checked": report.members_checked}
