"""The segmentation stage end to end on generated long-form recordings in a LocalStorage raw store:
statuses, exact accounting, tar members by byte range, determinism, re-use, blocking checks."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from blake3 import blake3

from asr_distill import lake as L
from asr_distill.audio.decode import decode
from asr_distill.demo.longform import RecordingTruth, write_longform_partition
from asr_distill.stages.clean.config import CleanConfig
from asr_distill.stages.clean.core import analyze_clip
from asr_distill.stages.segment import layout
from asr_distill.stages.segment.config import SegmentStageConfig, fingerprint
from asr_distill.stages.segment.core import SegmentSummary, run_segment
from asr_distill.stages.segment.plan import SegmentConfig
from asr_distill.stages.segment.tables import iter_segments, read_recordings, read_summary
from asr_distill.stages.segment.verify import member_pcm, read_member, verify_partition
from asr_distill.storage import LocalStorage

PART = "longform"
MAX_LEN = 30 * 16_000
CFG = SegmentStageConfig(workers=2)
THREADS = SegmentStageConfig(workers=2, executor="thread")


def _index_row(key: str, text: str | None = None) -> dict[str, Any]:
    return {"partition": PART, "key": key, "extension": key.rsplit(".", 1)[-1], "text": text}


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[LocalStorage, dict[str, RecordingTruth], list[dict]]:
    """Raw store ``longform/``: the four generated recordings, a corrupt one and one changed since clean;
    the long-form rows as the clean stage computes them (analyze_clip: long-form, no reason)."""
    root = tmp_path_factory.mktemp("raw")
    truths = {t.kind: t for t in write_longform_partition(root / PART, seed=0)}
    raw = LocalStorage(root)
    rows = []
    for t in truths.values():
        text = t.transcript if t.kind == "dialogue" else None
        row = analyze_clip(_index_row(f"{PART}/{t.name}", text), raw, CleanConfig())
        assert not row["reasons"] and row["decoded_duration_s"] > 30 and row["pcm_blake3"], row
        rows.append(row)
    # corrupt: the bytes clean hashed are not audio any more readable (cut inside the FLAC frames)
    good = (root / PART / "just_over_30s.flac").read_bytes()
    corrupt = good[:200] + bytes(64) + good[200:4000]
    (root / PART / "corrupt.flac").write_bytes(corrupt)
    rows.append({**_index_row(f"{PART}/corrupt.flac"), "source_blake3": blake3(corrupt).hexdigest()})
    # changed since clean: the row's hashes are the monologue's, the bytes now differ
    mono = next(r for r in rows if r["key"].endswith("monologue.wav"))
    (root / PART / "zz_changed.wav").write_bytes((root / PART / "monologue.wav").read_bytes()[:-3200])
    rows.append({**mono, "key": f"{PART}/zz_changed.wav"})
    rows.sort(key=lambda r: r["key"])
    return raw, truths, rows


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStorage, SegmentSummary]:
    raw, _, rows = corpus
    lake = LocalStorage(tmp_path_factory.mktemp("lake"))
    events: list[Any] = []
    summary = run_segment(raw, lake, PART, CFG, long_form_rows=rows, progress=events.append)
    assert events and events[-1].stage == "segment" and events[-1].partition == PART
    return lake, summary


def _bytes_of(lake: LocalStorage) -> dict[str, bytes]:
    return {o.key: lake.read_bytes(o.key) for o in lake.iter_objects(L.segmented_prefix(PART))}


def _copy(lake: LocalStorage, root: Path) -> LocalStorage:
    out = LocalStorage(root)
    for key, data in _bytes_of(lake).items():
        out.write_bytes(key, data)
    return out


def _mtimes(lake: LocalStorage) -> dict[str, int]:
    return {
        o.key: lake.local_path(o.key).stat().st_mtime_ns
        for o in lake.iter_objects(L.segmented_tars_prefix(PART))
    }


def test_statuses_and_recording_rows(corpus, first_run) -> None:
    _, truths, rows = corpus
    lake, summary = first_run
    recs = {r["source_key"].rsplit("/", 1)[-1]: r for r in read_recordings(lake, PART)}
    assert [r["key"] for r in rows] == [f"{PART}/{n}" for n in sorted(recs)]  # one row each, key order
    assert {n: r["status"] for n, r in recs.items()} == {
        "corrupt.flac": "decode_failed",
        "dialogue.flac": "ok",
        "just_over_30s.flac": "ok",
        "monologue.wav": "ok",
        "noise_only.wav": "no_speech",
        "zz_changed.wav": "content_changed",
    }
    assert recs["corrupt.flac"]["decode_error"] and recs["corrupt.flac"]["tar_key"] is None
    noise = recs["noise_only.wav"]
    assert noise["kept_segments"] == noise["quarantined_segments"] == 0 and noise["tar_key"] is None
    assert noise["non_speech_samples"] == noise["n_samples"] == 40 * 16_000
    by_key = {r["key"]: r for r in rows}
    for name in ("dialogue.flac", "just_over_30s.flac", "monologue.wav", "noise_only.wav"):
        rec, row = recs[name], by_key[f"{PART}/{name}"]
        # decoded once by the VAD path, the same content the clean stage hashed
        assert (rec["n_samples"], rec["pcm_blake3"], rec["source_blake3"]) == (
            row["num_samples"],
            row["pcm_blake3"],
            row["source_blake3"],
        )
        assert len(rec["fingerprint"]) == 16 and rec["vad_model_sha256"] and rec["onnxruntime_version"]
    assert recs["dialogue.flac"]["reference_text"] == truths["dialogue"].transcript
    assert recs["monologue.wav"]["reference_text"] is None
    assert summary.by_status == {"ok": 3, "no_speech": 1, "decode_failed": 1, "content_changed": 1}
    assert summary.recordings == 6 and summary.segmented == 6 and summary.reused == 0
    assert summary.vad_realtime_factor > 0 and sum(summary.duration_hist) == summary.kept_segments > 3
    assert read_summary(lake, PART) == summary.content_dict()


def test_accounting_is_exact_and_segments_fit(first_run) -> None:
    lake, summary = first_run
    recs = {r["source_key"]: r for r in read_recordings(lake, PART)}
    segs = list(iter_segments(lake, PART))
    total_kept = total_q = total_ns = 0
    for key, rec in recs.items():
        if rec["status"] not in ("ok", "no_speech"):
            assert not [s for s in segs if s["source_key"] == key]
            continue
        mine = [s for s in segs if s["source_key"] == key]
        kept = sum(s["num_samples"] for s in mine if s["keep"])
        quar = sum(s["num_samples"] for s in mine if not s["keep"])
        assert (kept, quar) == (rec["kept_samples"], rec["quarantined_samples"])
        assert kept + quar + rec["non_speech_samples"] == rec["n_samples"]
        for a, b in zip(mine, mine[1:], strict=False):
            assert a["end_sample"] <= b["start_sample"] and a["segment_key"] < b["segment_key"]
        total_kept, total_q, total_ns = (
            total_kept + kept,
            total_q + quar,
            total_ns + rec["non_speech_samples"],
        )
    assert (summary.kept_samples, summary.quarantined_samples, summary.non_speech_samples) == (
        total_kept,
        total_q,
        total_ns,
    )
    assert summary.segmented_samples == total_kept + total_q + total_ns
    for s in segs:
        assert s["num_samples"] == s["end_sample"] - s["start_sample"] <= MAX_LEN
        assert s["offset_s"] == s["start_sample"] / 16_000 and not s["has_aligned_reference"]
        assert layout.source_of(s["segment_key"]) == s["source_key"]
        assert not layout.could_be_raw_key(s["segment_key"])
        assert s["keep"] == (not s["reasons"])
        assert ("no_aligned_reference" in s["flags"]) == s["source_key"].endswith("dialogue.flac")
    assert any(s["source_key"].endswith("monologue.wav") and "split_at_pause" in s["flags"] for s in segs)
    report = verify_partition(lake, PART)
    assert report.ok, report.problems
    assert report.members_checked == summary.kept_segments


def test_members_read_by_byte_range_are_the_recording_samples(corpus, first_run) -> None:
    raw, _, _ = corpus
    lake, _ = first_run
    segs = [s for s in iter_segments(lake, PART) if s["keep"]]
    by_source: dict[str, list[dict]] = {}
    for s in segs:
        by_source.setdefault(s["source_key"], []).append(s)
    for source, mine in by_source.items():
        with raw.local_copy(source) as path:
            signal = decode(path).samples
        pcm_all = np.clip(np.rint(signal * 32768.0), -32768, 32767).astype("<i2")
        tar_key = mine[0]["tar_key"]
        with tarfile.open(fileobj=io.BytesIO(lake.read_bytes(tar_key))) as tf:
            members = {m.name: (m.offset_data, m.size, m.mtime) for m in tf.getmembers()}
        assert sorted(members) == [s["member_name"] for s in mine]
        for s in mine:
            assert members[s["member_name"]] == (s["member_offset"], s["member_size"], 0)
            pcm = member_pcm(read_member(lake, s))
            assert blake3(pcm.tobytes()).hexdigest() == s["pcm_blake3"]
            np.testing.assert_array_equal(pcm, pcm_all[s["start_sample"] : s["end_sample"]])


def test_two_runs_write_identical_bytes(corpus, first_run, tmp_path: Path) -> None:
    raw, _, rows = corpus
    lake, _ = first_run
    other = LocalStorage(tmp_path / "lake2")
    cfg = dataclasses.replace(CFG, executor="thread", workers=1, block_s=7.0)  # block size: same output
    run_segment(raw, other, PART, cfg, long_form_rows=iter(rows))
    assert _bytes_of(other) == _bytes_of(lake)


def test_rerun_reuses_and_config_change_resegments(corpus, first_run, tmp_path: Path) -> None:
    """(On threads: the process pool is exercised by the first run; re-use does not depend on it.)"""
    raw, _, rows = corpus
    lake0, _ = first_run
    lake = _copy(lake0, tmp_path / "lake")
    before, mtimes = _bytes_of(lake), _mtimes(lake)
    again = run_segment(raw, lake, PART, THREADS, long_form_rows=rows)
    # ok + no_speech reused; decode_failed and content_changed are tried again
    assert (again.reused, again.segmented) == (4, 2)
    assert _bytes_of(lake) == before and _mtimes(lake) == mtimes
    assert again.content_dict() == read_summary(lake, PART)
    # a tar that disappeared is written again
    dialogue_tar = layout.tar_key(PART, f"{PART}/dialogue.flac")
    lake.delete(dialogue_tar)
    third = run_segment(raw, lake, PART, THREADS, long_form_rows=rows)
    assert (third.reused, third.segmented) == (3, 3) and _bytes_of(lake) == before
    # force redoes everything, same bytes
    forced = run_segment(raw, lake, PART, THREADS, long_form_rows=rows, force=True)
    assert forced.reused == 0 and _bytes_of(lake) == before == _bytes_of(lake0)
    # a changed SegmentConfig changes the fingerprint: everything is segmented again
    changed = dataclasses.replace(THREADS, segment=SegmentConfig(pack_gap_s=0.3))
    res = run_segment(raw, lake, PART, changed, long_form_rows=rows)
    assert res.reused == 0
    fps = {r["fingerprint"] for r in read_recordings(lake, PART)}
    assert len(fps) == 1 and fps != {r["fingerprint"] for r in read_recordings(lake0, PART)}
    assert verify_partition(lake, PART).ok
    # a recording dropped from the input loses its tar
    rest = [r for r in rows if not r["key"].endswith("dialogue.flac")]
    dropped = run_segment(raw, lake, PART, changed, long_form_rows=rest)
    assert dropped.orphan_tars_deleted == 1 and not lake.exists(dialogue_tar)
    assert dropped.reused == 3


def test_reuse_takes_new_sidecar_metadata(corpus, first_run, tmp_path: Path) -> None:
    raw, _, rows = corpus
    lake, fresh = _copy(first_run[0], tmp_path / "lake"), LocalStorage(tmp_path / "fresh")
    edited = [
        {**r, "reference_text": "hello there", "speaker": "spk9"} if r["key"].endswith("monologue.wav") else r
        for r in rows
    ]
    again = run_segment(raw, lake, PART, THREADS, long_form_rows=edited)
    assert again.reused == 4
    run_segment(raw, fresh, PART, THREADS, long_form_rows=edited)
    assert _bytes_of(lake) == _bytes_of(fresh)  # patched re-used rows == rows written afresh
    mono = [s for s in iter_segments(lake, PART) if s["source_key"].endswith("monologue.wav")]
    assert mono and all(s["speaker"] == "spk9" and "no_aligned_reference" in s["flags"] for s in mono)


def test_verify_catches_a_damaged_member(first_run, tmp_path: Path) -> None:
    lake = _copy(first_run[0], tmp_path / "lake")
    seg = next(s for s in iter_segments(lake, PART) if s["keep"])
    data = bytearray(lake.read_bytes(seg["tar_key"]))
    pos = seg["member_offset"] + seg["member_size"] // 2
    data[pos] ^= 0xFF
    lake.write_bytes(seg["tar_key"], bytes(data))
    report = verify_partition(lake, PART)
    assert not report.ok and any(seg["segment_key"] in p for p in report.problems)
    # header checks alone do not decode, and do not see it
    assert verify_partition(lake, PART, check_hashes=False).ok
    # a tampered accounting column is caught
    path = lake.local_path(L.segmented_recordings_key(PART))
    table = pq.read_table(path)
    rows = table.to_pylist()
    ok = next(i for i, r in enumerate(rows) if r["status"] == "ok")
    rows[ok]["non_speech_samples"] += 1
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)
    assert any("non-speech" in p or "recording row says" in p for p in verify_partition(lake, PART).problems)


def test_input_rows_are_validated(corpus, tmp_path: Path) -> None:
    raw, _, rows = corpus
    lake = LocalStorage(tmp_path / "lake")
    with pytest.raises(ValueError, match="sorted"):
        run_segment(raw, lake, PART, THREADS, long_form_rows=list(reversed(rows)))
    with pytest.raises(ValueError, match="audio extension"):
        run_segment(raw, lake, PART, THREADS, long_form_rows=[_index_row(f"{PART}/notes.txt")])
    assert not lake.exists(L.segmented_recordings_key(PART))  # a failed run writes no table
    empty = run_segment(raw, lake, PART, THREADS, long_form_rows=[])
    assert empty.recordings == 0 and read_recordings(lake, PART) == [] and verify_partition(lake, PART).ok


def test_segment_keys() -> None:
    k = layout.segment_key("p/talks/ep1.flac", 12)
    assert k == "p/talks/ep1.flac#s000012" and layout.source_of(k) == "p/talks/ep1.flac"
    assert not layout.could_be_raw_key(k) and layout.could_be_raw_key("p/talks/ep1.FLAC")
    keys = [layout.segment_key("a.wav", i) for i in (0, 9, 10, 100, 99_999)]
    assert keys == sorted(keys)
    with pytest.raises(ValueError):
        layout.segment_key("p/readme", 0)
    with pytest.raises(ValueError):
        layout.segment_key("a.wav", layout.MAX_SEGMENTS)
    assert layout.member_name(3) == "s000003.flac"
    assert layout.tar_key("p", "p/a b.wav").startswith("segmented_audio/p/tars/a-b-")


class CrashingStorage(LocalStorage):
    """A raw store whose reads kill the worker process for one key (a native decoder crash)."""

    @contextmanager
    def local_copy(self, key: str, suffix: str = "") -> Iterator[Path]:
        if key.endswith("crash.wav"):
            os._exit(17)
        with super().local_copy(key, suffix) as path:
            yield path


def test_a_crashing_worker_costs_one_row_not_the_run(corpus, tmp_path: Path) -> None:
    raw, _, rows = corpus
    crashing = CrashingStorage(raw.root)
    short = next(r for r in rows if r["key"].endswith("just_over_30s.flac"))
    inputs = [short, _index_row(f"{PART}/k_crash.wav")]
    lake = LocalStorage(tmp_path / "lake")
    summary = run_segment(crashing, lake, PART, CFG, long_form_rows=inputs)
    recs = read_recordings(lake, PART)
    assert [(r["status"], r["decode_error"]) for r in recs] == [
        ("ok", None),
        ("decode_failed", "worker_crashed"),
    ]
    assert summary.by_status["decode_failed"] == 1 and verify_partition(lake, PART).ok


def test_config_round_trips_and_validates() -> None:
    cfg = SegmentStageConfig(segment=SegmentConfig(pad_s=0.1), flac_compression_level=0.8, workers=3)
    assert SegmentStageConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SegmentStageConfig.from_dict({"segment": {"nope": 1}})
    with pytest.raises(ValueError, match="16000"):
        SegmentStageConfig(clean=CleanConfig(target_rate=8000))
    with pytest.raises(ValueError):
        SegmentStageConfig(executor="cluster")  # type: ignore[arg-type]
    assert SegmentStageConfig(block_s=7.0).block_samples % 512 == 0
    # the fingerprint follows what changes outputs, not how the work is spread
    base = fingerprint(SegmentStageConfig())
    assert fingerprint(SegmentStageConfig(workers=1, block_s=5.0, executor="thread")) == base
    assert fingerprint(SegmentStageConfig(segment=SegmentConfig(threshold=0.6))).value != base.value
    assert fingerprint(SegmentStageConfig(clean=CleanConfig(min_rms_dbfs=-50))).value != base.value


def test_reads_the_clean_long_form_table_and_an_empty_one_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``long_form_rows`` the core reads ``cleaned_audio/<p>/long_form.parquet`` itself; with no
    row there, it writes two empty tables without loading the VAD model or starting a worker pool."""
    import pyarrow as pa

    from asr_distill.stages import _procpool
    from asr_distill.stages.clean.schema import CLEAN_SCHEMA
    from asr_distill.stages.segment import core

    lake, raw = LocalStorage(tmp_path / "lake"), LocalStorage(tmp_path / "raw")
    with pytest.raises(Exception, match="long_form"):  # not cleaned yet: a clear missing-object error
        run_segment(raw, lake, "p", CFG)
    with lake.staged_file(L.cleaned_long_form_key("p"), suffix=".parquet") as path:
        pq.write_table(pa.Table.from_pylist([], schema=CLEAN_SCHEMA), path)

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("must not be called for a partition without long recordings")

    monkeypatch.setattr(core, "load_model_bytes", refuse)
    monkeypatch.setattr(_procpool.OrderedPool, "_new_pool", refuse)
    summary = run_segment(raw, lake, "p", CFG)
    assert summary.recordings == 0 and summary.segmented == 0
    assert read_recordings(lake, "p") == [] and list(iter_segments(lake, "p")) == []
    assert verify_partition(lake, "p").ok
