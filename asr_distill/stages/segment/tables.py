"""Table I/O of the segmentation stage: write the two tables atomically (streamed), read them back
(whole-table reads and footers through :mod:`asr_distill.tableio`; keys from :mod:`asr_distill.lake`).

Both tables are staged locally and appear only when the run finishes (a failed run leaves what the
keys held before). ``segments.parquet`` is written while recordings complete, so it is never held in
memory; reading the previous one for re-use is a stream too (:class:`PreviousSegments`), merged in
source-key order with the recordings of the new run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from asr_distill import lake as layout
from asr_distill.stages.segment.schema import (
    META_CONFIG,
    META_FINGERPRINT,
    META_SUMMARY,
    META_VERSION,
    RECORDINGS_SCHEMA,
    SCHEMA_VERSION,
    SEGMENTS_SCHEMA,
)
from asr_distill.storage import Storage
from asr_distill.tableio import read_table

Row = dict[str, Any]
BATCH_ROWS = 2048


def _to_arrow(rows: list[Row], schema: pa.Schema) -> pa.Table:
    fixed = []
    for r in rows:
        by_reason = r.get("quarantined_samples_by_reason")
        if isinstance(by_reason, Mapping):
            r = {**r, "quarantined_samples_by_reason": sorted(by_reason.items())}
        fixed.append(r)
    return pa.Table.from_pylist(fixed, schema=schema)


def _from_arrow(rows: list[Row]) -> list[Row]:
    for r in rows:
        by_reason = r.get("quarantined_samples_by_reason")
        if by_reason is not None and not isinstance(by_reason, Mapping):
            r["quarantined_samples_by_reason"] = dict(by_reason)
    return rows


class TablesWriter:
    """Appends recording and segment rows; both objects appear when the ``with`` block of
    :func:`open_tables` ends without error. Rows must come in source-key order."""

    def __init__(self, rec_writer: pq.ParquetWriter, seg_writer: pq.ParquetWriter) -> None:
        self._rec, self._seg = rec_writer, seg_writer
        self._rec_rows: list[Row] = []
        self._seg_rows: list[Row] = []

    def add(self, recording: Row, segments: list[Row]) -> None:
        self._rec_rows.append(recording)
        self._seg_rows.extend(segments)
        if len(self._seg_rows) >= BATCH_ROWS:
            self._flush_segments()
        if len(self._rec_rows) >= BATCH_ROWS:
            self._flush_recordings()

    def _flush_segments(self) -> None:
        if self._seg_rows:
            self._seg.write_table(_to_arrow(self._seg_rows, SEGMENTS_SCHEMA))
            self._seg_rows = []

    def _flush_recordings(self) -> None:
        if self._rec_rows:
            self._rec.write_table(_to_arrow(self._rec_rows, RECORDINGS_SCHEMA))
            self._rec_rows = []

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Flush, and record the (deterministic) summary in recordings.parquet's metadata."""
        self._flush_segments()
        self._flush_recordings()
        self._rec.add_key_value_metadata({META_SUMMARY: json.dumps(summary, sort_keys=True).encode()})


@contextlib.contextmanager
def open_tables(
    lake: Storage, partition: str, config_json: str, fingerprint: Mapping[str, str], compression: str = "zstd"
) -> Iterator[TablesWriter]:
    meta = {
        META_CONFIG: config_json.encode(),
        META_VERSION: SCHEMA_VERSION.encode(),
        META_FINGERPRINT: json.dumps(dict(fingerprint), sort_keys=True).encode(),
    }
    with (
        lake.staged_file(layout.segmented_segments_key(partition), suffix=".parquet") as seg_path,
        lake.staged_file(layout.segmented_recordings_key(partition), suffix=".parquet") as rec_path,
        pq.ParquetWriter(rec_path, RECORDINGS_SCHEMA.with_metadata(meta), compression=compression) as rw,
        pq.ParquetWriter(seg_path, SEGMENTS_SCHEMA.with_metadata(meta), compression=compression) as sw,
    ):
        yield TablesWriter(rw, sw)


# -- reading ----------------------------------------------------------------------------------------
def read_recordings(lake: Storage, partition: str) -> list[Row]:
    """Every row of the partition's recordings table (one per long recording: small)."""
    table = read_table(lake, layout.segmented_recordings_key(partition))
    return _from_arrow(table.cast(RECORDINGS_SCHEMA.with_metadata(table.schema.metadata)).to_pylist())


def read_summary(lake: Storage, partition: str) -> dict[str, Any] | None:
    """The summary stored with the recordings table (None when absent)."""
    # the footer's key-value metadata (added when the file closed), which the schema does not carry
    with lake.local_copy(layout.segmented_recordings_key(partition), suffix=".parquet") as path:
        meta = pq.read_metadata(path).metadata or {}
    return json.loads(meta[META_SUMMARY]) if META_SUMMARY in meta else None


def iter_segments(lake: Storage, partition: str, columns: list[str] | None = None) -> Iterator[Row]:
    """The partition's segment rows in table order (source key, then time), streamed."""
    with lake.local_copy(layout.segmented_segments_key(partition), suffix=".parquet") as path:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield from batch.to_pylist()


class PreviousSegments:
    """A cursor over the previous segments table in source-key order: :meth:`take` returns the rows
    of one recording, skipping those of recordings before it. Memory: one batch."""

    def __init__(self, rows: Iterator[Row]) -> None:
        self._rows = rows
        self._head: Row | None = next(rows, None)

    def take(self, source_key: str) -> list[Row]:
        out: list[Row] = []
        while self._head is not None and self._head["source_key"] < source_key:
            self._head = next(self._rows, None)
        while self._head is not None and self._head["source_key"] == source_key:
            out.append(self._head)
            self._head = next(self._rows, None)
        return out


@contextlib.contextmanager
def previous_tables(
    lake: Storage, partition: str
) -> Iterator[tuple[dict[str, Row], PreviousSegments] | None]:
    """The previous run's recordings (by source key) and a segments cursor; None when there is no
    complete, readable pair of tables."""
    rec_key, seg_key = layout.segmented_recordings_key(partition), layout.segmented_segments_key(partition)
    if not (lake.exists(rec_key) and lake.exists(seg_key)):
        yield None
        return
    stack = contextlib.ExitStack()
    try:
        recs = {r["source_key"]: r for r in read_recordings(lake, partition)}
        path = stack.enter_context(lake.local_copy(seg_key, suffix=".parquet"))
        pf = pq.ParquetFile(path)
        usable = pf.schema_arrow.remove_metadata() == SEGMENTS_SCHEMA.remove_metadata()
    except (OSError, ValueError, KeyError, pa.ArrowException):  # unreadable: segment again
        usable = False
    with stack:
        if not usable:
            yield None
            return

        def rows() -> Iterator[Row]:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                yield from batch.to_pylist()

        yield recs, PreviousSegments(rows())
