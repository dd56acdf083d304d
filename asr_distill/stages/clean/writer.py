"""Write the kept, long-form and quarantine tables atomically and summarise the run for metadata and logs."""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from asr_distill.stages.clean.config import CleanConfig
from asr_distill.stages.clean.core import CleanProgress, ExecutorSpec, KnownHashes, Row, clean_partition
from asr_distill.stages.clean.schema import (
    CLEAN_SCHEMA,
    FLAGS,
    META_CONFIG,
    META_INPUTS,
    META_SUMMARY,
    META_VERSION,
    REASONS,
    SCHEMA_VERSION,
)
from asr_distill.storage import Storage

# Fixed bin edges so that partitions can be compared; bins are [e_i, e_i+1) plus under/overflow.
DURATION_EDGES_S = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 300.0)
RMS_EDGES_DBFS = (-90.0, -60.0, -50.0, -40.0, -35.0, -30.0, -25.0, -20.0, -15.0, -10.0, -5.0, 0.0)


def _labels(edges: tuple[float, ...], unit: str) -> list[str]:
    def f(x: float) -> str:
        return f"{x:g}"

    out = [f"< {f(edges[0])}{unit}"]
    out += [f"{f(a)}-{f(b)}{unit}" for a, b in zip(edges, edges[1:], strict=False)]
    out.append(f">= {f(edges[-1])}{unit}")
    return out


@dataclass
class Histogram:
    """Counts of kept and quarantined clips per bin (``len(edges) + 1`` bins)."""

    edges: tuple[float, ...]
    unit: str
    kept: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.edges) + 1
        self.kept = self.kept or [0] * n
        self.quarantined = self.quarantined or [0] * n

    def add(self, value: float | None, keep: bool) -> None:
        if value is None:
            return
        i = bisect.bisect_right(self.edges, value)
        (self.kept if keep else self.quarantined)[i] += 1

    @property
    def labels(self) -> list[str]:
        """One label per bin (``< lo``, ``lo-hi``, ``>= hi`` with the unit)."""
        return _labels(self.edges, self.unit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": list(self.edges),
            "labels": self.labels,
            "kept": list(self.kept),
            "quarantined": list(self.quarantined),
        }


@dataclass
class CleanSummary:
    """What a clean run did: counts, the drop funnel, hours, histograms.

    ``kept + long_form + quarantined == total``: ``long_form`` counts the readable recordings longer
    than ``max_duration_s`` (at most ``max_recording_s``) handed to the segmentation stage.
    ``reason_counts``: clips per reason (a clip with several reasons counts under each).
    ``funnel``: clips per *first* reason in :data:`REASONS` order (sums to ``quarantined``).
    Hours use the decoded duration, or the index duration for clips that did not decode.
    """

    partition: str | None = None
    total: int = 0
    kept: int = 0
    quarantined: int = 0
    long_form: int = 0
    kept_hours: float = 0.0
    quarantined_hours: float = 0.0
    long_form_hours: float = 0.0
    reason_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    funnel: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    flag_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAGS, 0))
    decode_errors: dict[str, int] = field(default_factory=dict)
    duration_hist: Histogram = field(default_factory=lambda: Histogram(DURATION_EDGES_S, " s"))
    rms_hist: Histogram = field(default_factory=lambda: Histogram(RMS_EDGES_DBFS, " dBFS"))
    elapsed_s: float = 0.0
    # Of this run, not of the tables (neither is in to_dict, so neither is stored with the tables):
    reused: bool = False  # the existing tables were kept (same index, rules and known duplicates)
    known_hashes: int = 0  # content hashes known from partitions cleaned before
    swept_temporaries: int = 0  # stale .asrd-tmp-* leftovers of killed writes removed from the folder

    @property
    def clips_per_s(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, row: Mapping[str, Any]) -> None:
        keep = bool(row["keep"])
        if self.partition is None:
            self.partition = row.get("partition")
        self.total += 1
        dur = row.get("decoded_duration_s")
        if dur is None:
            dur = row.get("duration_s")
        hrs = (dur or 0.0) / 3600.0
        if keep:
            self.kept += 1
            self.kept_hours += hrs
        elif is_long_form_row(row):
            self.long_form += 1
            self.long_form_hours += hrs
        else:
            self.quarantined += 1
            self.quarantined_hours += hrs
            self.funnel[row["reasons"][0]] += 1
        for r in row["reasons"]:
            self.reason_counts[r] += 1
        for fl in row["flags"]:
            self.flag_counts[fl] += 1
        if row.get("decode_error"):
            code = row["decode_error"]
            self.decode_errors[code] = self.decode_errors.get(code, 0) + 1
        self.duration_hist.add(row.get("decoded_duration_s"), keep)
        self.rms_hist.add(row.get("rms_dbfs"), keep)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for Dagster metadata)."""
        return {
            "partition": self.partition,
            "total": self.total,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "long_form": self.long_form,
            "kept_hours": self.kept_hours,
            "quarantined_hours": self.quarantined_hours,
            "long_form_hours": self.long_form_hours,
            "reason_counts": dict(self.reason_counts),
            "funnel": dict(self.funnel),
            "flag_counts": dict(self.flag_counts),
            "decode_errors": dict(sorted(self.decode_errors.items())),
            "duration_hist": self.duration_hist.to_dict(),
            "rms_hist": self.rms_hist.to_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CleanSummary:
        """The summary :meth:`to_dict` gave (histograms included)."""

        def hist(h: Mapping[str, Any], unit: str) -> Histogram:
            return Histogram(tuple(h["edges"]), unit, list(h["kept"]), list(h["quarantined"]))

        return cls(
            partition=d["partition"],
            total=d["total"],
            kept=d["kept"],
            quarantined=d["quarantined"],
            long_form=d.get("long_form", 0),
            kept_hours=d["kept_hours"],
            quarantined_hours=d["quarantined_hours"],
            long_form_hours=d.get("long_form_hours", 0.0),
            reason_counts={**dict.fromkeys(REASONS, 0), **d["reason_counts"]},
            funnel={**dict.fromkeys(REASONS, 0), **d["funnel"]},
            flag_counts={**dict.fromkeys(FLAGS, 0), **d["flag_counts"]},
            decode_errors=dict(d["decode_errors"]),
            duration_hist=hist(d["duration_hist"], " s"),
            rms_hist=hist(d["rms_hist"], " dBFS"),
            elapsed_s=d.get("elapsed_s", 0.0),
        )

    def funnel_text(self) -> str:
        """The drop funnel as lines of text (for logs)."""
        lines = [f"input {self.total}"]
        left = self.total
        for reason, n in self.funnel.items():
            if n:
                left -= n
                lines.append(f"  - {reason}: {n} -> {left}")
        if self.long_form:
            left -= self.long_form
            lines.append(f"  - long_form (to segmentation): {self.long_form} -> {left}")
        lines.append(
            f"kept {self.kept} ({self.kept_hours:.3f} h), long-form {self.long_form} "
            f"({self.long_form_hours:.3f} h), quarantined {self.quarantined}"
        )
        return "\n".join(lines)


def is_long_form_row(row: Mapping[str, Any]) -> bool:
    """Whether a result row goes to the long-form table (not kept, no reason, the ``long_form`` flag)."""
    return not row["keep"] and not row["reasons"] and "long_form" in row["flags"]


def sibling_long_form_key(kept_key: str) -> str:
    """The long-form table beside ``kept_key`` (callers of the lower-level functions that name only
    the kept and quarantine keys; :func:`~asr_distill.stages.clean.run.run_clean` passes lake.py's)."""
    head, _, _ = kept_key.rpartition("/")
    return f"{head}/long_form.parquet" if head else "long_form.parquet"


def _schema_with_meta(config: CleanConfig) -> pa.Schema:
    return CLEAN_SCHEMA.with_metadata(
        {META_CONFIG: config.to_json().encode(), META_VERSION: SCHEMA_VERSION.encode()}
    )


def _relevant_known(hashes: Iterable[str | None], known: KnownHashes) -> list[list[str]]:
    """The entries of ``known`` a partition with these content hashes depends on (its only
    dependency on other partitions: which of its clips duplicate clips kept elsewhere)."""
    return sorted([h, *known[h]] for h in set(hashes) if h is not None and h in known)


def _inputs_record(index_blake3: str, config: CleanConfig, relevant: list[list[str]]) -> bytes:
    record = {
        "schema_version": SCHEMA_VERSION,
        "index_blake3": index_blake3,
        "config": json.loads(config.to_json()),
        "known_duplicates": relevant,
    }
    return json.dumps(record, sort_keys=True).encode()


def reusable_clean(
    lake: Storage,
    *,
    kept_key: str,
    quarantine_key: str,
    index_blake3: str,
    config: CleanConfig,
    known_hashes: KnownHashes | None = None,
    long_form_key: str | None = None,
) -> CleanSummary | None:
    """The summary of the existing tables when a run with these inputs would write them again
    byte for byte (same index file, same config, same duplicates among other partitions' kept clips);
    None when the partition must be cleaned (also when any of the three tables is missing)."""
    long_form_key = long_form_key or sibling_long_form_key(kept_key)
    if not all(lake.exists(k) for k in (kept_key, quarantine_key, long_form_key)):
        return None
    try:
        with lake.local_copy(kept_key, suffix=".parquet") as path:
            meta = pq.read_metadata(path).metadata or {}  # key-values added when the file closed
            kept_hashes = pq.read_table(path, columns=["pcm_blake3"]).column(0).to_pylist()
        if META_INPUTS not in meta or META_SUMMARY not in meta:
            return None
        with lake.local_copy(quarantine_key, suffix=".parquet") as path:
            q_hashes = pq.read_table(path, columns=["pcm_blake3"]).column(0).to_pylist()
        with lake.local_copy(long_form_key, suffix=".parquet") as path:
            lf_hashes = pq.read_table(path, columns=["pcm_blake3"]).column(0).to_pylist()
        relevant = _relevant_known([*kept_hashes, *q_hashes, *lf_hashes], known_hashes or {})
        if meta[META_INPUTS] != _inputs_record(index_blake3, config, relevant):
            return None
        return CleanSummary.from_dict(json.loads(meta[META_SUMMARY]))
    except (OSError, ValueError, KeyError, pa.ArrowException):  # unreadable: clean again
        return None


def write_clean_tables(
    batches: Iterable[list[Row]],
    lake: Storage,
    *,
    kept_key: str,
    quarantine_key: str,
    config: CleanConfig,
    compression: str = "zstd",
    index_blake3: str | None = None,
    known_hashes: KnownHashes | None = None,
    long_form_key: str | None = None,
) -> CleanSummary:
    """Write result batches into the kept, long-form and quarantine Parquet objects of ``lake``
    (``long_form_key`` defaults to :func:`sibling_long_form_key`).

    The objects are staged locally and appear only if every batch was written (an exception leaves
    whatever the keys held before). Empty tables are written too, so downstream always finds all three.
    With ``index_blake3`` (the BLAKE3 of the index file the rows came from), kept.parquet also records
    the run's inputs and summary, so :func:`reusable_clean` can tell a later run nothing changed.
    """
    schema = _schema_with_meta(config)
    summary = CleanSummary()
    hashes: list[str | None] = []
    start = time.monotonic()
    long_form_key = long_form_key or sibling_long_form_key(kept_key)
    # kept.parquet is published last: it carries the inputs record that reuse looks for.
    with (
        lake.staged_file(kept_key, suffix=".parquet") as k_path,
        lake.staged_file(quarantine_key, suffix=".parquet") as q_path,
        lake.staged_file(long_form_key, suffix=".parquet") as l_path,
        pq.ParquetWriter(k_path, schema, compression=compression) as kw,
        pq.ParquetWriter(q_path, schema, compression=compression) as qw,
        pq.ParquetWriter(l_path, schema, compression=compression) as lw,
    ):
        for batch in batches:
            kept_rows: list[Row] = []
            quarantined_rows: list[Row] = []
            long_rows: list[Row] = []
            for row in batch:
                summary.add(row)
                hashes.append(row.get("pcm_blake3"))
                if row["keep"]:
                    kept_rows.append(row)
                elif is_long_form_row(row):
                    long_rows.append(row)
                else:
                    quarantined_rows.append(row)
            if kept_rows:
                kw.write_table(pa.Table.from_pylist(kept_rows, schema=schema))
            if quarantined_rows:
                qw.write_table(pa.Table.from_pylist(quarantined_rows, schema=schema))
            if long_rows:
                lw.write_table(pa.Table.from_pylist(long_rows, schema=schema))
        summary.elapsed_s = time.monotonic() - start
        if index_blake3 is not None:
            relevant = _relevant_known(hashes, known_hashes or {})
            kw.add_key_value_metadata(
                {
                    META_INPUTS: _inputs_record(index_blake3, config, relevant),
                    # without elapsed_s: the same inputs give byte-identical files
                    META_SUMMARY: json.dumps(
                        {k: v for k, v in summary.to_dict().items() if k != "elapsed_s"}, sort_keys=True
                    ).encode(),
                }
            )
    return summary


def clean_to_tables(
    rows: Iterable[Mapping[str, Any]],
    raw: Storage,
    lake: Storage,
    *,
    kept_key: str,
    quarantine_key: str,
    config: CleanConfig | None = None,
    known_hashes: KnownHashes | None = None,
    workers: int | None = None,
    executor: ExecutorSpec = "process",
    progress: Callable[[CleanProgress], None] | None = None,
    progress_every_s: float = 10.0,
    index_blake3: str | None = None,
    long_form_key: str | None = None,
) -> CleanSummary:
    """Clean rows into three tables: :func:`clean_partition` -> :func:`write_clean_tables` (the stage's
    entry point, :func:`~asr_distill.stages.clean.run.run_clean`, adds the lake keys and reuse).

    ``rows``: the partition's ``audio_index`` rows sorted by key; ``raw``: the store holding the audio;
    ``lake``: where the tables go (``kept_key``, ``quarantine_key``, ``long_form_key``). Returns the summary.
    ``index_blake3``: see :func:`write_clean_tables`.
    """
    cfg = config or CleanConfig()
    batches = clean_partition(
        rows,
        raw,
        cfg,
        known_hashes=known_hashes,
        workers=workers,
        executor=executor,
        progress=progress,
        progress_every_s=progress_every_s,
    )
    return write_clean_tables(
        batches,
        lake,
        kept_key=kept_key,
        quarantine_key=quarantine_key,
        config=cfg,
        index_blake3=index_blake3,
        known_hashes=known_hashes,
        long_form_key=long_form_key,
    )
