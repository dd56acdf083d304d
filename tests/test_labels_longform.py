"""Teacher labels of a long recording's segments, joined in order, against the recording's transcript
(issue 15): hand-made labels, shards index and recordings tables; no Ray, no model."""

from __future__ import annotations

import pyarrow as pa
import pytest

from asr_distill import lake as layout
from asr_distill.stages.labels.longform import longform_error_rates, partition_longform_rates
from asr_distill.storage import LocalStorage
from asr_distill.tableio import write_table

REC_A, REC_B, REC_ZH, REC_NOSEG, CLIP = (
    "raw/a.flac",
    "raw/b.flac",
    "raw/zh.flac",
    "raw/lost.flac",
    "raw/c.wav",
)


def _index(rows: list[tuple[str, str, str | None, int, float]]) -> pa.Table:
    sample, source, segment, seg_index, duration = zip(*rows, strict=True)
    return pa.table(
        {
            "sample_key": list(sample),
            "source_key": list(source),
            "segment_key": pa.array(segment, pa.string()),
            "segment_index": pa.array(seg_index, pa.int32()),
            "duration_s": list(duration),
        }
    )


def _labels(rows: list[tuple[str, str, str | None]]) -> pa.Table:
    sample, status, text = zip(*rows, strict=True)
    return pa.table(
        {
            "sample_key": list(sample),
            "status": list(status),
            "text": pa.array(text, pa.string()),
            "language": pa.array([None] * len(rows), pa.string()),
            "expected_language": pa.array([None] * len(rows), pa.string()),
        }
    )


def _recordings(rows: list[tuple[str, str | None, str | None]]) -> pa.Table:
    source, text, lang = zip(*rows, strict=True)
    return pa.table(
        {
            "source_key": list(source),
            "reference_text": pa.array(text, pa.string()),
            "language": pa.array(lang, pa.string()),
        }
    )


# Segments listed out of order (shard order is by duration bucket, not time), one short clip among them.
INDEX = _index(
    [
        ("a-s2", REC_A, "a#2", 2, 10.0),
        ("clip", CLIP, None, -1, 4.0),
        ("a-s0", REC_A, "a#0", 0, 20.0),
        ("a-s1", REC_A, "a#1", 1, 15.0),
        ("b-s0", REC_B, "b#0", 0, 12.0),
        ("b-s1", REC_B, "b#1", 1, 8.0),
        ("zh-s0", REC_ZH, "zh#0", 0, 5.0),
        ("zh-s1", REC_ZH, "zh#1", 1, 5.0),
    ]
)
LABELS = _labels(
    [
        ("a-s2", "ok", "over the lazy dog."),
        ("clip", "ok", "unrelated clip text"),
        ("a-s0", "ok", "The quick brown"),
        ("a-s1", "ok", "fox jumps"),
        ("b-s0", "ok", "red green blue"),
        ("b-s1", "error", None),  # no label: its words count as deleted
        ("zh-s0", "ok", "今天天气"),
        ("zh-s1", "ok", "很好啊"),
    ]
)
RECORDINGS = _recordings(
    [
        (REC_A, "The quick brown fox jumps over the lazy dog.", "en"),
        (REC_B, "red green blue cyan pink gold", "en-US"),
        (REC_ZH, "今天天气很好", "zh"),
        (REC_NOSEG, "a reference whose recording has no kept segment", "en"),
        ("raw/blank.flac", "   ", "en"),  # a blank sidecar is no reference
        ("raw/none.flac", None, None),
    ]
)


def test_segments_join_in_order_and_score_against_the_recording():
    lf = longform_error_rates(LABELS, INDEX, RECORDINGS)
    by = {r.source_key: r for r in lf.recordings}
    assert sorted(by) == [REC_A, REC_B, REC_ZH]
    a = by[REC_A]
    # In segment order the joined text is the reference: no error (out of order it would not be).
    assert (a.segments, a.error_segments, a.kept_s, a.words, a.metric, a.rate) == (3, 0, 45.0, 9, "wer", 0.0)
    b = by[REC_B]
    assert (b.segments, b.error_segments, b.kept_s, b.words, b.metric) == (2, 1, 20.0, 6, "wer")
    assert b.rate == pytest.approx(0.5)  # three of six words deleted
    zh = by[REC_ZH]
    # Character language: CER on characters; one inserted character over six.
    assert (zh.metric, zh.words) == ("cer", 6)
    assert zh.rate == pytest.approx(1 / 6)
    assert lf.unscored == 1  # REC_NOSEG: a reference, no labelled segment
    # Corpus rates: total edits / total reference units per metric.
    assert lf.corpus["wer"] == pytest.approx((0 + 3) / (9 + 6))
    assert lf.corpus["cer"] == pytest.approx(1 / 6)
    assert not lf.empty


def test_no_reference_or_no_segments_gives_nothing():
    lf = longform_error_rates(LABELS, INDEX, _recordings([(REC_A, None, "en")]))
    assert lf.empty and lf.recordings == [] and lf.corpus == {}
    clips_only = longform_error_rates(LABELS.slice(1, 1), INDEX.slice(1, 1), RECORDINGS)
    assert clips_only.recordings == [] and clips_only.unscored == 4 and clips_only.corpus == {}


def test_partition_reads_current_tables_and_skips_unsegmented_partitions(tmp_path):
    lake = LocalStorage(tmp_path)
    assert partition_longform_rates(lake, "p1", []) is None  # no segmented_audio: nothing read
    write_table(lake, layout.segmented_recordings_key("p1"), RECORDINGS)
    write_table(lake, layout.shard_layout("p1").index_key, INDEX)
    keys = ["teacher_labels/p1/v1/first.parquet", "teacher_labels/p1/v1/second.parquet"]
    write_table(lake, keys[0], LABELS.slice(0, 4))
    write_table(lake, keys[1], LABELS.slice(4))
    lf = partition_longform_rates(lake, "p1", keys)
    assert lf is not None
    assert lf == longform_error_rates(LABELS, INDEX, RECORDINGS)
    write_table(lake, layout.segmented_recordings_key("p2"), _recordings([(REC_A, None, "en")]))
    assert partition_longform_rates(lake, "p2", keys) is None  # recordings without a reference
