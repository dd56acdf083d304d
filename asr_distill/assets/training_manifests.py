"""``training_manifests``: shards + teacher labels -> versioned train/dev/test manifests (Parquet, NeMo, Lhotse)."""

from typing import Any

import dagster as dg
from pydantic import Field

from asr_distill.assets._metadata import check_result, md_counts, md_table
from asr_distill.assets._policies import IO_RETRY
from asr_distill.resources import StorageResource
from asr_distill.stages.manifests import (
    DROP_RULES,
    SPLITS,
    ManifestConfig,
    ManifestInputError,
    check_counts,
    check_durations,
    check_formats,
    check_members,
    check_splits_disjoint,
    load_version,
    read_latest,
    run_manifests,
)
from asr_distill.stages.progress import to_log

TEACHER_LABELS = dg.AssetKey("teacher_labels")


class TrainingManifestsConfig(dg.Config):
    manifest: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Overrides of ManifestConfig fields, e.g. {'max_error_rate': 0.1, 'drop_flags': ['empty_text', "
            "'repeated_ngram'], 'max_duration_s': 30, 'dev_fraction': 0.05, 'test_fraction': 0.05, "
            "'split_salt': 'asr_distill-splits-v1'}."
        ),
    )
    partitions: list[str] = Field(
        default_factory=list,
        description="Partitions to include (empty: every partition with current labels).",
    )


@dg.asset(
    deps=[TEACHER_LABELS],
    # One manifests step at a time (the instance's default pool limit is 1): each reads every partition's
    # current labels when it starts, so serialised steps never miss a partition labelled before them.
    pool="manifests",
    retry_policy=IO_RETRY,
    group_name="distill",
    kinds={"parquet", "json"},
    description=(
        "Every labelled partition joined (shard index, teacher labels, clean metadata), filtered by label "
        "quality (WER < 10 % where a reference exists, else the serious quality flags), split into "
        "speaker-disjoint train/dev/test by a stable hash; written as a new version under "
        "training_manifests/<version>/ (Parquet, NeMo tarred JSONL + tar lists, Lhotse cuts)."
    ),
)
def training_manifests(
    context: dg.AssetExecutionContext, config: TrainingManifestsConfig, lake: StorageResource
) -> dg.MaterializeResult:
    store = lake.get()
    try:
        cfg = ManifestConfig.from_dict(config.manifest)
    except (TypeError, ValueError) as exc:
        raise dg.Failure(f"bad manifest config: {exc}", allow_retries=False) from exc
    try:
        s = run_manifests(store, cfg, partitions=config.partitions or None, progress=to_log(context.log.info))
    except ManifestInputError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    st, layout, teachers = s.stats, s.layout, s.teachers
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": st["samples"],
            "version": s.version,
            "reused": s.reused,
            "manifest_prefix": dg.MetadataValue.path(store.url(layout.prefix)),
            "parquet_manifest": dg.MetadataValue.path(store.url(layout.manifest_key)),
            "samples": st["samples"],
            "hours": round(st["hours"], 4),
            "dropped": st["dropped"],
            "per_split": md_table(
                ["split", "samples", "hours", "speakers"],
                [(k, v["samples"], round(v["hours"], 4), v["speakers"]) for k, v in st["splits"].items()],
            ),
            "per_language": md_table(
                ["language", "samples", "hours", "speakers"],
                [
                    (lang, v["samples"], round(v["hours"], 4), v["speakers"])
                    for lang, v in st.get("languages", {}).items()
                ],
            ),
            "per_split_language": md_table(
                ["split", "language", "samples", "hours"],
                [
                    (r["split"], r["language"], r["samples"], round(r["hours"], 4))
                    for r in st["splits_by_language"]
                ],
            ),
            "drops_by_rule": md_counts(st["drops"], "rule", DROP_RULES),
            "per_partition": md_table(
                ["partition", "index samples", "label rows", "accounted", "kept", "dropped", "teacher"],
                [
                    (
                        c["partition"],
                        c["index_samples"],
                        c["label_rows"],
                        c["accounted"],
                        c["kept"],
                        c["dropped"],
                        teachers[c["partition"]]["fingerprint"][:16],
                    )
                    for c in st["partitions"]
                ],  # fmt: skip
            ),
            "bucket_edges": dg.MetadataValue.json(st["bucket_edges"]),
            "buckets": md_table(
                ["bucket", "lo_s", "hi_s", *SPLITS, "hours"],
                [
                    (b["bucket"], b["lo_s"], b["hi_s"], *(b[x] for x in SPLITS), round(b["hours"], 4))
                    for b in st["buckets"]
                ],
            ),
            "teacher_fingerprints": dg.MetadataValue.json(s.teacher_fingerprints),
            "config_fingerprint": s.config_fingerprint,
            "config": dg.MetadataValue.json(s.config),
            "elapsed_s": round(s.elapsed_s, 3),
            "swept_temporaries": s.swept_temporaries,
        }
    )


def _result(name: str, problems: list[dict[str, Any]], checked: int, version: str) -> dg.AssetCheckResult:
    return check_result(name, problems, {"checked": checked, "version": version})


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "manifests_splits_disjoint",
            asset=training_manifests,
            blocking=True,
            description="no sample key and no known speaker in more than one split",
        ),
        dg.AssetCheckSpec(
            "manifests_counts_reconcile",
            asset=training_manifests,
            blocking=True,
            description="per partition and rule: kept + dropped = shard samples U label rows; inputs unchanged",
        ),
        dg.AssetCheckSpec(
            "manifests_rows_point_to_shard_members",
            asset=training_manifests,
            blocking=True,
            description="every row is a sample of index.parquet and its tar holds that member at that offset; "
            "the NeMo and Lhotse files hold the same rows",
        ),
        dg.AssetCheckSpec(
            "manifests_durations_in_bounds",
            asset=training_manifests,
            blocking=True,
            description="durations positive, within the configured bounds and their bucket",
        ),
    ],
    can_subset=True,
    name="training_manifests_checks",
)
def training_manifests_checks(context: dg.AssetCheckExecutionContext, lake: StorageResource):  # type: ignore[no-untyped-def]
    store = lake.get()
    latest = read_latest(store)
    selected = {k.name for k in context.selected_asset_check_keys}
    if latest is None:
        for name in sorted(selected):
            yield dg.AssetCheckResult(check_name=name, passed=False, metadata={"problem": "no latest.json"})
        return
    version = latest["version"]
    record, manifest, dropped = load_version(store, version)
    cfg = ManifestConfig.from_dict(record["config"])
    if "manifests_splits_disjoint" in selected:
        yield _result(
            "manifests_splits_disjoint", check_splits_disjoint(manifest, cfg), manifest.num_rows, version
        )
    if "manifests_counts_reconcile" in selected:
        problems = check_counts(store, record, manifest, dropped)
        yield _result("manifests_counts_reconcile", problems, len(record["counts"]), version)
    if "manifests_rows_point_to_shard_members" in selected:
        problems = check_members(store, manifest, cfg.max_header_reads) + check_formats(
            store, record, manifest
        )
        yield _result("manifests_rows_point_to_shard_members", problems, manifest.num_rows, version)
    if "manifests_durations_in_bounds" in selected:
        yield _result(
            "manifests_durations_in_bounds", check_durations(manifest, cfg), manifest.num_rows, version
        )
