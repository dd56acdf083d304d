"""``teacher_labels``: every shard sample pseudo-labelled by the teacher on a Ray actor pool.

Layout (``asr_distill.lake``): one labels Parquet per shard under ``teacher_labels/<p>/<version>/``,
``<version>`` derived from the teacher fingerprint, so a new teacher writes a new version beside the
old ones. ``current.json`` names the version downstream stages read; it is replaced (atomically) only
when every shard of the partition has its labels.
"""

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
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
    QualityConfig,
    ShardFailure,
    ShardResult,
    WebDatasetShardReader,
    labels_version,
    write_labels,
)
from asr_distill.stages.labels.verify import (
    DEFAULT_MAX_FLAG_RATES,
    corpus_error_rates,
    count_labels,
    coverage_problems,
    flag_rate_problems,
    wer_tiers,
)
from asr_distill.stages.shards.layout import shard_layout
from asr_distill.stages.shards.writer import read_table
from asr_distill.storage import Storage
from asr_distill.teachers.base import canonical_json

META_SHARD_SHA256 = b"asr_distill.shard_sha256"
NO_SHARDS_VERSION = "no-shards"  # current.json of a partition without kept clips


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
    verify_fingerprint: bool = Field(
        default=False,
        description=(
            "When the teacher config and shards are unchanged since the current labels, the step ends "
            "without starting actors. True: start them anyway and compare the teacher fingerprint "
            "(catches a model file replaced at the same path)."
        ),
    )


def _config_dict(teacher: TeacherResource) -> dict[str, Any]:
    cfg = teacher.teacher_config()
    return {"backend": type(cfg).backend, **json.loads(canonical_json(dataclasses.asdict(cfg)))}  # type: ignore[call-overload]


def _read_parquet(store: Storage, key: str) -> pa.Table:
    return pq.read_table(pa.BufferReader(store.read_bytes(key)))


def _labelled_sha(store: Storage, key: str) -> str | None:
    """The shard sha256 recorded in a labels file, or None when there is no (readable) file."""
    if not store.exists(key):
        return None
    try:
        meta = pq.read_schema(pa.BufferReader(store.read_bytes(key))).metadata or {}
    except (pa.ArrowException, OSError):
        return None
    value = meta.get(META_SHARD_SHA256)
    return value.decode() if value else None


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
            quality = QualityConfig(**config.quality)
            return actors.enter_context(LabelPool(teacher.teacher_config(), teacher.pool_config(), quality))

        return materialize_partitions(
            context, lambda p: _label_partition(context, config, store, ray_cluster, teacher, p, pool)
        )


def _label_partition(
    context: dg.AssetExecutionContext,
    config: TeacherLabelsConfig,
    store: Storage,
    ray_cluster: RayResource,
    teacher: TeacherResource,
    partition: str,
    get_pool: Callable[[], LabelPool],
) -> dict[str, Any]:
    shards = read_table(store, shard_layout(partition, layout.SHARDS).shards_key)
    index = read_table(store, shard_layout(partition, layout.SHARDS).index_key)
    sha_of = dict(
        zip(shards.column("shard_key").to_pylist(), shards.column("sha256").to_pylist(), strict=True)
    )
    quality = QualityConfig(**config.quality)
    teacher_cfg = _config_dict(teacher)
    thresholds = {
        "max_flag_rates": dict(config.max_flag_rates),
        "max_error_row_rate": config.max_error_row_rate,
        "max_teacher_wer": config.max_teacher_wer,
    }
    try:  # unknown flag names fail before any work
        flag_rate_problems(count_labels(_empty_labels()), config.max_flag_rates, 1.0)
    except ValueError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None

    current = layout.read_current_labels(store, partition)
    unchanged = (
        current is not None
        and not config.verify_fingerprint
        and current.get("teacher_config") == teacher_cfg
        and current.get("quality") == quality.to_dict()
        and current.get("shards") == sha_of
        and all(store.exists(k) for k in current.get("labels", []))
    )
    t0 = time.monotonic()
    summary: dict[str, Any]
    if not sha_of:
        version, fingerprint, teacher_info = NO_SHARDS_VERSION, "", {}
        context.log.warning(f"{partition}: the partition has no shards (no kept clips); nothing to label")
        summary = {"shards_seen": 0, "shards_skipped": 0, "shards_labelled": 0}
    elif unchanged:
        assert current is not None
        version, fingerprint, teacher_info = current["version"], current["fingerprint"], current["teacher"]
        context.log.info(
            f"{partition}: labels {version} are current for {len(sha_of)} shards (same teacher config "
            "and shards); no actors started"
        )
        summary = {"shards_seen": len(sha_of), "shards_skipped": len(sha_of), "shards_labelled": 0}
    else:
        pool = get_pool()
        fingerprint, teacher_info = pool.fingerprint, pool.teacher_info
        version = labels_version(fingerprint)
        done = {
            sid
            for sid, sha in sha_of.items()
            if _labelled_sha(store, layout.labels_key(partition, version, sid)) == sha
        }
        todo = len(sha_of) - len(done)
        context.log.info(
            f"{partition}: teacher {fingerprint[:16]} -> labels {version}; {len(done)} of "
            f"{len(sha_of)} shards already labelled, {todo} to go"
        )
        progress = {"shards": 0, "rows": 0, "audio_s": 0.0}

        def on_result(r: ShardResult) -> None:
            meta = dict(r.table.schema.metadata or {})
            meta[META_SHARD_SHA256] = sha_of[r.shard_id].encode()
            # Measured decode times differ run to run: they go to the metadata, not the files, so
            # the same shards and teacher give byte-identical labels (and manifest versions).
            i = r.table.schema.get_field_index("decode_time_s")
            table = r.table.set_column(i, "decode_time_s", pa.nulls(r.table.num_rows, pa.float64()))
            write_labels(
                store,
                layout.labels_key(partition, version, r.shard_id),
                table.replace_schema_metadata(meta),
            )
            progress["shards"] += 1
            progress["rows"] += r.stats.rows
            progress["audio_s"] += r.stats.audio_s
            wall = time.monotonic() - t0
            context.log.info(
                f"{partition}: {progress['shards']}/{todo} shards, {progress['rows']} samples "
                f"({r.stats.errors} errors, {r.stats.flagged} flagged in {r.shard_id.rsplit('/', 2)[-2]}/"
                f"{r.shard_id.rsplit('/', 1)[-1]}); {progress['audio_s'] / max(wall, 1e-9):.1f}x real time"
            )

        def on_failure(f: ShardFailure) -> None:
            context.log.error(
                f"{partition}: shard {f.shard_id} failed after {f.attempts} attempt(s): {f.kind}: {f.error}"
            )

        run = pool.run(
            sorted(sha_of), _reader(store, ray_cluster), on_result, done=done, on_failure=on_failure
        )
        summary = run.to_dict()
        if run.failures:
            raise dg.Failure(
                description=(
                    f"{partition}: {len(run.failures)} of {len(sha_of)} shards could not be labelled "
                    f"({', '.join(sorted({f.kind for f in run.failures}))}); the others are written and a "
                    "re-run labels only the missing ones"
                ),
                metadata={
                    "failed_shards": md_table(
                        ["shard", "attempts", "kind", "error"],
                        [(f.shard_id, f.attempts, f.kind, f.error[:200]) for f in run.failures],
                    )
                },
            )

    keys = [layout.labels_key(partition, version, sid) for sid in sorted(sha_of)]
    labels = pa.concat_tables([_read_parquet(store, k) for k in keys]) if keys else _empty_labels()
    counts = count_labels(labels)
    references = _references(store, partition, index)
    wers = corpus_error_rates(labels, references, quality.cer_languages)
    record = {
        "version": version,
        "fingerprint": fingerprint,
        "teacher": teacher_info,
        "teacher_config": teacher_cfg,
        "quality": quality.to_dict(),
        "thresholds": thresholds,
        "shards": sha_of,
        "labels": keys,
        "rows": counts.rows,
        "labelled": counts.labelled,
        "errors": counts.errors,
    }
    blob = json.dumps(record, sort_keys=True, indent=1).encode()
    store.write_bytes(layout.labels_summary_key(partition, version), blob)
    store.write_bytes(layout.labels_current_key(partition), blob)  # last: readers switch only now
    wall = time.monotonic() - t0
    rtf = counts.audio_s / summary["wall_s"] if summary.get("wall_s") else None
    context.log.info(
        f"{partition}: labels for {counts.rows} samples ({counts.errors} errors, {counts.flagged} flagged), "
        f"labels {version} current; {wall:.1f}s"
    )
    return {
        "dagster/row_count": counts.rows,
        "labels_prefix": dg.MetadataValue.path(store.url(layout.labels_prefix(partition, version))),
        "labels_version": version,
        "teacher_fingerprint": fingerprint,
        "teacher": dg.MetadataValue.json(teacher_cfg),
        "teacher_model_id": str(teacher_info.get("model_id", "")),
        "samples": counts.rows,
        "labelled": counts.labelled,
        "error_rows": counts.errors,
        "flagged": counts.flagged,
        "shards": len(sha_of),
        "shards_labelled": summary.get("shards_labelled", 0),
        "shards_skipped": summary.get("shards_skipped", 0),
        "retries": summary.get("retries", 0),
        "actor_failures": summary.get("actor_failures", 0),
        "audio_hours": round(counts.audio_s / 3600, 4),
        "realtime_factor": round(rtf, 2) if rtf else None,
        "teacher_decode_s": round(float(summary.get("decode_s", 0.0)), 2),
        "flags": md_counts(counts.flags, "flag", QUALITY_FLAGS),
        "error_reasons": md_counts(counts.error_reasons, "reason", ERROR_REASONS),
        "teacher_vs_reference": md_table(
            ["metric", "corpus rate", "samples", "reference units"],
            [(w.metric, round(w.rate, 4), w.samples, w.reference_units) for w in wers],
        )
        if wers
        else dg.MetadataValue.md("_no reference texts_"),
        "wer_tiers": md_table(["per-sample WER", "samples"], list(wer_tiers(labels).items())),
    }


def _reader(store: Storage, ray_cluster: RayResource) -> WebDatasetShardReader:
    """On the private local cluster the actors get the lake store as configured for this run (its
    settings and credentials never leave the machine); on a remote cluster they open the lake URI from
    their own environment (their own OSS_* variables or RAM role)."""
    return WebDatasetShardReader(store.uri, store=store if workers_on_this_machine(ray_cluster) else None)


def _empty_labels() -> pa.Table:
    from asr_distill.stages.labels import LABELS_SCHEMA

    return LABELS_SCHEMA.empty_table()


def _references(store: Storage, partition: str, index: pa.Table) -> dict[str, tuple[str, str | None]]:
    """sample key -> (reference text, language) from the clean stage's kept table."""
    kept = read_table(store, layout.cleaned_kept_key(partition)).select(
        ["key", "reference_text", "label_language"]
    )
    by_source = {k: (t, lang) for k, t, lang in zip(*kept.to_pydict().values(), strict=True) if t is not None}
    return {
        sample: by_source[source]
        for sample, source in zip(
            index.column("sample_key").to_pylist(), index.column("source_key").to_pylist(), strict=True
        )
        if source in by_source
    }


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
    current = layout.read_current_labels(store, partition)
    if current is None:
        raise dg.Failure(
            description=f"{partition}: no current labels (teacher_labels/{partition}/current.json)"
        )
    thresholds = current["thresholds"]
    labels = (
        pa.concat_tables([_read_parquet(store, k) for k in current["labels"]])
        if current["labels"]
        else _empty_labels()
    )
    index = read_table(store, shard_layout(partition, layout.SHARDS).index_key)
    base = {"labels_version": current["version"], "rows": labels.num_rows}
    if "labels_cover_samples" in selected:
        problems = coverage_problems(index, labels)
        yield "labels_cover_samples", problems, {**base, "shard_samples": index.num_rows}
    if "labels_flag_rates" in selected:
        counts = count_labels(labels)
        problems = flag_rate_problems(counts, thresholds["max_flag_rates"], thresholds["max_error_row_rate"])
        rates = {f: round(counts.flag_rate(f), 4) for f in sorted(counts.flags)}
        yield "labels_flag_rates", problems, {**base, "flag_rates": dg.MetadataValue.json(rates)}
    if "labels_teacher_wer" in selected:
        cer = frozenset(current["quality"].get("cer_languages", []))
        wers = corpus_error_rates(labels, _references(store, partition, index), cer)
        limit = float(thresholds["max_teacher_wer"])
        problems = [
            {"metric": w.metric, "rate": round(w.rate, 4), "max": limit, "samples": w.samples}
            for w in wers
            if w.rate >= limit
        ]
        meta = {**base, "max_teacher_wer": limit, "samples_with_reference": sum(w.samples for w in wers)}
        for w in wers:
            meta[f"corpus_{w.metric}"] = round(w.rate, 4)
        yield "labels_teacher_wer", problems, meta
