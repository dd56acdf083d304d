"""Segmentation stage driver: ``run_segment`` cuts a partition's long recordings into <= 30 s segments.

Input: the clean stage's long-form table (``cleaned_audio/<p>/long_form.parquet``, read by the driver
itself: one row per recording with the clean table's columns ``key``, ``partition``, ``source_blake3``,
``pcm_blake3``, ``num_samples``, ``reference_text``, ``language``, ``speaker``...), sorted by ``key``.
Each recording is one task on the project's process pool (:class:`~asr_distill.stages._procpool.OrderedPool`), results come back in input order, so the
tables and tars are the same bytes whatever the number of workers (see :mod:`.recording` for the work
itself, :mod:`.tables` for the tables, :mod:`.layout` for every name).

Re-runs: a recording whose previous row has status ``ok`` or ``no_speech``, the same fingerprint
(model, onnxruntime, settings), the same ``source_blake3`` and ``pcm_blake3`` as its input row, and
whose tar still exists with the recorded size, is not segmented again: its previous rows are copied.
``force=True`` segments everything. Tars of recordings that no longer have one are deleted.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from asr_distill import lake as lake_layout
from asr_distill.audio.vad import load_model_bytes
from asr_distill.stages._procpool import OrderedPool, default_workers
from asr_distill.stages.progress import ProgressFn, Reporter
from asr_distill.stages.segment import layout
from asr_distill.stages.segment.config import Fingerprint, SegmentStageConfig, fingerprint
from asr_distill.stages.segment.recording import (
    REUSABLE_STATUSES,
    RecordingResult,
    RecordingTask,
    failed_result,
    reference_text,
    segment_chunk,
)
from asr_distill.stages.segment.schema import SEGMENT_REASONS, STATUSES
from asr_distill.stages.segment.tables import open_tables, previous_tables
from asr_distill.storage import Storage
from asr_distill.tableio import read_table

Row = dict[str, Any]
STAGE = "segment"
SAMPLE_RATE = 16_000
# Kept segment durations: bins [e_i, e_i+1) plus under/overflow (30 s falls in ">= 30").
SEGMENT_DURATION_EDGES_S = (1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 25.0, 30.0)


@dataclass
class SegmentSummary:
    """What a segmentation run produced for one partition (hours at 16 kHz).

    ``hours_in``: decoded hours of the recordings (the input row's ``num_samples`` for those that did
    not decode). ``speech_hours_kept + quarantined hours + non_speech_hours`` equals the decoded hours of
    the ``ok``/``no_speech`` recordings exactly in samples (``*_samples`` fields).
    ``quarantined_hours_by_reason``: by each segment's first reason. ``duration_hist``: kept segments
    per bin of :data:`SEGMENT_DURATION_EDGES_S`. ``vad_realtime_factor``: audio seconds per worker
    second of decode + resample + VAD over the recordings segmented in this run (0 when all reused);
    ``realtime_factor``: the same over the run's wall time. Timing and re-use fields are left out of
    :meth:`content_dict` (what the tables store), so that outputs are the same bytes on every run.
    """

    partition: str
    recordings: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    samples_in: int = 0
    segmented_samples: int = 0  # samples of ok/no_speech recordings
    kept_samples: int = 0
    quarantined_samples: int = 0
    non_speech_samples: int = 0
    quarantined_samples_by_reason: dict[str, int] = field(default_factory=dict)
    kept_segments: int = 0
    quarantined_segments: int = 0
    segment_reason_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEGMENT_REASONS, 0))
    forced_cuts: int = 0
    duration_hist: list[int] = field(default_factory=lambda: [0] * (len(SEGMENT_DURATION_EDGES_S) + 1))
    tar_bytes: int = 0
    # this run only
    reused: int = 0
    segmented: int = 0
    orphan_tars_deleted: int = 0
    audio_s_processed: float = 0.0
    vad_s: float = 0.0
    elapsed_s: float = 0.0

    @staticmethod
    def hours(samples: int) -> float:
        return samples / SAMPLE_RATE / 3600.0

    @property
    def hours_in(self) -> float:
        return self.hours(self.samples_in)

    @property
    def speech_hours_kept(self) -> float:
        return self.hours(self.kept_samples)

    @property
    def non_speech_hours(self) -> float:
        return self.hours(self.non_speech_samples)

    @property
    def quarantined_hours(self) -> float:
        return self.hours(self.quarantined_samples)

    @property
    def quarantined_hours_by_reason(self) -> dict[str, float]:
        return {r: self.hours(n) for r, n in sorted(self.quarantined_samples_by_reason.items())}

    @property
    def vad_realtime_factor(self) -> float:
        return self.audio_s_processed / self.vad_s if self.vad_s > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_s_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add(self, rec: Mapping[str, Any], segments: list[Row], input_row: Mapping[str, Any]) -> None:
        self.recordings += 1
        self.by_status[rec["status"]] += 1
        n = rec.get("n_samples")
        if n is None:
            n = input_row.get("num_samples") or 0
        self.samples_in += int(n)
        if rec["status"] not in REUSABLE_STATUSES:
            return
        self.segmented_samples += int(rec["n_samples"])
        self.kept_samples += int(rec["kept_samples"])
        self.quarantined_samples += int(rec["quarantined_samples"])
        self.non_speech_samples += int(rec["non_speech_samples"])
        self.forced_cuts += int(rec["forced_cuts"])
        self.tar_bytes += int(rec.get("tar_bytes") or 0)
        for seg in segments:
            if seg["keep"]:
                self.kept_segments += 1
                self.duration_hist[bisect.bisect_right(SEGMENT_DURATION_EDGES_S, seg["duration_s"])] += 1
                continue
            self.quarantined_segments += 1
            first = seg["reasons"][0]
            by = self.quarantined_samples_by_reason
            by[first] = by.get(first, 0) + int(seg["num_samples"])
            for r in seg["reasons"]:
                self.segment_reason_counts[r] += 1

    def content_dict(self) -> dict[str, Any]:
        """The fields that depend only on the outputs (stored with the tables)."""
        return {
            "partition": self.partition,
            "recordings": self.recordings,
            "by_status": dict(self.by_status),
            "hours_in": self.hours_in,
            "speech_hours_kept": self.speech_hours_kept,
            "non_speech_hours": self.non_speech_hours,
            "quarantined_hours": self.quarantined_hours,
            "quarantined_hours_by_reason": self.quarantined_hours_by_reason,
            "samples_in": self.samples_in,
            "segmented_samples": self.segmented_samples,
            "kept_samples": self.kept_samples,
            "quarantined_samples": self.quarantined_samples,
            "non_speech_samples": self.non_speech_samples,
            "quarantined_samples_by_reason": dict(sorted(self.quarantined_samples_by_reason.items())),
            "kept_segments": self.kept_segments,
            "quarantined_segments": self.quarantined_segments,
            "segment_reason_counts": dict(self.segment_reason_counts),
            "forced_cuts": self.forced_cuts,
            "duration_hist": {
                "edges_s": list(SEGMENT_DURATION_EDGES_S),
                "counts": list(self.duration_hist),
            },
            "tar_bytes": self.tar_bytes,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for Dagster metadata), timing and re-use included."""
        return {
            **self.content_dict(),
            "reused": self.reused,
            "segmented": self.segmented,
            "orphan_tars_deleted": self.orphan_tars_deleted,
            "vad_realtime_factor": round(self.vad_realtime_factor, 1),
            "realtime_factor": round(self.realtime_factor, 1),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def __str__(self) -> str:
        st = ", ".join(f"{k} {v}" for k, v in self.by_status.items() if v)
        return (
            f"{self.recordings} recordings ({st}), {self.hours_in:.3f} h in: "
            f"{self.kept_segments} segments kept ({self.speech_hours_kept:.3f} h), "
            f"{self.quarantined_segments} quarantined ({self.quarantined_hours:.3f} h), "
            f"{self.non_speech_hours:.3f} h non-speech, {self.forced_cuts} forced cuts; "
            f"{self.segmented} segmented, {self.reused} reused"
        )


# -- inputs -----------------------------------------------------------------------------------------
def _tasks(
    rows: Iterable[Mapping[str, Any]],
    partition: str,
    fp: Fingerprint,
    previous: dict[str, Row] | None,
    inputs: dict[str, Mapping[str, Any]],
) -> Iterator[list[RecordingTask]]:
    """One task per recording, in key order; input rows are validated here (a ValueError for rows that
    are unsorted, repeated, of another partition, or not audio keys: a caller's bug, not bad audio)."""
    last: str | None = None
    names: set[str] = set()
    for src in rows:
        row = dict(src)
        key = str(row["key"])
        if "pcm_sha256" in row and "pcm_blake3" not in row:
            raise ValueError(
                "the long-form table predates BLAKE3 content hashes (pcm_sha256, not pcm_blake3): "
                "materialise cleaned_audio for the partition again"
            )
        if last is not None and key <= last:
            raise ValueError(f"long-form rows must be sorted by key without repeats: {key!r} after {last!r}")
        last = key
        if row.get("partition") not in (None, partition):
            raise ValueError(f"row {key!r} belongs to partition {row['partition']!r}, not {partition!r}")
        if not layout.could_be_raw_key(key):
            raise ValueError(f"{key!r} has no audio extension: not an indexed recording")
        name = layout.recording_name(key, partition)
        if name in names:
            raise ValueError(f"two recordings of {partition!r} map to the tar name {name!r}; rename one")
        names.add(name)
        inputs[key] = row
        prev = previous.get(key) if previous is not None else None
        if (
            prev is not None
            and prev["status"] in REUSABLE_STATUSES
            and prev["fingerprint"] == fp.value
            and row.get("source_blake3")
            and prev["source_blake3"] == row.get("source_blake3")
            and prev["pcm_blake3"] == row.get("pcm_blake3")
        ):
            yield [RecordingTask(row, True, prev["tar_key"], prev["tar_bytes"])]
        else:
            yield [RecordingTask(row)]


def refresh_inherited(rec: Row, segs: list[Row], row: Mapping[str, Any]) -> None:
    """Re-used rows take the input row's transcript, language and speaker (a sidecar edited since the
    last run changes no audio, so it re-segments nothing), exactly as a new run would write them."""
    text = reference_text(row)
    rec.update(reference_text=text, language=row.get("language"), speaker=row.get("speaker"))
    for seg in segs:
        flags = [f for f in seg["flags"] if f != "no_aligned_reference"]
        seg.update(
            language=rec["language"],
            speaker=rec["speaker"],
            flags=flags + (["no_aligned_reference"] if text is not None else []),
        )


def _config_json(config: SegmentStageConfig) -> str:
    return json.dumps(config.output_settings(), sort_keys=True)


# -- the stage ----------------------------------------------------------------------------------------
def read_long_form_rows(lake: Storage, partition: str) -> list[Row]:
    """The clean stage's long-form rows of ``partition`` (``cleaned_audio/<p>/long_form.parquet``), sorted
    by key; one small row per recording. Raises :class:`~asr_distill.storage.ObjectNotFoundError` when
    the partition has not been cleaned (with a clean stage that writes the long-form table)."""
    table = read_table(lake, lake_layout.cleaned_long_form_key(partition))
    return table.sort_by("key").to_pylist()


def run_segment(
    raw: Storage,
    lake: Storage,
    partition: str,
    config: SegmentStageConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    long_form_rows: Iterable[Mapping[str, Any]] | None = None,
    progress_every_s: float = 10.0,
) -> SegmentSummary:
    """Segment the long recordings of ``partition``; write ``recordings.parquet``, ``segments.parquet``
    and one tar per recording with kept segments below ``segmented_audio/<partition>/``.

    ``raw``: the store with the audio; ``lake``: where inputs are read and outputs go (both picklable
    for the process pool). The input is the clean stage's long-form table of the partition
    (:func:`read_long_form_rows`); ``long_form_rows`` replaces it (rows sorted by ``key``: tests and
    tools that have no clean table). A partition without long recordings writes two empty tables at
    once: no VAD model is loaded and no worker starts.
    Raises :class:`~asr_distill.audio.vad.VadModelError` when the pinned VAD model is missing or
    differs, ValueError for malformed input rows; a bad recording is a row, never an exception.
    """
    cfg = config or SegmentStageConfig()
    lake_layout.segmented_prefix(partition)  # validates the name
    rows = list(read_long_form_rows(lake, partition) if long_form_rows is None else long_form_rows)
    if rows:
        load_model_bytes()  # a missing or different model is a setup error: say so before any work
    fp = fingerprint(cfg)
    report = Reporter(STAGE, partition, progress)
    summary = SegmentSummary(partition=partition)
    start = last_report = time.monotonic()
    n_workers = max(1, min(cfg.workers or default_workers(cfg.executor), len(rows)))
    inputs: dict[str, Mapping[str, Any]] = {}  # rows in flight, by key (bounded by in_flight)
    referenced: set[str] = set()

    def on_crash(task: RecordingTask, detail: str) -> RecordingResult:
        return failed_result(task.row, partition, fp, "decode_failed", "worker_crashed", detail)

    pool: OrderedPool[RecordingTask, RecordingResult] = OrderedPool(
        segment_chunk,
        (raw, lake, partition, cfg, fp),
        on_crash=on_crash,
        executor=cfg.executor,
        workers=n_workers,
        name="segment",
    )
    with previous_tables(lake, partition) if not force else contextlib.nullcontext() as previous:
        prev_recs, prev_segs = previous if previous is not None else (None, None)
        if previous is None and not force:
            report("segment: no previous tables, every recording is segmented")
        with open_tables(lake, partition, _config_json(cfg), fp.to_dict()) as writer:
            tasks = _tasks(rows, partition, fp, prev_recs, inputs)
            for results in pool.map(tasks, in_flight=2 * n_workers):
                for res in results:
                    row = inputs.pop(res.source_key)
                    if res.reused:
                        assert prev_recs is not None and prev_segs is not None
                        rec = prev_recs[res.source_key]
                        segs = prev_segs.take(res.source_key)
                        refresh_inherited(rec, segs, row)
                        summary.reused += 1
                    else:
                        assert res.recording is not None
                        rec, segs = res.recording, res.segments
                        summary.segmented += 1
                        summary.audio_s_processed += res.audio_s
                        summary.vad_s += res.vad_s
                    if rec.get("tar_key"):
                        referenced.add(rec["tar_key"])
                    writer.add(rec, segs)
                    summary.add(rec, segs, row)
                now = time.monotonic()
                if now - last_report >= progress_every_s:
                    last_report = now
                    report(
                        f"segment {partition}: {summary.recordings} recordings, "
                        f"{summary.hours_in:.2f} h, {summary.kept_segments} segments kept",
                        done=summary.recordings,
                        elapsed_s=now - start,
                    )
            writer.finish(summary.content_dict())
    summary.orphan_tars_deleted = _delete_orphans(lake, partition, referenced)
    summary.elapsed_s = time.monotonic() - start
    report(f"segment {partition}: {summary}", done=summary.recordings, elapsed_s=summary.elapsed_s)
    return summary


def _delete_orphans(lake: Storage, partition: str, referenced: set[str]) -> int:
    """Delete tars of the partition that the new tables do not reference (recordings gone, or now
    without kept segments); they are unreachable from the tables."""
    n = 0
    for obj in lake.iter_objects(lake_layout.segmented_tars_prefix(partition)):
        if obj.key not in referenced:
            lake.delete(obj.key)
            n += 1
    return n
