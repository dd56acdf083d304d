"""``audio_index``: one Parquet row per raw audio object of a prefix (probe results + sidecars)."""

from typing import Any

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

from asr_distill import lake as layout
from asr_distill.assets._metadata import md_counts, md_histogram, md_table, partition_check_results
from asr_distill.assets._policies import (
    CPU_BACKFILL,
    IO_RETRY,
    materialize_partitions,
    permanent_errors_fail_fast,
)
from asr_distill.assets.raw_audio import raw_audio
from asr_distill.partitions import raw_prefix_partitions, run_partition_keys
from asr_distill.resources import StorageResource
from asr_distill.resources.ray import CPU_STAGE_EXECUTOR_DOC, cpu_stage_executor
from asr_distill.stages.index.build import DURATION_BINS_S, INDEX_VERSION, IndexOptions, run_index
from asr_distill.stages.index.schema import IGNORED_REASONS, PROBE_ERRORS, SIDECAR_ERRORS
from asr_distill.stages.index.validation import validate_index_object
from asr_distill.stages.progress import to_log
from asr_distill.storage import Storage


class AudioIndexConfig(dg.Config):
    force: bool = Field(default=False, description="Re-probe even if the prefix listing is unchanged.")
    workers: int = Field(
        default=0,
        description=(
            "Probe workers (0 = auto: one process per core for a local store (small listings are probed "
            "in the step's own process), 8 threads per core, at most 64, for OSS)."
        ),
    )
    max_in_flight: int = Field(default=256, description="Objects being probed at once (bounds memory).")
    executor: str = Field(default="auto", description=CPU_STAGE_EXECUTOR_DOC)


@dg.asset(
    partitions_def=raw_prefix_partitions,
    retry_policy=IO_RETRY,
    backfill_policy=CPU_BACKFILL,
    deps=[raw_audio],
    group_name="ingest",
    code_version=INDEX_VERSION,
    kinds={"parquet"},
    description=(
        "One row per raw audio object: size, version, container/codec, rate, channels, frames and the "
        "duration of the real data, the header's claim when it differs, sidecar text/language/speaker, "
        "and probe_error (null when fine)."
    ),
)
@permanent_errors_fail_fast()
def audio_index(
    context: dg.AssetExecutionContext,
    config: AudioIndexConfig,
    raw: StorageResource,
    lake: StorageResource,
    ray_cluster: RayResource,
) -> dg.MaterializeResult:
    raw_store, lake_store = raw.get(), lake.get()
    ray_tasks = cpu_stage_executor(config.executor, ray_cluster, {"raw": raw_store}, context, "audio_index")
    options = IndexOptions(
        workers=config.workers or None, max_in_flight=config.max_in_flight, executor=ray_tasks or "auto"
    )
    return materialize_partitions(
        context, lambda p: _index_partition(context, config, raw_store, lake_store, options, p)
    )


def _index_partition(
    context: dg.AssetExecutionContext,
    config: AudioIndexConfig,
    raw_store: Storage,
    lake_store: Storage,
    options: IndexOptions,
    partition: str,
) -> dict[str, Any]:
    s = run_index(
        raw_store, lake_store, partition, options, force=config.force, progress=to_log(context.log.info)
    )
    return {
        "dagster/row_count": s.rows,
        "path": dg.MetadataValue.path(lake_store.url(layout.audio_index_key(partition))),
        "rows": s.rows,
        "readable_rows": s.ok_rows,
        "probe_error_rows": s.error_rows,
        "probe_error_rate": round(s.error_rate, 4),
        "total_hours": round(s.seconds / 3600, 4),
        "total_bytes": s.bytes,
        "rows_with_text": s.with_text,
        "header_claims_differ": s.truncated,
        "ignored_objects": s.ignored_objects,
        "ignored_reasons": md_counts(s.ignored_reasons, "reason", IGNORED_REASONS),
        "ignored_sample": ", ".join(s.ignored_sample) or "-",
        "swept_temporaries": s.swept_temporaries,
        "orphan_sidecars": s.orphan_sidecars,
        "probe_errors": md_counts(s.probe_errors, "probe_error", PROBE_ERRORS),
        "sidecar_errors": md_counts(s.sidecar_errors, "sidecar_error", SIDECAR_ERRORS),
        "format_x_sample_rate": md_table(
            ["container", "sample rate (Hz)", "files"],
            [(c, r, n) for (c, r), n in sorted(s.format_rate.items())],
        ),
        "duration_histogram": md_histogram(DURATION_BINS_S, s.duration_hist, " s"),
        "reused_previous_index": s.skipped,
        "elapsed_s": round(s.elapsed_s, 2),
        "objects_per_s": round(s.objects_per_s, 1),
        "listing_fingerprint": s.fingerprint,
    }


@dg.asset_check(
    asset=audio_index,
    blocking=True,
    partitions_def=raw_prefix_partitions,
    description="pandera schema of the index (types, ranges, reason codes, row invariants).",
)
def audio_index_schema(context: dg.AssetCheckExecutionContext, lake: StorageResource) -> dg.AssetCheckResult:
    store = lake.get()
    (result,) = partition_check_results(
        ["audio_index_schema"],
        run_partition_keys(context),
        lambda p: [("audio_index_schema", *validate_index_object(store, layout.audio_index_key(p)))],
    )
    return result
