"""``cleaned_audio``: every indexed clip decoded and measured, then kept or quarantined with its reasons."""

from typing import Any

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

from asr_distill import lake as layout
from asr_distill.assets._metadata import md_counts, md_kept_quarantined_histogram
from asr_distill.assets._policies import (
    CPU_BACKFILL,
    IO_RETRY,
    materialize_partitions,
    permanent_errors_fail_fast,
)
from asr_distill.assets.audio_index import audio_index
from asr_distill.partitions import raw_prefix_partitions
from asr_distill.resources import StorageResource
from asr_distill.resources.ray import CPU_STAGE_EXECUTOR_DOC, cpu_stage_executor
from asr_distill.stages.clean import FLAGS, REASONS, CleanConfig, run_clean
from asr_distill.stages.progress import to_log
from asr_distill.storage import Storage


class CleanedAudioConfig(dg.Config):
    rules: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of CleanConfig fields, e.g. {'min_duration_s': 1.0, 'max_duration_s': 20}.",
    )
    workers: int = Field(
        default=0, description="Decode processes (0 = one per core; Ray: the cluster's CPUs)."
    )
    executor: str = Field(default="auto", description=CPU_STAGE_EXECUTOR_DOC)
    force: bool = Field(
        default=False,
        description="Clean again even when the index, the rules and the known duplicates are unchanged.",
    )
    cross_partition_dedup: bool = Field(
        default=True,
        description="Also quarantine exact duplicates of clips kept by partitions already cleaned.",
    )


@dg.asset(
    partitions_def=raw_prefix_partitions,
    retry_policy=IO_RETRY,
    backfill_policy=CPU_BACKFILL,
    deps=[audio_index],
    group_name="ingest",
    kinds={"parquet"},
    description=(
        "Every indexed clip decoded to 16 kHz mono and measured (duration, levels, clipping, silence, "
        "hashes); kept, routed to long-form (readable recordings over 30 s and at most 12 h, for "
        "segmented_audio), or quarantined with every reason that applies. Three tables per partition: "
        "kept.parquet, long_form.parquet and quarantine.parquet; kept + long_form + quarantined = indexed."
    ),
)
@permanent_errors_fail_fast()
def cleaned_audio(
    context: dg.AssetExecutionContext,
    config: CleanedAudioConfig,
    raw: StorageResource,
    lake: StorageResource,
    ray_cluster: RayResource,
) -> dg.MaterializeResult:
    raw_store, lake_store = raw.get(), lake.get()
    rules = CleanConfig.from_dict(config.rules)
    ray_tasks = cpu_stage_executor(config.executor, ray_cluster, {"raw": raw_store}, context, "cleaned_audio")
    return materialize_partitions(
        context, lambda p: _clean_partition(context, config, rules, raw_store, lake_store, p, ray_tasks)
    )


def _clean_partition(
    context: dg.AssetExecutionContext,
    config: CleanedAudioConfig,
    rules: CleanConfig,
    raw_store: Storage,
    lake_store: Storage,
    partition: str,
    ray_tasks: Any = None,
) -> dict[str, Any]:
    s = run_clean(
        raw_store,
        lake_store,
        partition,
        rules,
        force=config.force,
        progress=to_log(context.log.info),
        workers=config.workers or None,
        executor=ray_tasks or "process",
        cross_partition_dedup=config.cross_partition_dedup,
    )
    return {
        "dagster/row_count": s.kept,
        "kept_path": dg.MetadataValue.path(lake_store.url(layout.cleaned_kept_key(partition))),
        "quarantine_path": dg.MetadataValue.path(lake_store.url(layout.cleaned_quarantine_key(partition))),
        "long_form_path": dg.MetadataValue.path(lake_store.url(layout.cleaned_long_form_key(partition))),
        "input_rows": s.total,
        "kept": s.kept,
        "long_form": s.long_form,
        "quarantined": s.quarantined,
        "kept_hours": round(s.kept_hours, 4),
        "long_form_hours": round(s.long_form_hours, 4),
        "quarantined_hours": round(s.quarantined_hours, 4),
        "drop_funnel": md_counts({k: v for k, v in s.funnel.items() if v}, "first reason", REASONS),
        "reasons_any": md_counts({k: v for k, v in s.reason_counts.items() if v}, "reason", REASONS),
        "flags": md_counts({k: v for k, v in s.flag_counts.items() if v}, "flag", FLAGS),
        "duration_histogram": md_kept_quarantined_histogram(
            s.duration_hist.labels, s.duration_hist.kept, s.duration_hist.quarantined
        ),
        "rms_histogram": md_kept_quarantined_histogram(
            s.rms_hist.labels, s.rms_hist.kept, s.rms_hist.quarantined
        ),
        "known_hashes_from_other_partitions": s.known_hashes,
        "swept_temporaries": s.swept_temporaries,
        "elapsed_s": round(s.elapsed_s, 2),
        "clips_per_s": round(s.clips_per_s, 1),
        "reused_previous_clean": s.reused,
    }
