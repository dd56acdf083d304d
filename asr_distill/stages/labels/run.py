"""The labels stage's entry point: :func:`run_labels` labels one partition's shards and publishes them.

The protocol, in order:

1. The partition's shards (``shards.parquet``: shard key -> BLAKE3 checksum) are read from the lake.
2. Change detection: when ``current.json`` names the same teacher config, the same quality config and the
   same shards, and every labels file it lists exists, the labels are current: no actor starts (unless
   ``force``, which starts the teacher and compares its fingerprint, catching a model replaced in place).
3. Otherwise the teacher's fingerprint gives the labels version (:func:`labels_version`); shards whose
   labels file under that version carries the shard's BLAKE3 checksum in its footer (``asr_distill.shard_blake3``)
   are finished; the rest are labelled on the pool. Each labels file is stamped with its shard's BLAKE3
   and written with its timing fields blanked (measured decode times vary run to run; they go to the
   summary, not the files, so the same shards and teacher give byte-identical labels).
4. Only when every shard has its labels, ``_SUMMARY.json`` and then ``current.json`` are written
   (:class:`~asr_distill.stages.labels.record.LabelsRecord`). A shard that failed raises
   :class:`LabelsIncomplete` before that: the finished shards stay, a re-run labels only the missing ones.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from asr_distill import lake as layout
from asr_distill.stages.labels.core import write_labels
from asr_distill.stages.labels.inputs import ShardReader
from asr_distill.stages.labels.pool import LabelPool, ShardFailure, ShardResult
from asr_distill.stages.labels.quality import QualityConfig
from asr_distill.stages.labels.record import NO_SHARDS_VERSION, LabelsRecord
from asr_distill.stages.labels.schema import LABELS_SCHEMA
from asr_distill.stages.labels.verify import (
    DEFAULT_MAX_FLAG_RATES,
    CorpusErrorRate,
    LabelCounts,
    LanguageStats,
    corpus_error_rates,
    count_labels,
    flag_rate_problems,
    language_stats,
    wer_tiers,
)
from asr_distill.stages.leftovers import sweep_stage_folder
from asr_distill.stages.progress import ProgressFn, Reporter
from asr_distill.storage import Storage
from asr_distill.tableio import read_parquet_metadata, read_table
from asr_distill.teachers.base import TeacherConfig, canonical_json, labels_version

META_SHARD_BLAKE3 = b"asr_distill.shard_blake3"


@dataclass(frozen=True)
class LabelsConfig:
    """Quality thresholds of the flags, and the thresholds of the blocking checks (kept in the record)."""

    quality: QualityConfig = field(default_factory=QualityConfig)
    max_flag_rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_FLAG_RATES))
    max_error_row_rate: float = 0.05
    max_teacher_wer: float = 0.35
    # A corpus rate over a handful of words is noise (2 clips, 14 words: one misheard word moves it by
    # 0.07): below this many reference words (characters for CER) the check reports the rate, not a failure.
    min_reference_units: int = 50

    def __post_init__(self) -> None:  # unknown flag names fail before any work
        flag_rate_problems(count_labels(empty_labels()), self.max_flag_rates, 1.0)

    def thresholds(self) -> dict[str, Any]:
        return {
            "max_flag_rates": dict(self.max_flag_rates),
            "max_error_row_rate": self.max_error_row_rate,
            "max_teacher_wer": self.max_teacher_wer,
            "min_reference_units": self.min_reference_units,
        }


class LabelsIncomplete(Exception):
    """Some shards could not be labelled; the others are written and a re-run labels only the missing."""

    def __init__(self, partition: str, failures: list[ShardFailure], shards: int) -> None:
        self.partition, self.failures, self.shards = partition, failures, shards
        kinds = ", ".join(sorted({f.kind for f in failures}))
        super().__init__(
            f"{partition}: {len(failures)} of {shards} shards could not be labelled ({kinds}); the others "
            "are written and a re-run labels only the missing ones"
        )


@dataclass(frozen=True)
class LabelsSummary:
    """What :func:`run_labels` did and what the partition's current labels hold."""

    partition: str
    record: LabelsRecord
    prefix: str  # lake prefix of the labels version
    counts: LabelCounts
    error_rates: list[CorpusErrorRate]  # teacher vs reference texts, per metric
    wer_tiers: dict[str, int]
    shards: int
    languages: list[LanguageStats] = field(default_factory=list)  # declared vs identified, WER/CER
    shards_labelled: int = 0
    shards_skipped: int = 0
    retries: int = 0
    actor_failures: int = 0
    decode_s: float = 0.0
    realtime_factor: float | None = None  # audio of every current label per wall second of this run
    reused: bool = False  # the labels were current: no actor started
    elapsed_s: float = 0.0
    swept_temporaries: int = 0  # stale .asrd-tmp-* leftovers of killed writes removed from the folder

    @property
    def version(self) -> str:
        return self.record.version


def teacher_config_dict(cfg: TeacherConfig) -> dict[str, Any]:
    """The teacher's backend and config as plain JSON values (what change detection compares)."""
    return {"backend": type(cfg).backend, **json.loads(canonical_json(dataclasses.asdict(cfg)))}  # type: ignore[call-overload]


def empty_labels() -> pa.Table:
    return LABELS_SCHEMA.empty_table()


def conform_labels(table: pa.Table) -> pa.Table:
    """A labels table with every column of :data:`LABELS_SCHEMA`: a column added since the file was
    written (``detected_language``) is all null, as in a row where the teacher did not report it."""
    for i, f in enumerate(LABELS_SCHEMA):
        if f.name not in table.column_names:
            table = table.add_column(min(i, table.num_columns), f, pa.nulls(table.num_rows, f.type))
    return table


def read_labels(lake: Storage, keys: list[str]) -> pa.Table:
    """The labels files ``keys`` as one table (the empty labels table when there are none); files written
    before a column was added get it as nulls (:func:`conform_labels`)."""
    if not keys:
        return empty_labels()
    return pa.concat_tables([conform_labels(read_table(lake, k)) for k in keys], promote_options="default")


def labelled_blake3(lake: Storage, key: str) -> str | None:
    """The shard BLAKE3 stamped in a labels file's footer, or None when there is no (readable) file."""
    meta = read_parquet_metadata(lake, key)
    value = (meta or {}).get(META_SHARD_BLAKE3)
    return value.decode() if value else None


def stamped(table: pa.Table, shard_blake3: str) -> pa.Table:
    """A labels table as written: its shard's BLAKE3 in the footer, timing fields blanked."""
    meta = dict(table.schema.metadata or {})
    meta[META_SHARD_BLAKE3] = shard_blake3.encode()
    i = table.schema.get_field_index("decode_time_s")
    table = table.set_column(i, "decode_time_s", pa.nulls(table.num_rows, pa.float64()))
    return table.replace_schema_metadata(meta)


def references(lake: Storage, partition: str, index: pa.Table) -> dict[str, tuple[str, str | None]]:
    """sample key -> (reference text, declared language or None) from the clean stage's kept table.

    The declared language (the sidecar's or the index's), not the clean stage's ``label_language``
    (which falls back to its configured default): a clip without a declaration is scored in the
    language the teacher identified.
    """
    kept = read_table(lake, layout.cleaned_kept_key(partition)).select(["key", "reference_text", "language"])
    by_source = {k: (t, lang) for k, t, lang in zip(*kept.to_pydict().values(), strict=True) if t is not None}
    return {
        sample: by_source[source]
        for sample, source in zip(
            index.column("sample_key").to_pylist(), index.column("source_key").to_pylist(), strict=True
        )
        if source in by_source
    }


def run_labels(
    lake: Storage,
    partition: str,
    config: LabelsConfig,
    *,
    teacher: TeacherConfig,
    pool: Callable[[], LabelPool],
    reader: ShardReader,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> LabelsSummary:
    """Label every shard of ``partition`` not labelled yet by this teacher; publish ``current.json``.

    ``teacher``: the teacher config (change detection); ``pool()``: the actor pool, called only when a
    shard must be labelled (it may be shared across partitions); ``reader``: how actors read shards.
    ``force``: start the teacher even when nothing changed and compare its fingerprint. Raises
    :class:`LabelsIncomplete` when a shard failed (``current.json`` then is not replaced).
    """
    say = Reporter("labels", partition, progress)
    swept = sweep_stage_folder(lake, f"{layout.LABELS}/{partition}/", say)
    sl = layout.shard_layout(partition)
    shards = read_table(lake, sl.shards_key)
    index = read_table(lake, sl.index_key)
    blake3_of = dict(
        zip(shards.column("shard_key").to_pylist(), shards.column("blake3").to_pylist(), strict=True)
    )
    quality = config.quality
    teacher_cfg = teacher_config_dict(teacher)
    current = LabelsRecord.read_current(lake, partition)
    unchanged = (
        current is not None
        and not force
        and current.teacher_config == teacher_cfg
        and current.quality == quality.to_dict()
        and current.shards == blake3_of
        and all(lake.exists(k) for k in current.labels)
    )
    t0 = time.monotonic()
    run_stats: dict[str, Any]
    if not blake3_of:
        version, fingerprint, teacher_info = NO_SHARDS_VERSION, "", {}
        say(f"{partition}: the partition has no shards (no kept clips); nothing to label")
        run_stats = {"shards_skipped": 0, "shards_labelled": 0}
    elif unchanged:
        assert current is not None
        version, fingerprint, teacher_info = current.version, current.fingerprint, current.teacher or {}
        say(
            f"{partition}: labels {version} are current for {len(blake3_of)} shards (same teacher config "
            "and shards); no actors started"
        )
        run_stats = {"shards_skipped": len(blake3_of), "shards_labelled": 0}
    else:
        labels_pool = pool()
        fingerprint, teacher_info = labels_pool.fingerprint, labels_pool.teacher_info
        version = labels_version(fingerprint)
        done = {
            sid
            for sid, sha in blake3_of.items()
            if labelled_blake3(lake, layout.labels_key(partition, version, sid)) == sha
        }
        todo = len(blake3_of) - len(done)
        say(
            f"{partition}: teacher {fingerprint[:16]} -> labels {version}; {len(done)} of "
            f"{len(blake3_of)} shards already labelled, {todo} to go",
            done=len(done),
            total=len(blake3_of),
        )
        counters = {"shards": 0, "rows": 0, "audio_s": 0.0}

        def on_result(r: ShardResult) -> None:
            write_labels(
                lake,
                layout.labels_key(partition, version, r.shard_id),
                stamped(r.table, blake3_of[r.shard_id]),
            )
            counters["shards"] += 1
            counters["rows"] += r.stats.rows
            counters["audio_s"] += r.stats.audio_s
            wall = time.monotonic() - t0
            say(
                f"{partition}: {counters['shards']}/{todo} shards, {counters['rows']} samples "
                f"({r.stats.errors} errors, {r.stats.flagged} flagged in {r.shard_id.rsplit('/', 2)[-2]}/"
                f"{r.shard_id.rsplit('/', 1)[-1]}); {counters['audio_s'] / max(wall, 1e-9):.1f}x real time",
                done=int(counters["shards"]),
                total=todo,
                elapsed_s=wall,
            )

        def on_failure(f: ShardFailure) -> None:
            say(f"{partition}: shard {f.shard_id} failed after {f.attempts} attempt(s): {f.kind}: {f.error}")

        run = labels_pool.run(sorted(blake3_of), reader, on_result, done=done, on_failure=on_failure)
        if run.failures:
            raise LabelsIncomplete(partition, list(run.failures), len(blake3_of))
        run_stats = run.to_dict()

    keys = [layout.labels_key(partition, version, sid) for sid in sorted(blake3_of)]
    labels = read_labels(lake, keys)
    counts = count_labels(labels)
    refs = references(lake, partition, index)
    wers = corpus_error_rates(labels, refs, quality.cer_languages)
    languages = language_stats(labels, refs, quality.cer_languages)
    record = LabelsRecord(
        version=version,
        fingerprint=fingerprint,
        teacher=teacher_info,
        teacher_config=teacher_cfg,
        quality=quality.to_dict(),
        thresholds=config.thresholds(),
        shards=blake3_of,
        labels=keys,
        rows=counts.rows,
        labelled=counts.labelled,
        errors=counts.errors,
    )
    record.write(lake, partition)
    wall = time.monotonic() - t0
    say(
        f"{partition}: labels for {counts.rows} samples ({counts.errors} errors, {counts.flagged} flagged), "
        f"labels {version} current; {wall:.1f}s"
    )
    rtf = counts.audio_s / run_stats["wall_s"] if run_stats.get("wall_s") else None
    return LabelsSummary(
        partition=partition,
        record=record,
        prefix=layout.labels_prefix(partition, version),
        counts=counts,
        error_rates=wers,
        wer_tiers=wer_tiers(labels),
        shards=len(blake3_of),
        languages=languages,
        shards_labelled=run_stats.get("shards_labelled", 0),
        shards_skipped=run_stats.get("shards_skipped", 0),
        retries=run_stats.get("retries", 0),
        actor_failures=run_stats.get("actor_failures", 0),
        decode_s=float(run_stats.get("decode_s", 0.0)),
        realtime_factor=rtf,
        reused=bool(blake3_of) and unchanged,
        elapsed_s=wall,
        swept_temporaries=swept.removed,
    )
