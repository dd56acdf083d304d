"""The student-side loader: bucketed batches capped by seconds, even across ranks, audio read from shards."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from asr_distill.stages.manifests import ManifestConfig, run_manifests
from asr_distill.student import BucketBatchSampler, Sample, ShardAudioReader, iter_batches, read_split
from tests.manifests_fixtures import build_labelled_lake, copy_lake


@pytest.fixture(scope="module")
def lake(demo_corpus, tmp_path_factory):
    raw, _ = demo_corpus
    base = build_labelled_lake(raw, tmp_path_factory.getbasetemp() / "manifests_base")
    store = copy_lake(base, tmp_path_factory.mktemp("student") / "lake")
    run_manifests(store, ManifestConfig(dev_fraction=0.1, test_fraction=0.1))
    return store


def _synthetic(n: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    edges = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0]
    out = []
    for i in range(n):
        d = round(rng.uniform(0.5, 29.9), 3)
        b = max(j for j, e in enumerate(edges[:-1]) if e <= d)
        out.append(Sample("p", "s.tar", f"k{i}", 512, 10, int(d * 16000), 16000, d, "t", "en", f"bucket-{b}"))
    return out


@pytest.mark.parametrize("ranks", [1, 2, 3, 5, 8])
def test_batches_are_capped_even_and_cover_the_split_once(ranks: int) -> None:
    samples = _synthetic(300, ranks)
    bucket_of = {s.sample_key: s.bucket for s in samples}
    for remainder in ("split", "drop"):
        sampler = BucketBatchSampler(samples, 45.0, num_ranks=ranks, seed=7, remainder=remainder)
        for epoch in (0, 1):
            per_rank = sampler.epoch_batches(epoch)
            assert len(per_rank) == ranks and len({len(b) for b in per_rank}) == 1
            used = Counter(i for batches in per_rank for b in batches for i in b)
            assert max(used.values()) == 1  # no sample twice in an epoch
            if remainder == "split":
                assert set(used) == set(range(len(samples)))
            for batches in per_rank:
                for b in batches:
                    assert b and sum(samples[i].duration_s for i in b) <= 45.0
                    assert len({bucket_of[samples[i].sample_key] for i in b}) == 1
        assert sampler.epoch_batches(0) == BucketBatchSampler(samples, 45.0, num_ranks=ranks, seed=7,
                                                              remainder=remainder).epoch_batches(0)  # fmt: skip
        assert sampler.epoch_batches(0) != sampler.epoch_batches(1)


def test_sampler_refuses_a_cap_below_the_longest_clip() -> None:
    with pytest.raises(ValueError, match="longest"):
        BucketBatchSampler(_synthetic(10, 0), 5.0)
    with pytest.raises(ValueError):
        BucketBatchSampler(_synthetic(10, 0), 40.0, num_ranks=0)


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_ranks_read_the_manifest_and_decode_what_it_claims(lake, ranks: int) -> None:
    train = read_split(lake, "train")
    assert train and all(s.duration_s > 0 for s in train)
    claimed = {s.sample_key: s for s in train}
    seen: Counter[str] = Counter()
    counts = []
    for rank in range(ranks):
        n = 0
        for batch in iter_batches(lake, "train", rank=rank, num_ranks=ranks, epoch=3, max_batch_seconds=30.0):
            n += 1
            assert batch.audio.dtype == np.float32 and batch.audio.shape[0] == len(batch.keys)
            assert sum(claimed[k].duration_s for k in batch.keys) <= 30.0
            for key, length, text in zip(batch.keys, batch.lengths, batch.texts, strict=True):
                s = claimed[key]
                assert (
                    abs(int(length) - s.num_samples) <= 1
                    and abs(length / batch.sample_rate - s.duration_s) <= 1 / 16000
                )
                assert text == s.text
                seen[key] += 1
            assert np.all(batch.audio[np.arange(batch.audio.shape[1]) >= batch.lengths[:, None]] == 0)
        counts.append(n)
    assert len(set(counts)) == 1 and counts[0] > 0
    assert seen == Counter(claimed.keys())  # every train sample exactly once across ranks


def test_reader_decodes_every_split_to_its_claimed_length(lake) -> None:
    reader = ShardAudioReader(lake)
    for split in ("train", "dev", "test"):
        for s in read_split(lake, split):
            audio = reader.read(s)
            assert audio.ndim == 1 and abs(len(audio) - s.num_samples) <= 1
            assert np.isfinite(audio).all() and np.abs(audio).max() > 0
