"""A student-side data loader for the training manifests, the way a trainer reads them (numpy only).

Copy and adapt it. What it does:

1. :func:`read_split` reads one split of ``manifest.parquet`` (the version ``latest.json`` names, or one
   you pin) into :class:`Sample` rows.
2. :class:`BucketBatchSampler` groups samples by duration bucket, shuffles each bucket with
   ``numpy.random.default_rng([seed, epoch])``, packs them greedily into batches whose total duration is
   at most ``max_batch_seconds`` (dynamic batching: many short clips or a few long ones), shuffles the
   batches, and deals them to ``num_ranks`` ranks round-robin. Every rank gets the same number of
   batches (DDP steps must match). When the batch count is not a multiple of ``num_ranks``:

   * ``remainder="split"`` (default): the batches with the most samples are split in two until it is;
     every sample is used exactly once per epoch and no batch grows (needs at least ``num_ranks``
     samples; with fewer it falls back to ``"drop"``);
   * ``remainder="drop"``: the last ``count % num_ranks`` batches of the shuffled order are dropped
     (a different few each epoch).

3. :class:`ShardAudioReader` fetches a sample's FLAC member from its shard with one range read
   (``read_range(shard_key, audio_offset, audio_size)``: the offsets come from the manifest, no tar
   scanning) and decodes it with soundfile; :meth:`ShardAudioReader.batch` pads a batch to its longest
   clip and returns lengths, the way a CTC/seq2seq collate function does.

Same seed and epoch -> same batches on every rank, with no communication between ranks.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from asr_distill.storage import Storage, join_key, open_storage

MANIFEST_ROOT = "training_manifests"
_COLUMNS = [
    "split", "partition", "shard_key", "sample_key", "audio_offset", "audio_size", "num_samples",
    "sample_rate", "duration_s", "text", "language", "bucket",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sample:
    partition: str
    shard_key: str
    sample_key: str
    audio_offset: int
    audio_size: int
    num_samples: int
    sample_rate: int
    duration_s: float
    text: str
    language: str
    bucket: str


def _store(lake: Storage | str) -> Storage:
    return open_storage(lake) if isinstance(lake, str) else lake


def resolve_lake_path(lake: Storage | str, relative: str) -> str:
    """A manifest's lake-relative path (a line of ``tarred_audio_filepaths.txt``) as the trainer opens
    it: the local path when the lake is a directory, else its URL (e.g. ``oss://...``)."""
    store = _store(lake)
    key = join_key(relative)
    path = store.local_path(key)
    return str(path) if path is not None else store.url(key)


def nemo_tarred_filepaths(
    lake: Storage | str, split: str, bucket: str | None = None, version: str | None = None
) -> list[str]:
    """NeMo's ``tarred_audio_filepaths`` for one split (and bucket) of a manifest version (default:
    latest), resolved against ``lake`` wherever it lives now: the order is the file's, so ``shard_id``
    ``i`` of ``tarred_audio_manifest.jsonl`` is entry ``i``."""
    store = _store(lake)
    version = version or _latest_version(store)
    parts = ["nemo", split, *([bucket] if bucket else []), "tarred_audio_filepaths.txt"]
    lines = store.read_bytes(join_key(MANIFEST_ROOT, version, *parts)).decode("utf-8").splitlines()
    return [resolve_lake_path(store, line) for line in lines if line.strip()]


def _latest_version(store: Storage) -> str:
    latest = json.loads(store.read_bytes(join_key(MANIFEST_ROOT, "latest.json")))
    return str(latest["version"])


def read_split(lake: Storage | str, split: str, version: str | None = None) -> list[Sample]:
    """The rows of one split (``train``/``dev``/``test``) of a manifest version (default: latest)."""
    store = _store(lake)
    if version is None:
        version = _latest_version(store)
    data = store.read_bytes(join_key(MANIFEST_ROOT, version, "manifest.parquet"))
    table = pq.read_table(io.BytesIO(data), columns=_COLUMNS, filters=[("split", "=", split)])
    return [Sample(**{k: v for k, v in r.items() if k != "split"}) for r in table.to_pylist()]


class BucketBatchSampler:
    """Duration-bucketed batches capped by total seconds, dealt evenly to ``num_ranks`` ranks."""

    def __init__(
        self,
        samples: Sequence[Sample],
        max_batch_seconds: float,
        *,
        num_ranks: int = 1,
        seed: int = 0,
        remainder: Literal["split", "drop"] = "split",
    ) -> None:
        if num_ranks < 1:
            raise ValueError("num_ranks must be >= 1")
        if remainder not in ("split", "drop"):
            raise ValueError("remainder must be 'split' or 'drop'")
        longest = max((s.duration_s for s in samples), default=0.0)
        if longest > max_batch_seconds:
            raise ValueError(
                f"max_batch_seconds={max_batch_seconds} is below the longest sample ({longest:.2f}s)"
            )
        self.samples = list(samples)
        self.max_batch_seconds = float(max_batch_seconds)
        self.num_ranks = num_ranks
        self.seed = seed
        self.remainder = remainder

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        by_bucket: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.samples):
            by_bucket[s.bucket].append(i)
        batches: list[list[int]] = []
        for bucket in sorted(by_bucket):
            cur: list[int] = []
            total = 0.0
            for i in rng.permutation(by_bucket[bucket]).tolist():
                d = self.samples[i].duration_s
                if cur and total + d > self.max_batch_seconds:
                    batches.append(cur)
                    cur, total = [], 0.0
                cur.append(i)
                total += d
            if cur:
                batches.append(cur)
        return [batches[j] for j in rng.permutation(len(batches)).tolist()]

    def _even(self, batches: list[list[int]]) -> list[list[int]]:
        r = self.num_ranks
        if len(batches) % r == 0:
            return batches
        if self.remainder == "split" and len(self.samples) >= r * (len(batches) // r + 1):
            batches = list(batches)
            while len(batches) % r:
                j = max(range(len(batches)), key=lambda k: (len(batches[k]), -k))
                b = batches[j]
                half = len(b) // 2
                batches[j : j + 1] = [b[:half], b[half:]]
            return batches
        return batches[: len(batches) - len(batches) % r]

    def epoch_batches(self, epoch: int) -> list[list[list[int]]]:
        """Per rank, its batches (lists of sample indices) for ``epoch``."""
        batches = self._even(self._batches(epoch))
        return [batches[k :: self.num_ranks] for k in range(self.num_ranks)]

    def rank_batches(self, epoch: int, rank: int) -> list[list[Sample]]:
        if not 0 <= rank < self.num_ranks:
            raise ValueError(f"rank must be in [0, {self.num_ranks})")
        return [[self.samples[i] for i in b] for b in self.epoch_batches(epoch)[rank]]


@dataclass
class AudioBatch:
    audio: np.ndarray  # (batch, max_len) float32, zero-padded
    lengths: np.ndarray  # (batch,) int64, samples per clip
    texts: list[str]
    keys: list[str]
    sample_rate: int


class ShardAudioReader:
    """Reads samples' audio from their shards by byte range and decodes it."""

    def __init__(self, lake: Storage | str) -> None:
        self.store = _store(lake)

    def read(self, s: Sample) -> np.ndarray:
        data = self.store.read_range(s.shard_key, s.audio_offset, s.audio_size)
        if len(data) != s.audio_size:
            raise OSError(
                f"{s.shard_key}: short read for {s.sample_key} ({len(data)} of {s.audio_size} bytes)"
            )
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        if rate != s.sample_rate:
            raise ValueError(f"{s.sample_key}: decoded at {rate} Hz, manifest says {s.sample_rate}")
        return audio if audio.ndim == 1 else audio.mean(axis=1)

    def batch(self, samples: Sequence[Sample]) -> AudioBatch:
        clips = [self.read(s) for s in samples]
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        out = np.zeros((len(clips), int(lengths.max()) if len(clips) else 0), dtype=np.float32)
        for i, c in enumerate(clips):
            out[i, : len(c)] = c
        rate = samples[0].sample_rate if samples else 0
        return AudioBatch(out, lengths, [s.text for s in samples], [s.sample_key for s in samples], rate)


def iter_batches(
    lake: Storage | str,
    split: str,
    *,
    rank: int,
    num_ranks: int,
    epoch: int,
    max_batch_seconds: float,
    seed: int = 0,
    version: str | None = None,
    remainder: Literal["split", "drop"] = "split",
) -> Iterator[AudioBatch]:
    """What one rank's training loop iterates over in one epoch."""
    store = _store(lake)
    sampler = BucketBatchSampler(
        read_split(store, split, version),
        max_batch_seconds,
        num_ranks=num_ranks,
        seed=seed,
        remainder=remainder,
    )
    reader = ShardAudioReader(store)
    for batch in sampler.rank_batches(epoch, rank):
        yield reader.batch(batch)
