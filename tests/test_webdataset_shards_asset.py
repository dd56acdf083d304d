"""The shards stage as a Dagster asset, read back the way a trainer would."""

from __future__ import annotations

import io
import json

import dagster as dg
import pyarrow.parquet as pq
import soundfile as sf
import webdataset as wds

from asr_distill import lake as layout
from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.assets.audio_index import audio_index
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.assets.webdataset_shards import webdataset_shards
from asr_distill.stages.shards import ShardConfig
from asr_distill.stages.shards.verify import check_tars, load_outputs
from tests.helpers import register_partitions, stage_resources


def _run(instance, raw, lake, partition, selection, **kw):
    return dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=selection,
        partition_key=partition,
        instance=instance,
        resources=stage_resources(raw.uri, lake.uri),
        **kw,
    )


def test_shards_materialise_and_read_back(demo_corpus, lake, instance):
    store, _ = demo_corpus
    register_partitions(instance, ["en_mixed"])
    result = _run(
        instance,
        store,
        lake,
        "en_mixed",
        dg.AssetSelection.assets(audio_index, cleaned_audio, webdataset_shards),
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    for name in (
        "shards_cover_kept_rows",
        "shards_tars_open",
        "shards_buckets",
        "shards_sizes",
        "shard_index__one_row_per_kept_clip",
        "shard_index__source_key__relationships_cleaned",
    ):
        assert checks.get(name) is True, (name, checks)
    md = result.asset_materializations_for_node("webdataset_shards")[0].metadata
    kept = pq.read_table(lake.local_path(layout.cleaned_kept_key("en_mixed")))
    assert md["samples"].value == kept.num_rows and md["failed_samples"].value == 0
    sl = layout.shard_layout("en_mixed")
    index = pq.read_table(lake.local_path(sl.index_key)).to_pylist()
    durations = {r["sample_key"]: r["duration_s"] for r in index}
    urls = sorted({str(lake.local_path(r["shard_key"])) for r in index})
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        audio, rate = sf.read(io.BytesIO(sample["flac"]))
        meta = json.loads(sample["json"])
        assert rate == 16000 and audio.ndim == 1
        seen[sample["__key__"]] = len(audio) / rate
        assert meta["source_key"].startswith("en_mixed/")
    assert seen.keys() == durations.keys()
    for key, dur in seen.items():
        assert abs(dur - durations[key]) < 1e-3
    # Re-running does not rewrite finished shards.
    again = _run(instance, store, lake, "en_mixed", dg.AssetSelection.assets(webdataset_shards))
    assert again.asset_materializations_for_node("webdataset_shards")[0].metadata["shards_written"].value == 0


def test_corrupted_shard_fails_the_blocking_tar_check(demo_corpus, lake, instance):
    store, _ = demo_corpus
    register_partitions(instance, ["en_conversational"])
    sel = dg.AssetSelection.assets(audio_index, cleaned_audio, webdataset_shards)
    assert _run(instance, store, lake, "en_conversational", sel).success
    sl = layout.shard_layout("en_conversational")
    shard_key = pq.read_table(lake.local_path(sl.shards_key)).column("shard_key")[0].as_py()
    data = bytearray(lake.read_bytes(shard_key))
    data[2000] ^= 0xFF
    lake.local_path(shard_key).write_bytes(bytes(data))  # bypasses the atomic writer on purpose
    # What the blocking shards_tars_open check runs (Dagster 1.13 cannot run a partitioned check
    # without its asset in one job, and re-running the asset would repair the shard).
    index, shards = load_outputs(lake, "en_conversational")
    problems = check_tars(lake, shards, index, ShardConfig())
    assert problems and any(p.get("shard_key") == shard_key for p in problems)
    # Re-running the asset detects the damage and rewrites the shard.
    again = _run(instance, store, lake, "en_conversational", sel)
    assert again.success
    assert again.asset_materializations_for_node("webdataset_shards")[0].metadata["shards_written"].value >= 1
    assert not check_tars(lake, *reversed(load_outputs(lake, "en_conversational")), ShardConfig())


def test_kept_segments_in_the_lake_become_samples_and_pass_every_check(demo_corpus, lake, instance, tmp_path):
    """A partition whose lake holds segmentation outputs (two long recordings cut by the real
    segmentation core): the asset shards kept clips and kept segments, and every check passes."""
    from asr_distill.storage import LocalStorage
    from tests.segments_fixtures import segment, segments_table, write_long_recordings

    store, _ = demo_corpus
    part = "en_mixed"
    register_partitions(instance, [part])
    long_keys = write_long_recordings(tmp_path / "long_raw", part, tmp_path)
    segment(LocalStorage(tmp_path / "long_raw"), lake, part, long_keys)
    kept_segments = [r for r in segments_table(lake, part).to_pylist() if r["keep"]]
    result = _run(
        instance, store, lake, part, dg.AssetSelection.assets(audio_index, cleaned_audio, webdataset_shards)
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks
    assert {
        "shards_cover_kept_rows",
        "shard_index__one_row_per_kept_clip",
        "shard_index__source_key__unique",
    } <= set(checks)
    md = result.asset_materializations_for_node("webdataset_shards")[0].metadata
    kept = pq.read_table(lake.local_path(layout.cleaned_kept_key(part)))
    assert md["kept_segments"].value == md["segment_samples"].value == len(kept_segments) >= 3
    assert md["samples"].value == kept.num_rows + len(kept_segments) and md["failed_samples"].value == 0
    index = pq.read_table(lake.local_path(layout.shard_layout(part).index_key))
    assert sorted(k for k in index.column("segment_key").to_pylist() if k) == sorted(
        r["segment_key"] for r in kept_segments
    )
