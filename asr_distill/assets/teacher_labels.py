"""``teacher_labels``: every shard sample pseudo-labelled by the teacher on a Ray actor pool.

The stage's protocol (change detection, labels versions, finished shards, ``current.json``) lives in
:func:`asr_distill.stages.labels.run_labels`; this asset builds the actor pool and turns the summary
into metadata and checks.
"""

import contextlib
import functools
from typing import Any

import dagster as dg
from dagster_ray import RayResource
from pydantic import Field

from asr_distill import lake as layout
from asr_distill.assets._metadata import PartitionFindings, md_counts, md_table, partition_check_results
from asr_distill.assets._policies import (
    IO_RETRY,
    LABELS_BACKFILL,
    materialize_partitions,
    permanent_errors_fail_fast,
)
from asr_distill.assets.webdataset_shards import webdataset_shards
from asr_distill.partitions import raw_prefix_partitions, run_partition_keys
from asr_distill.resources import StorageResource
from asr_distill.resources.ray import ensure_connected, workers_on_this_machine
from asr_distill.resources.teacher import TeacherResource
from asr_distill.stages.labels import (
    ERROR_REASONS,
    QUALITY_FLAGS,
    LabelPool,
    LabelsConfig,
    LabelsIncomplete,
    LabelsRecord,
    QualityConfig,
    WebDatasetShardReader,
    read_labels,
    references,
    run_labels,
)
from asr_distill.stages.labels.longform import partition_longform_rates
from asr_distill.stages.labels.verify import (
    DEFAULT_MAX_FLAG_RATES,
    corpus_error_rates,
    count_labels,
    coverage_problems,
    flag_rate_problems,
)
from asr_distill.stages.progress import to_log
from asr_distill.storage import Storage
from asr_distill.tableio import read_table


class TeacherLabelsConfig(dg.Config):
    quality: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of QualityConfig (flag thresholds), e.g. {'max_chars_per_second': 25}.",
    )
    max_flag_rates: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_FLAG_RATES),
        description="Blocking check: the highest share of labels that may carry each flag.",
    )
    max_error_row_rate: float = Field(
        default=0.05, description="Blocking check: the highest share of samples without a label."
    )
    max_teacher_wer: float = Field(
        default=0.35,
        description="Blocking check: corpus WER (CER for zh/ja/ko) of the teacher against reference texts.",
    )
    min_reference_units: int = Field(
        default=50,
        description=(
            "The WER check judges a partition only with at least this many reference words (characters "
            "for CER); below it the rate is reported, not failed."
        ),
    )
    verify_fingerprint: bool = Field(
        default=False,
        description=(
            "When the teacher config and shards are unchanged since the current labels, the step ends "
            "without starting actors. True: start them anyway and compare the teacher fingerprint "
            "(catches a model file replaced at the same path)."
        ),
    )

    def labels_config(self) -> LabelsConfig:
        return LabelsConfig(
            quality=QualityConfig.from_dict(self.quality),
            max_flag_rates=dict(self.max_flag_rates),
            max_error_row_rate=self.max_error_row_rate,
            max_teacher_wer=self.max_teacher_wer,
            min_reference_units=self.min_reference_units,
        )


@dg.asset(
    partitions_def=raw_prefix_partitions,
    retry_policy=IO_RETRY,
    backfill_policy=LABELS_BACKFILL,
    deps=[webdataset_shards],
    pool="gpu",
    group_name="distill",
    kinds={"ray", "parquet"},
    description=(
        "Teacher pseudo-labels for every shard sample (text, language, log-probability, compression "
        "ratio, quality flags, WER against references), one Parquet per shard, versioned by the teacher "
        "fingerprint. Runs on the Ray cluster of the `ray_cluster` resource."
    ),
)
@permanent_errors_fail_fast()
def teacher_labels(
    context: dg.AssetExecutionContext,
    config: TeacherLabelsConfig,
    lake: StorageResource,
    ray_cluster: RayResource,
    teacher: TeacherResource,
) -> dg.MaterializeResult:
    store = lake.get()
    try:
        cfg = config.labels_config()
    except ValueError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    with contextlib.ExitStack() as actors:

        @functools.cache
        def pool() -> LabelPool:
            """One actor pool for every partition of the run: the teacher loads once per run, not per
            partition, and only when a partition has something to label."""
            ensure_connected(ray_cluster, context)
            context.log.info(
                f"starting {teacher.num_actors} {teacher.backend} teacher actor(s) "
                f"({teacher.num_cpus:g} CPU, {teacher.num_gpus:g} GPU each) on {ray_cluster.name}"
            )
            return actors.enter_context(
                LabelPool(teacher.teacher_config(), teacher.pool_config(), cfg.quality)
            )

        return materialize_partitions(
            context,
            lambda p: {
                **_label_partition(context, config, cfg, store, ray_cluster, teacher, p, pool),
                **_longform_metadata(store, p),
            },
        )


def _label_partition(
    context: dg.AssetExecutionContext,
    config: TeacherLabelsConfig,
    cfg: LabelsConfig,
    store: Storage,
    ray_cluster: RayResource,
    teacher: TeacherResource,
    partition: str,
    pool: Any,
) -> dict[str, Any]:
    try:
        s = run_labels(
            store,
            partition,
            cfg,
            teacher=teacher.teacher_config(),
            pool=pool,
            reader=_reader(store, ray_cluster),
            force=config.verify_fingerprint,
            progress=to_log(context.log.info),
        )
    except LabelsIncomplete as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={
                "failed_shards": md_table(
                    ["shard", "attempts", "kind", "error"],
                    [(f.shard_id, f.attempts, f.kind, f.error[:200]) for f in exc.failures],
                )
            },
        ) from None
    counts, rec = s.counts, s.record
    return {
        "dagster/row_count": counts.rows,
        "labels_prefix": dg.MetadataValue.path(store.url(s.prefix)),
        "labels_version": s.version,
        "teacher_fingerprint": rec.fingerprint,
        "teacher": dg.MetadataValue.json(rec.teacher_config),
        "teacher_model_id": str((rec.teacher or {}).get("model_id", "")),
        "samples": counts.rows,
        "labelled": counts.labelled,
        "error_rows": counts.errors,
        "flagged": counts.flagged,
        "shards": s.shards,
        "shards_labelled": s.shards_labelled,
        "shards_skipped": s.shards_skipped,
        "swept_temporaries": s.swept_temporaries,
        "retries": s.retries,
        "actor_failures": s.actor_failures,
        "audio_hours": round(counts.audio_s / 3600, 4),
        "realtime_factor": round(s.realtime_factor, 2) if s.realtime_factor else None,
        "teacher_decode_s": round(s.decode_s, 2),
        "flags": md_counts(counts.flags, "flag", QUALITY_FLAGS),
        "error_reasons": md_counts(counts.error_reasons, "reason", ERROR_REASONS),
        "teacher_vs_reference": md_table(
            ["metric", "corpus rate", "samples", "reference units"],
            [(w.metric, round(w.rate, 4), w.samples, w.reference_units) for w in s.error_rates],
        )
        if s.error_rates
        else dg.MetadataValue.md("_no reference texts_"),
        "wer_tiers": md_table(["per-sample WER", "samples"], list(s.wer_tiers.items())),
        "languages": _language_table(s.languages),
    }


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"


def _language_table(languages: list[Any]) -> dg.MetadataValue:
    """Per language: declared vs identified, agreement, identification probability, WER/CER."""
    if not languages:
        return dg.MetadataValue.md("_no labels_")
    return md_table(
        [
            "language",
            "samples",
            "declared",
            "identified",
            "agreement",
            "identified instead",
            "mean p",
            "metric",
            "rate",
            "with reference",
        ],
        [
            (
                x.language,
                x.samples,
                x.declared,
                x.identified,
                _pct(x.agreement),
                ", ".join(f"{k}: {v}" for k, v in x.confusions.items()),
                "" if x.mean_probability is None else round(x.mean_probability, 3),
                x.metric or "",
                "" if x.error_rate is None else round(x.error_rate, 4),
                x.samples_with_reference,
            )
            for x in languages
        ],
    )


def _reader(store: Storage, ray_cluster: RayResource) -> WebDatasetShardReader:
    """On the private local cluster the actors get the lake store as configured for this run (its
    settings and credentials never leave the machine); on a remote cluster they open the lake URI from
    their own environment (their own OSS_* variables or RAM role)."""
    return WebDatasetShardReader(store.uri, store=store if workers_on_this_machine(ray_cluster) else None)


def _longform_metadata(store: Storage, partition: str) -> dict[str, Any]:
    """Recordings whose transcript covers the whole recording: the teacher's labels of their kept
    segments, joined in order, against that transcript (nothing for a partition without them)."""
    current = LabelsRecord.read_current(store, partition)
    lf = (
        None
        if current is None
        else partition_longform_rates(store, partition, current.labels, current.cer_languages)
    )
    if lf is None or lf.empty:
        return {}
    worst = sorted(lf.recordings, key=lambda r: -1.0 if r.rate is None else r.rate, reverse=True)
    meta: dict[str, Any] = {
        "longform_recordings_scored": len(lf.recordings),
        "longform_recordings_unscored": lf.unscored,
        "longform_vs_reference": md_table(
            ["recording", "segments", "kept s", "reference units", "metric", "rate"],
            [
                (
                    r.source_key,
                    r.segments,
                    round(r.kept_s, 1),
                    r.words,
                    r.metric,
                    "-" if r.rate is None else round(r.rate, 4),
                )
                for r in worst[:20]  # the worst 20: a small table
            ],
        ),
    }
    for metric, rate in lf.corpus.items():
        meta[f"longform_corpus_{metric}"] = round(rate, 4)
    return meta


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "labels_cover_samples",
            asset=teacher_labels,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description="every shard sample has exactly one labels row: a label, or an error row with a reason",
        ),
        dg.AssetCheckSpec(
            "labels_flag_rates",
            asset=teacher_labels,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description="the share of labels carrying each flag (and of error rows) is under its threshold",
        ),
        dg.AssetCheckSpec(
            "labels_teacher_wer",
            asset=teacher_labels,
            blocking=True,
            partitions_def=raw_prefix_partitions,
            description="where reference texts exist, the teacher's corpus WER (CER) is under the threshold",
        ),
    ],
    can_subset=True,
    name="teacher_labels_checks",
)
def teacher_labels_checks(context: dg.AssetCheckExecutionContext, lake: StorageResource):  # type: ignore[no-untyped-def]
    store = lake.get()
    selected = {k.name for k in context.selected_asset_check_keys}
    yield from partition_check_results(
        selected, run_partition_keys(context), lambda p: _label_problems(store, p, selected)
    )


def _label_problems(store: Storage, partition: str, selected: set[str]) -> PartitionFindings:
    """(check name, problems, metadata) of one partition for every selected labels check."""
    current = LabelsRecord.read_current(store, partition)
    if current is None:
        raise dg.Failure(
            description=f"{partition}: no current labels (teacher_labels/{partition}/current.json)"
        )
    thresholds = current.thresholds
    labels = read_labels(store, current.labels)
    index = read_table(store, layout.shard_layout(partition).index_key)
    base = {"labels_version": current.version, "rows": labels.num_rows}
    if "labels_cover_samples" in selected:
        problems = coverage_problems(index, labels)
        yield "labels_cover_samples", problems, {**base, "shard_samples": index.num_rows}
    if "labels_flag_rates" in selected:
        counts = count_labels(labels)
        problems = flag_rate_problems(counts, thresholds["max_flag_rates"], thresholds["max_error_row_rate"])
        rates = {f: round(counts.flag_rate(f), 4) for f in sorted(counts.flags)}
        yield "labels_flag_rates", problems, {**base, "flag_rates": dg.MetadataValue.json(rates)}
    if "labels_teacher_wer" in selected:
        wers = corpus_error_rates(labels, references(store, partition, index), current.cer_languages)
        limit = float(thresholds["max_teacher_wer"])
        min_units = int(thresholds.get("min_reference_units", 0))
        problems = [
            {"metric": w.metric, "rate": round(w.rate, 4), "max": limit, "samples": w.samples}
            for w in wers
            if w.rate >= limit and w.reference_units >= min_units
        ]
        meta = {**base, "max_teacher_wer": limit, "samples_with_reference": sum(w.samples for w in wers)}
        meta["reference_units"] = sum(w.reference_units for w in wers)
        meta["min_reference_units"] = min_units
        for w in wers:
            meta[f"corpus_{w.metric}"] = round(w.rate, 4)
        yield "labels_teacher_wer", problems, meta
