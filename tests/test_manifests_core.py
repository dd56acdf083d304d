"""The training-manifests core on a real labelled lake (demo corpus -> index -> clean -> shards -> labels)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from asr_distill import lake as L
from asr_distill.stages.manifests import (
    DEFAULT_DROP_FLAGS,
    DROP_RULES,
    SPLITS,
    ManifestConfig,
    ManifestInputError,
    build_manifest,
    check_counts,
    check_durations,
    check_formats,
    check_members,
    check_splits_disjoint,
    load_partition,
    load_version,
    read_jsonl,
    read_latest,
    run_manifests,
)
from asr_distill.stages.manifests.formats import lhotse_cut
from asr_distill.storage import LocalStorage
from asr_distill.student.loader import nemo_tarred_filepaths
from tests.manifests_fixtures import CONTROLLED, ORPHAN_KEY, PARTITIONS, build_labelled_lake, copy_lake
from tests.segments_fixtures import NARRATOR, SEGMENTED_PARTITION, build_segmented_lake

CFG = ManifestConfig(dev_fraction=0.2, test_fraction=0.2)


@pytest.fixture(scope="module")
def base(demo_corpus, tmp_path_factory) -> Path:
    raw, _ = demo_corpus
    return build_labelled_lake(raw, tmp_path_factory.getbasetemp() / "manifests_base")


@pytest.fixture(scope="module")
def built(base, tmp_path_factory) -> dict[str, Any]:
    lake = copy_lake(base, tmp_path_factory.mktemp("mcore") / "lake")
    summary = run_manifests(lake, CFG)
    record, manifest, dropped = load_version(lake, summary.version)
    return {"lake": lake, "summary": summary, "record": record, "manifest": manifest, "dropped": dropped}


def _index(lake: LocalStorage, p: str) -> list[dict[str, Any]]:
    return pq.read_table(lake.local_path(L.shard_layout(p).index_key)).to_pylist()


# -- config ----------------------------------------------------------------------------------------------
def test_config_defaults_follow_distil_whisper_and_validate() -> None:
    cfg = ManifestConfig()
    assert cfg.max_error_rate == 0.10 and not cfg.flags_with_reference
    assert cfg.drop_flags == DEFAULT_DROP_FLAGS and "low_avg_logprob" not in cfg.drop_flags
    assert (cfg.dev_fraction, cfg.test_fraction, cfg.max_duration_s) == (0.05, 0.05, 30.0)
    assert ManifestConfig.from_dict(cfg.to_dict()) == cfg
    assert ManifestConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))).fingerprint() == CFG.fingerprint()
    assert cfg.fingerprint() != CFG.fingerprint()
    assert ManifestConfig(max_header_reads=5).fingerprint() == cfg.fingerprint()  # a check budget only
    for bad in [
        {"drop_flags": ["no_such_flag"]},
        {"drop_flags": "empty_text"},
        {"dev_fraction": 0.6, "test_fraction": 0.5},
        {"min_duration_s": 5, "max_duration_s": 2},
        {"max_error_rate": 0},
        {"lhotse_command": "cat"},
        {"speaker_scope": "world"},
    ]:
        with pytest.raises(ValueError):
            ManifestConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown"):
        ManifestConfig.from_dict({"wer": 0.1})


# -- join, drop rules, accounting ------------------------------------------------------------------------
def test_every_sample_is_accounted_for(built) -> None:
    lake, record, manifest, dropped = built["lake"], built["record"], built["manifest"], built["dropped"]
    kept = Counter(manifest.column("partition").to_pylist())
    drops = Counter(dropped.column("partition").to_pylist())
    assert {c["partition"] for c in record["counts"]} == set(PARTITIONS)
    for c in record["counts"]:
        p = c["partition"]
        index_keys = {r["sample_key"] for r in _index(lake, p)}
        label_keys = {
            k
            for key in L.current_labels_keys(lake, p)
            for k in pq.read_table(lake.local_path(key)).column("sample_key").to_pylist()
        }
        assert c["accounted"] == len(index_keys | label_keys)
        assert kept[p] + drops[p] == c["accounted"] == c["kept"] + c["dropped"]
        assert c["index_samples"] == len(index_keys)
    keys = list(
        zip(manifest.column("partition").to_pylist(), manifest.column("sample_key").to_pylist(), strict=True)
    )
    dkeys = list(
        zip(dropped.column("partition").to_pylist(), dropped.column("sample_key").to_pylist(), strict=True)
    )
    assert len(set(keys)) == len(keys) and not set(keys) & set(dkeys)
    assert set(dropped.column("reason").to_pylist()) <= set(DROP_RULES)
    assert check_counts(lake, record, manifest, dropped) == []


def test_each_controlled_case_meets_its_rule(built) -> None:
    lake, manifest, dropped = built["lake"], built["manifest"], built["dropped"]
    index = _index(lake, "en_read")
    reasons = {r["sample_key"]: r["reason"] for r in dropped.to_pylist() if r["partition"] == "en_read"}
    kept = set(manifest.filter(pc.equal(manifest["partition"], "en_read"))["sample_key"].to_pylist())
    for pos, (case, rule) in CONTROLLED.items():
        key = index[pos]["sample_key"]
        if rule is None:
            assert key in kept, case
        else:
            assert reasons.get(key) == rule, (case, reasons.get(key))
    assert reasons[ORPHAN_KEY] == "not_in_shards"
    others = {r["sample_key"] for i, r in enumerate(index) if i not in CONTROLLED}
    assert others <= kept
    # The real teacher's partition: the WER rule alone decides where a reference exists.
    read = [r for r in manifest.to_pylist() if r["partition"] == "en_conversational"]
    assert read and all(r["error_rate"] is None or r["error_rate"] < 0.10 for r in read)
    for r in dropped.to_pylist():
        if r["partition"] == "en_conversational":
            assert r["reason"] == "high_wer" and r["error_rate"] >= 0.10
    fp = json.loads(lake.read_bytes(L.labels_current_key("en_conversational")))["fingerprint"]
    assert {r["teacher_fingerprint"] for r in read} == {fp}


def test_rule_options_change_what_is_dropped(base) -> None:
    lake = LocalStorage(base)
    inputs = [load_partition(lake, p) for p in PARTITIONS]
    index = _index(lake, "en_read")
    flagged_ref, low_logprob = index[3]["sample_key"], index[5]["sample_key"]

    def reasons(cfg: ManifestConfig) -> dict[str, str]:
        return {r["sample_key"]: r["reason"] for r in build_manifest(inputs, cfg).dropped.to_pylist()}

    assert flagged_ref not in reasons(CFG) and low_logprob not in reasons(CFG)
    assert reasons(ManifestConfig(flags_with_reference=True))[flagged_ref] == "flag:repeated_ngram"
    assert reasons(ManifestConfig(drop_flags=(*DEFAULT_DROP_FLAGS, "low_avg_logprob")))[low_logprob] == (
        "flag:low_avg_logprob"
    )
    assert index[2]["sample_key"] not in reasons(ManifestConfig(max_error_rate=0.3))
    short = reasons(ManifestConfig(min_duration_s=5.0))
    assert any(v == "too_short" for v in short.values())
    assert all(
        d >= 5.0
        for d in build_manifest(inputs, ManifestConfig(min_duration_s=5.0)).manifest["duration_s"].to_pylist()
    )
    assert any(v == "too_long" for v in reasons(ManifestConfig(max_duration_s=8.0)).values())


# -- splits ----------------------------------------------------------------------------------------------
def test_splits_are_stable_and_speaker_disjoint(built, base) -> None:
    manifest = built["manifest"]
    assert check_splits_disjoint(manifest, CFG) == []
    rows = manifest.to_pylist()
    assert {r["split"] for r in rows} == set(SPLITS)  # 40 % held out over ~20 groups
    by_speaker: dict[str, set[str]] = {}
    for r in rows:
        if r["speaker"]:
            by_speaker.setdefault(r["speaker"], set()).add(r["split"])
    assert any(sum(1 for r in rows if r["speaker"] == s) > 1 for s in by_speaker)
    assert all(len(v) == 1 for v in by_speaker.values())
    # A sample's split does not depend on the other partitions.
    lake = LocalStorage(base)
    alone = build_manifest([load_partition(lake, "en_mixed")], CFG).manifest.to_pylist()
    full = {r["sample_key"]: r["split"] for r in rows}
    assert alone and all(full[r["sample_key"]] == r["split"] for r in alone)
    salted = build_manifest([load_partition(lake, p) for p in PARTITIONS], ManifestConfig(dev_fraction=0.2,
                            test_fraction=0.2, split_salt="other")).manifest.to_pylist()  # fmt: skip
    assert {r["sample_key"]: r["split"] for r in salted} != full
    # A damaged manifest is caught.
    spk = next(s for s in by_speaker if sum(1 for r in rows if r["speaker"] == s) > 1)
    i = next(i for i, r in enumerate(rows) if r["speaker"] == spk)
    moved = [dict(r) for r in rows]
    moved[i]["split"] = next(s for s in SPLITS if s != rows[i]["split"])
    problems = check_splits_disjoint(pa.Table.from_pylist(moved, schema=manifest.schema), CFG)
    assert [p["problem"] for p in problems] == ["speaker_in_several_splits"]
    doubled = pa.concat_tables([manifest, manifest.slice(0, 1)])
    assert any(p["problem"] == "key_repeated" for p in check_splits_disjoint(doubled, CFG))


# -- versions --------------------------------------------------------------------------------------------
def _objects(lake: LocalStorage, prefix: str) -> dict[str, tuple[int, int]]:
    return {o.key: (o.size, lake.local_path(o.key).stat().st_mtime_ns) for o in lake.iter_objects(prefix)}


def test_versions_are_written_once_and_never_touched(base, tmp_path) -> None:
    lake = copy_lake(base, tmp_path / "lake")
    first = run_manifests(lake, CFG)
    assert not first.reused and read_latest(lake)["version"] == first.version
    before = _objects(lake, "training_manifests/")
    again = run_manifests(lake, CFG)
    assert again.reused and again.version == first.version
    assert _objects(lake, "training_manifests/") == before  # latest.json included: nothing rewritten
    other = run_manifests(lake, ManifestConfig(max_error_rate=0.3))
    assert other.version != first.version and read_latest(lake)["version"] == other.version
    after = _objects(lake, L.manifest_layout(first.version).prefix)
    assert after == {k: v for k, v in before.items() if k.startswith(L.manifest_layout(first.version).prefix)}
    # New labels (a shard relabelled) -> a new version.
    key = L.current_labels_keys(lake, "en_mixed")[0]
    t = pq.read_table(lake.local_path(key))
    texts = t.column("text").to_pylist()
    texts[0] = "relabelled"
    with lake.staged_file(key, suffix=".parquet") as path:
        pq.write_table(t.set_column(t.schema.get_field_index("text"), "text", pa.array(texts)), path)
    third = run_manifests(lake, CFG)
    assert third.version not in (first.version, other.version)
    texts3 = pq.read_table(lake.local_path(L.manifest_layout(third.version).manifest_key)).column("text")
    assert "relabelled" in texts3.to_pylist()
    record = json.loads(lake.read_bytes(L.manifest_layout(third.version).record_key))
    fp = json.loads(lake.read_bytes(L.labels_current_key("en_conversational")))["fingerprint"]
    assert fp in record["teacher_fingerprints"] and record["config"] == CFG.to_dict()
    assert record["teachers"]["en_conversational"]["fingerprint"] == fp
    assert lake.exists(L.manifests_latest_key())


def test_missing_inputs_give_a_clear_error(base, tmp_path) -> None:
    lake = copy_lake(base, tmp_path / "lake")
    # A partition without kept clips (the labels asset writes a "no-shards" current.json) adds nothing.
    lake.write_bytes(
        L.labels_current_key("empty_part"), json.dumps({"version": "no-shards", "fingerprint": ""}).encode()
    )
    s = run_manifests(lake, CFG)
    record, manifest, dropped = load_version(lake, s.version)
    assert "empty_part" in record["partitions"] and "" not in record["teacher_fingerprints"]
    assert check_counts(lake, record, manifest, dropped) == []
    assert [c for c in record["counts"] if c["partition"] == "empty_part"][0]["accounted"] == 0
    lake.delete(L.shard_layout("en_mixed").index_key)
    with pytest.raises(ManifestInputError, match="index.parquet"):
        run_manifests(lake, CFG)
    (tmp_path / "empty").mkdir()
    empty = LocalStorage(tmp_path / "empty")
    with pytest.raises(ManifestInputError, match="no partition has teacher labels"):
        run_manifests(empty, CFG)


# -- formats ---------------------------------------------------------------------------------------------
def test_nemo_manifests_point_into_their_tars(built) -> None:
    lake, manifest = built["lake"], built["manifest"]
    layout = L.manifest_layout(built["summary"].version)
    members: dict[str, set[str]] = {}
    rows = manifest.to_pylist()
    for split in SPLITS:
        entries = read_jsonl(lake, layout.nemo_manifest_key(split))
        tars = lake.read_bytes(layout.nemo_tars_key(split)).decode().splitlines()
        want = [r for r in rows if r["split"] == split]
        assert len(entries) == len(want) and len(tars) == len(set(tars))
        for e, r in zip(entries, want, strict=True):
            assert set(e) == {"audio_filepath", "duration", "text", "shard_id", "lang", "source_key",
                              "source_offset_s", "segment_index"}  # fmt: skip
            assert (e["audio_filepath"], e["duration"], e["text"], e["lang"]) == (
                r["audio_member"], r["duration_s"], r["text"], r["language"])  # fmt: skip
            assert (e["source_key"], e["source_offset_s"], e["segment_index"]) == (r["source_key"], 0.0, -1)
            assert tars[e["shard_id"]] == r["shard_key"]  # relative to the lake root
            tar = str(lake.local_path(tars[e["shard_id"]]))
            assert Path(tar).is_file()
            if tar not in members:
                with tarfile.open(tar) as tf:
                    members[tar] = set(tf.getnames())
            assert e["audio_filepath"] in members[tar]
        buckets = sorted({r["bucket"] for r in want})
        per_bucket = [read_jsonl(lake, layout.nemo_manifest_key(split, b)) for b in buckets]
        assert sorted(e["audio_filepath"] for es in per_bucket for e in es) == sorted(
            e["audio_filepath"] for e in entries
        )
    assert check_formats(lake, built["record"], manifest) == []


def test_lhotse_cuts_have_monocut_fields_and_their_command_reads_the_member(built) -> None:
    lake, manifest = built["lake"], built["manifest"]
    layout = L.manifest_layout(built["summary"].version)
    cuts = [c for s in SPLITS for c in read_jsonl(lake, layout.lhotse_cuts_key(s))]
    assert len(cuts) == manifest.num_rows
    by_key = {r["sample_key"]: r for r in manifest.to_pylist()}
    for c in cuts[:6]:
        # The fields MonoCut.from_dict / Recording.from_dict / SupervisionSegment.from_dict take.
        assert c["type"] == "MonoCut"
        assert {"id", "start", "duration", "channel", "supervisions", "recording"} <= set(c)
        rec = c["recording"]
        assert {"id", "sources", "sampling_rate", "num_samples", "duration"} <= set(rec)
        assert rec["sources"][0]["type"] == "command" and rec["sources"][0]["channels"] == [0]
        sup = c["supervisions"][0]
        assert {"id", "recording_id", "start", "duration", "text"} <= set(sup)
        r = by_key[c["id"]]
        env = {**os.environ, "ASR_DISTILL_LAKE": str(lake.root)}
        source = rec["sources"][0]["source"]
        out = subprocess.run(source, shell=True, capture_output=True, check=True, env=env).stdout
        assert out == lake.read_range(r["shard_key"], r["audio_offset"], r["audio_size"])
        audio, rate = sf.read(io.BytesIO(out))
        assert rate == rec["sampling_rate"] and len(audio) == rec["num_samples"]
    assert lhotse_cut(lake, CFG, next(iter(by_key.values())))["id"]


def test_a_copied_lake_keeps_working_manifests_under_the_same_version(built, tmp_path) -> None:
    """Manifests name shards relative to the lake: a copy resolves every NeMo shard path and every
    Lhotse command, with the original gone; the version (a hash of content) does not change."""
    lake, version = built["lake"], built["summary"].version
    layout = L.manifest_layout(version)
    copy = copy_lake(lake.root, tmp_path / "elsewhere" / "lake")
    hidden = lake.root.with_name(lake.root.name + "-moved-away")
    os.rename(lake.root, hidden)
    try:
        env = {**os.environ, "ASR_DISTILL_LAKE": str(copy.root)}
        for split in SPLITS:
            rows = [r for r in built["manifest"].to_pylist() if r["split"] == split]
            buckets = sorted({r["bucket"] for r in rows})
            for bucket in [None, *buckets]:
                lines = copy.read_bytes(layout.nemo_tars_key(split, bucket)).decode().splitlines()
                assert lines and not any(os.path.isabs(x) or "://" in x for x in lines)
                paths = nemo_tarred_filepaths(str(copy.root), split, bucket, version=version)
                assert all(Path(p).is_file() and Path(p).is_relative_to(copy.root) for p in paths)
                names = {}
                for e in read_jsonl(copy, layout.nemo_manifest_key(split, bucket)):
                    tar = paths[e["shard_id"]]
                    if tar not in names:
                        with tarfile.open(tar) as tf:
                            names[tar] = set(tf.getnames())
                    assert e["audio_filepath"] in names[tar]
            for c in read_jsonl(copy, layout.lhotse_cuts_key(split))[:3]:
                source = c["recording"]["sources"][0]["source"]
                out = subprocess.run(
                    source, shell=True, capture_output=True, check=True, env=env, cwd=tmp_path
                ).stdout
                audio, rate = sf.read(io.BytesIO(out))
                assert rate == c["recording"]["sampling_rate"] and len(audio) == c["recording"]["num_samples"]
        again = run_manifests(copy, CFG)
        assert (again.version, again.reused) == (version, True)
        assert check_formats(copy, again.record, load_version(copy, version)[1]) == []
    finally:
        os.rename(hidden, lake.root)


# -- checks catch damage -------------------------------------------------------------------------------
def test_checks_pass_and_catch_damage(built, tmp_path) -> None:
    lake, record, manifest, dropped = built["lake"], built["record"], built["manifest"], built["dropped"]
    assert check_members(lake, manifest) == [] and check_durations(manifest, CFG) == []
    rows = manifest.to_pylist()
    bad = [dict(r) for r in rows]
    bad[0]["audio_offset"] += 512
    bad[1]["sample_key"] = "not-a-sample-0000000000000000"
    bad[2]["duration_s"] = -1.0
    bad[3]["duration_s"] = 31.0
    t = pa.Table.from_pylist(bad, schema=manifest.schema)
    assert {p["problem"] for p in check_members(lake, t)} >= {"audio_offset_differs", "not_in_shard_index"}
    assert {p["problem"] for p in check_durations(t, CFG)} == {"not_positive", "out_of_bounds"}
    assert any(
        p["problem"] == "not_reconciled" for p in check_counts(lake, record, manifest, dropped.slice(1))
    )
    # A shard damaged after the manifest was written.
    copy = copy_lake(lake.root, tmp_path / "lake")
    shard = rows[0]["shard_key"]
    path = copy.local_path(shard)
    data = bytearray(path.read_bytes())
    off = rows[0]["audio_offset"] - 512
    data[off : off + 512] = bytes(512)
    path.write_bytes(bytes(data))
    assert any(p["problem"] == "no_tar_header_at_offset" for p in check_members(copy, manifest))
    path.write_bytes(bytes(data[:1024]))
    assert any(p["problem"] == "member_outside_tar" for p in check_members(copy, manifest))
    shutil.rmtree(tmp_path / "lake")


# -- segments of long recordings -----------------------------------------------------------------------
LF = SEGMENTED_PARTITION


@pytest.fixture(scope="module")
def segmented(demo_corpus, tmp_path_factory) -> dict[str, Any]:
    demo_raw, _ = demo_corpus
    built = build_segmented_lake(
        demo_raw, tmp_path_factory.mktemp("segmented"), tmp_path_factory.getbasetemp()
    )
    summary = run_manifests(built["lake"], CFG, partitions=[LF])
    record, manifest, dropped = load_version(built["lake"], summary.version)
    return {**built, "summary": summary, "record": record, "manifest": manifest, "dropped": dropped}


def test_segments_carry_their_provenance_into_the_manifest(segmented) -> None:
    manifest, record = segmented["manifest"], segmented["record"]
    kept_segs = {r["segment_key"]: r for r in segmented["segments"].to_pylist() if r["keep"]}
    rows = manifest.to_pylist()
    assert segmented["dropped"].num_rows == 0 and record["counts"][0]["accounted"] == len(rows)
    segs = {r["segment_key"]: r for r in rows if r["segment_key"] is not None}
    clips = [r for r in rows if r["segment_key"] is None]
    assert set(segs) == set(kept_segs) and len(clips) == segmented["clips"]
    assert all((r["segment_index"], r["offset_s"]) == (-1, 0.0) and r["source_key"].startswith(LF + "/short/")
               for r in clips)  # fmt: skip
    for key, r in segs.items():
        seg = kept_segs[key]
        assert (r["source_key"], r["segment_index"], r["offset_s"]) == (
            seg["source_key"], seg["segment_index"], seg["offset_s"])  # fmt: skip
        assert r["reference_text"] is None and r["error_rate"] is None  # no aligned reference
        assert r["speaker"] == (NARRATOR if r["source_key"].endswith("monologue.wav") else None)
    lake = segmented["lake"]
    assert check_members(lake, manifest) == [] and check_durations(manifest, CFG) == []
    assert check_formats(lake, record, manifest) == []
    assert check_counts(lake, record, manifest, segmented["dropped"]) == []


def test_all_segments_of_a_recording_share_one_split(segmented) -> None:
    manifest = segmented["manifest"]
    rows = [r for r in manifest.to_pylist() if r["segment_key"] is not None]
    by_recording: dict[str, set[str]] = {}
    for r in rows:
        by_recording.setdefault(r["source_key"], set()).add(r["split"])
    assert set(by_recording) == set(segmented["long_keys"]) and all(
        len(v) == 1 for v in by_recording.values()
    )
    for key, (split,) in by_recording.items():
        # the speaker when known (speaker-disjoint with the clips of that speaker), else the recording
        group = f"spk:{NARRATOR}" if key.endswith("monologue.wav") else f"src:{key}"
        assert split == CFG.split_of(group)
    assert max(Counter(r["source_key"] for r in rows).values()) >= 2
    assert check_splits_disjoint(manifest, CFG) == []
    # the check fails when a recording's segments are in two splits
    multi = next(k for k, n in Counter(r["source_key"] for r in rows).items() if n >= 2)
    i = next(i for i, r in enumerate(manifest.to_pylist()) if r["source_key"] == multi)
    splits = manifest.column("split").to_pylist()
    splits[i] = next(s for s in SPLITS if s != splits[i])
    bad = manifest.set_column(0, "split", pa.array(splits, pa.string()))
    assert {p["problem"] for p in check_splits_disjoint(bad, CFG)} >= {"recording_in_several_splits"}


def test_nemo_lines_carry_no_offset_and_lhotse_cuts_name_the_segment(segmented) -> None:
    lake, manifest = segmented["lake"], segmented["manifest"]
    layout = L.manifest_layout(segmented["summary"].version)
    by_member = {r["audio_member"]: r for r in manifest.to_pylist()}
    seen = 0
    for split in SPLITS:
        for e in read_jsonl(lake, layout.nemo_manifest_key(split)):
            r = by_member[e["audio_filepath"]]
            assert "offset" not in e  # NeMo would seek inside the member
            assert (e["source_key"], e["source_offset_s"], e["segment_index"]) == (
                r["source_key"], r["offset_s"], r["segment_index"])  # fmt: skip
            seen += 1
        for cut in read_jsonl(lake, layout.lhotse_cuts_key(split)):
            r = next(x for x in by_member.values() if x["sample_key"] == cut["id"])
            assert cut["start"] == 0.0 and cut["duration"] == r["duration_s"]
            c = cut["custom"]
            assert (c["source_key"], c["segment_key"], c["segment_index"], c["source_offset_s"]) == (
                r["source_key"], r["segment_key"], r["segment_index"], r["offset_s"])  # fmt: skip
    assert seen == manifest.num_rows
    # the formats check catches an offset field
    key = layout.nemo_manifest_key("train")
    lines = read_jsonl(lake, key)
    if lines:
        lines[0]["offset"] = 1.0
        lake.write_bytes(key, "".join(json.dumps(x) + "\n" for x in lines).encode())
        assert {p["problem"] for p in check_formats(lake, segmented["record"], manifest)} >= {
            "nemo_offset_field"
        }
