"""``cleaned_audio``: every indexed clip decoded and measured, then kept or quarantined with its reasons."""

from typing import Any

import dagster as dg
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
from asr_distill.stages.clean import (
    FLAGS,
    REASONS,
    CleanConfig,
    CleanSummary,
    file_sha256,
    load_known_hashes,
    read_index_rows,
    reusable_clean,
    run_clean,
)
from asr_distill.storage import Storage


class CleanedAudioConfig(dg.Config):
    rules: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of CleanConfig fields, e.g. {'min_duration_s': 1.0, 'max_duration_s': 20}.",
    )
    workers: int = Field(default=0, description="Decode processes (0 = one per core).")
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
        "hashes); kept, or quarantined with every reason that applies. Two tables per partition: "
        "kept.parquet and quarantine.parquet; kept + quarantined = indexed."
    ),
)
@permanent_errors_fail_fast()
def cleaned_audio(
    context: dg.AssetExecutionContext, config: CleanedAudioConfig, raw: StorageResource, lake: StorageResource
) -> dg.MaterializeResult:
    raw_store, lake_store = raw.get(), lake.get()
    rules = CleanConfig.from_dict(config.rules)
    return materialize_partitions(
        context, lambda p: _clean_partition(context, config, rules, raw_store, lake_store, p)
    )


def _clean_partition(
    context: dg.AssetExecutionContext,
    config: CleanedAudioConfig,
    rules: CleanConfig,
    raw_store: Storage,
    lake_store: Storage,
    partition: str,
) -> dict[str, Any]:
    # Partitions earlier in the same run are already written, so they count as already cleaned.
    others: list[str] = []
    if config.cross_partition_dedup and rules.dedup:
        others = [
            k
            for k in layout.table_keys("cleaned", lake_store, None)
            if k != layout.cleaned_kept_key(partition)
        ]
    known = load_known_hashes(lake_store, others)
    kept_key, quarantine_key = layout.cleaned_kept_key(partition), layout.cleaned_quarantine_key(partition)
    index_sha256 = file_sha256(lake_store, layout.audio_index_key(partition))
    reused: CleanSummary | None = None
    if not config.force:
        reused = reusable_clean(
            lake_store,
            kept_key=kept_key,
            quarantine_key=quarantine_key,
            index_sha256=index_sha256,
            config=rules,
            known_hashes=known,
        )
    if reused is not None:
        summary = reused
        context.log.info(
            f"{partition}: index, rules and known duplicates unchanged since the last clean "
            f"({summary.total} clips); not decoded again"
        )
    else:
        context.log.info(
            f"{partition}: cleaning; {len(known)} hashes known from {len(others)} other partitions"
        )
        summary = run_clean(
            read_index_rows(lake_store, layout.audio_index_key(partition)),
            raw_store,
            lake_store,
            kept_key=kept_key,
            quarantine_key=quarantine_key,
            config=rules,
            known_hashes=known,
            workers=config.workers or None,
            progress=lambda p: context.log.info(str(p)),
            index_sha256=index_sha256,
        )
    context.log.info(summary.funnel_text())
    d = summary.to_dict()
    rate = summary.total / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    return {
        "dagster/row_count": summary.kept,
        "kept_path": dg.MetadataValue.path(lake_store.url(layout.cleaned_kept_key(partition))),
        "quarantine_path": dg.MetadataValue.path(lake_store.url(layout.cleaned_quarantine_key(partition))),
        "input_rows": summary.total,
        "kept": summary.kept,
        "quarantined": summary.quarantined,
        "kept_hours": round(summary.kept_hours, 4),
        "quarantined_hours": round(summary.quarantined_hours, 4),
        "drop_funnel": md_counts({k: v for k, v in d["funnel"].items() if v}, "first reason", REASONS),
        "reasons_any": md_counts({k: v for k, v in d["reason_counts"].items() if v}, "reason", REASONS),
        "flags": md_counts({k: v for k, v in d["flag_counts"].items() if v}, "flag", FLAGS),
        "duration_histogram": md_kept_quarantined_histogram(
            d["duration_hist"]["labels"], d["duration_hist"]["kept"], d["duration_hist"]["quarantined"]
        ),
        "rms_histogram": md_kept_quarantined_histogram(
            d["rms_hist"]["labels"], d["rms_hist"]["kept"], d["rms_hist"]["quarantined"]
        ),
        "known_hashes_from_other_partitions": len(known),
        "elapsed_s": round(summary.elapsed_s, 2),
        "clips_per_s": round(rate, 1),
        "reused_previous_clean": reused is not None,
    }
