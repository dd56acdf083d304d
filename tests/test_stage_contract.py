"""The shared pieces of the stage contract: lake layout, table/record I/O, config base, language facts,
the labels record, the progress type."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from blake3 import blake3

from asr_distill import lake as L
from asr_distill.hashing import object_hex, path_hex
from asr_distill.language import CHAR_LANGUAGES, primary_language
from asr_distill.stages.clean import CleanConfig
from asr_distill.stages.labels import LabelsRecord, QualityConfig
from asr_distill.stages.manifests import ManifestConfig
from asr_distill.stages.progress import Progress, Reporter, to_log
from asr_distill.stages.shards import ShardConfig
from asr_distill.storage import LocalStorage
from asr_distill.tableio import (
    read_json,
    read_parquet_metadata,
    read_table,
    read_table_bytes,
    write_json,
    write_table,
)


def test_primary_language_keeps_both_callers_rules() -> None:
    # labels / manifests: unknown stays unknown
    assert primary_language("en-US") == "en" and primary_language("EN_gb") == "en"
    assert (
        primary_language(None) is None and primary_language("  ") is None and primary_language("-x") is None
    )
    # clean: an empty code is the configured default language
    assert primary_language("zh_CN", "en") == "zh"
    assert primary_language(None, "EN") == "en" and primary_language("", "ja") == "ja"
    assert primary_language("-x", "en") == ""  # as before: a code without a primary subtag stays empty
    assert CleanConfig().char_languages == CHAR_LANGUAGES == QualityConfig().cer_languages


@pytest.mark.parametrize(
    "cfg",
    [
        CleanConfig(min_duration_s=1.0, char_languages=frozenset({"ja"})),
        ShardConfig(bucket_edges=(0.0, 5.0, 30.0)),
        ManifestConfig(drop_flags=("empty_text",), max_error_rate=0.3),
        QualityConfig(cer_languages=frozenset({"zh"})),
    ],
)
def test_stage_configs_share_one_base(cfg) -> None:  # type: ignore[no-untyped-def]
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON values
    assert type(cfg).from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.to_json() == json.dumps(d, sort_keys=True)
    with pytest.raises(ValueError, match="unknown"):
        type(cfg).from_dict({**d, "no_such_field": 1})
    assert len(cfg.fingerprint()) == 64


def test_manifest_fingerprint_is_unchanged() -> None:
    # The value before the configs shared a base (78c374ab...) moved only with the manifests' format 2
    # (segment provenance columns, 0f925982...) and format 3 (BLAKE3 checksums in the records): manifest
    # versions (and their paths) must not move otherwise.
    assert (
        ManifestConfig().fingerprint() == "413be9c912c5860da48206dba193edb1d6b1fe618dbfe2d08d9768472254caa8"
    )


def test_lake_layout_owns_every_key() -> None:
    sl = L.shard_layout("p")
    assert sl.prefix == "webdataset_shards/p/"
    assert sl.shard_key("bucket-00.0-05.0", 3) == "webdataset_shards/p/bucket-00.0-05.0/shard-000003.tar"
    assert sl.commit_key("b", 0) == "webdataset_shards/p/_commits/b/shard-000000.json"
    assert (sl.index_key, sl.shards_key, sl.wids_key) == (
        "webdataset_shards/p/index.parquet",
        "webdataset_shards/p/shards.parquet",
        "webdataset_shards/p/wids.json",
    )
    assert L.labels_key("p", "v1", sl.shard_key("b", 0)) == "teacher_labels/p/v1/b/shard-000000.parquet"
    with pytest.raises(ValueError):
        L.labels_key("p", "v1", "webdataset_shards/q/b/shard-000000.tar")
    ml = L.manifest_layout("abc")
    assert ml.record_key == "training_manifests/abc/_MANIFEST.json"
    assert (
        ml.nemo_manifest_key("train", "b")
        == "training_manifests/abc/nemo/train/b/tarred_audio_manifest.jsonl"
    )
    assert L.manifests_latest_key() == "training_manifests/latest.json"
    assert L.raw_prefix("p") == "p/"
    with pytest.raises(ValueError):
        L.shard_layout("a/b")
    assert L.cleaned_long_form_key("p") == "cleaned_audio/p/long_form.parquet"
    assert L.segmented_recordings_key("p") == "segmented_audio/p/recordings.parquet"
    assert L.segmented_segments_key("p") == "segmented_audio/p/segments.parquet"
    assert L.segmented_tar_key("p", "rec-0123") == "segmented_audio/p/tars/rec-0123.tar"
    assert L.segmented_tars_prefix("p") == "segmented_audio/p/tars/"
    with pytest.raises(ValueError):
        L.segmented_prefix("a/b")
    tables = {"audio_index", "cleaned", "quarantine", "long_form", "segment_recordings", "segments"}
    assert tables | {"shard_index", "shards", "labels"} <= set(L.registered_tables())


def test_tableio_round_trips(tmp_path: Path) -> None:
    lake = LocalStorage(tmp_path)
    table = pa.table({"a": [1, 2], "b": ["x", None]}).replace_schema_metadata({b"k": b"v"})
    write_table(lake, "t/x.parquet", table)
    assert read_table(lake, "t/x.parquet").equals(table)
    got, sha = read_table_bytes(lake, "t/x.parquet", ["a"])
    assert got.column_names == ["a"]
    data = lake.read_bytes("t/x.parquet")
    assert (
        sha
        == blake3(data).hexdigest()
        == object_hex(lake, "t/x.parquet")
        == path_hex(tmp_path / "t/x.parquet")
    )
    assert (read_parquet_metadata(lake, "t/x.parquet") or {})[b"k"] == b"v"
    assert read_parquet_metadata(lake, "t/missing.parquet") is None
    assert write_json(lake, "r.json", {"b": 1, "a": [1]}) == b'{\n "a": [\n  1\n ],\n "b": 1\n}'
    assert read_json(lake, "r.json") == {"a": [1], "b": 1} and read_json(lake, "none.json") is None


def test_labels_record_writes_and_reads_current_json(tmp_path: Path) -> None:
    lake = LocalStorage(tmp_path)
    rec = LabelsRecord(
        version="0123456789abcdef",
        fingerprint="f" * 64,
        teacher={"model_id": "tiny.en"},
        teacher_config={"backend": "faster_whisper", "beam_size": 1},
        quality=QualityConfig().to_dict(),
        thresholds={"max_flag_rates": {}, "max_error_row_rate": 0.05, "max_teacher_wer": 0.35},
        shards={"webdataset_shards/p/b/shard-000000.tar": "a" * 64},
        labels=["teacher_labels/p/0123456789abcdef/b/shard-000000.parquet"],
        rows=3,
        labelled=2,
        errors=1,
    )
    rec.write(lake, "p")
    blob = lake.read_bytes(L.labels_current_key("p"))
    assert blob == json.dumps(rec.to_dict(), sort_keys=True, indent=1).encode()
    assert lake.read_bytes(L.labels_summary_key("p", rec.version)) == blob
    assert LabelsRecord.read_current(lake, "p") == rec
    assert LabelsRecord.read_current(lake, "other") is None
    assert rec.cer_languages == CHAR_LANGUAGES


def test_one_progress_type() -> None:
    seen: list[Progress] = []
    say = Reporter("clean", "p", seen.append)
    say("3 clips", done=3, total=5)
    lines: list[str] = []
    Reporter("index", None, to_log(lines.append))("hello")
    Reporter("shards", "p", None)("dropped")  # no progress function: nothing happens
    assert seen == [Progress("clean", "p", "3 clips", 3, 5, None)] and str(seen[0]) == "3 clips"
    assert lines == ["hello"]
