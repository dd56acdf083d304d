"""The Lhotse form read by Lhotse itself (optional: needs lhotse, which needs torch)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from asr_distill.lake import manifest_layout
from asr_distill.stages.manifests import ManifestConfig, run_manifests
from asr_distill.student import ShardAudioReader, read_split
from tests.manifests_fixtures import build_labelled_lake, copy_lake

lhotse = pytest.importorskip("lhotse")


@pytest.fixture(scope="module")
def built(demo_corpus, tmp_path_factory):
    raw, _ = demo_corpus
    base = build_labelled_lake(raw, tmp_path_factory.getbasetemp() / "manifests_base")
    lake = copy_lake(base, tmp_path_factory.mktemp("lhotse") / "lake")
    summary = run_manifests(lake, ManifestConfig(dev_fraction=0.2, test_fraction=0.2))
    return lake, summary.version


def _load_every_cut(lake, version) -> int:
    layout = manifest_layout(version)
    reader = ShardAudioReader(lake)
    total = 0
    for split in ("train", "dev", "test"):
        cuts = lhotse.CutSet.from_jsonl_lazy(lake.local_path(layout.lhotse_cuts_key(split)))
        rows = {s.sample_key: s for s in read_split(lake, split, version)}
        ids = []
        for cut in cuts:
            ids.append(cut.id)
            s = rows[cut.id]
            assert isinstance(cut, lhotse.MonoCut) and cut.sampling_rate == 16000
            assert cut.supervisions[0].text == s.text and cut.supervisions[0].language == s.language
            assert abs(cut.duration - s.duration_s) < 1e-9 and cut.num_samples == s.num_samples
            audio = cut.load_audio()
            assert audio.shape == (1, s.num_samples)
            np.testing.assert_allclose(audio[0], reader.read(s), atol=1e-6)
        assert sorted(ids) == sorted(rows)
        total += len(ids)
    assert total == pq.read_table(lake.local_path(layout.manifest_key)).num_rows
    return total


def test_lhotse_reads_the_cuts_and_their_audio_with_no_glue(built, monkeypatch) -> None:
    lake, version = built
    # The recordings' commands find the shards below $ASR_DISTILL_LAKE (paths relative to the lake).
    monkeypatch.setenv("ASR_DISTILL_LAKE", str(lake.root))
    assert _load_every_cut(lake, version) > 0


def test_lhotse_loads_a_copied_lake_with_the_original_gone(built, tmp_path, monkeypatch) -> None:
    lake, version = built
    copy = copy_lake(lake.root, tmp_path / "moved" / "lake")
    hidden = lake.root.with_name(lake.root.name + "-away")
    lake.root.rename(hidden)
    try:
        monkeypatch.setenv("ASR_DISTILL_LAKE", str(copy.root))
        monkeypatch.chdir(tmp_path)
        assert _load_every_cut(copy, version) > 0
    finally:
        hidden.rename(lake.root)


def test_our_shards_are_not_lhotse_shar(built) -> None:
    """Why the Lhotse form is cuts JSONL and not Shar: Shar's tar reader cannot parse our shards."""
    from lhotse.shar.readers.tar import TarIterator

    lake, version = built
    shard = read_split(lake, "train", version)[0].shard_key
    path = lake.local_path(shard)
    assert path.is_file()
    # Shar expects each .json member to be a Lhotse manifest; ours hold our metadata (bucket, ...).
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        list(TarIterator(path))


@pytest.fixture(scope="module")
def segmented(demo_corpus, tmp_path_factory):
    from tests.segments_fixtures import SEGMENTED_PARTITION, build_segmented_lake

    raw, _ = demo_corpus
    built = build_segmented_lake(raw, tmp_path_factory.mktemp("lh_segmented"), tmp_path_factory.getbasetemp())
    cfg = ManifestConfig(dev_fraction=0.2, test_fraction=0.2)
    summary = run_manifests(built["lake"], cfg, partitions=[SEGMENTED_PARTITION])
    return built, summary.version


def test_lhotse_loads_segment_cuts_with_their_provenance(segmented) -> None:
    built, version = segmented
    lake = built["lake"]
    layout = manifest_layout(version)
    segs = {r["segment_key"]: r for r in built["segments"].to_pylist() if r["keep"]}
    reader = ShardAudioReader(lake)
    seen = 0
    for split in ("train", "dev", "test"):
        rows = {s.sample_key: s for s in read_split(lake, split, version)}
        for cut in lhotse.CutSet.from_jsonl_lazy(lake.local_path(layout.lhotse_cuts_key(split))):
            c = cut.custom
            if c["segment_key"] is None:
                assert (c["segment_index"], c["source_offset_s"]) == (-1, 0.0)
                continue
            seg = segs[c["segment_key"]]
            assert (c["source_key"], c["segment_index"], c["source_offset_s"]) == (
                seg["source_key"], seg["segment_index"], seg["offset_s"])  # fmt: skip
            assert cut.start == 0.0 and cut.num_samples == seg["num_samples"]
            audio = cut.load_audio()
            np.testing.assert_allclose(audio[0], reader.read(rows[cut.id]), atol=1e-6)
            seen += 1
    assert seen == len(segs)
