"""Write one partition's shards: plan from the tables, encode on all cores, write tars in order.

Flow of :func:`write_shards`:

1. :func:`~asr_distill.stages.shards.plan.plan_partition` buckets and orders the kept rows and kept
   segments (tables only).
2. Per bucket, the shards a previous run committed are reused while they match the plan: same config
   fingerprint, same samples (sample key + digest of the planned content) at the same positions, closed
   for the same reason (the count bound; the bucket's end; or the byte bound, then with the same next
   sample, whose size decided it), and the object still has the recorded size and BLAKE3 checksum.
3. Every remaining clip is decoded (a segment of a long recording: its FLAC member read by byte range
   from the lake), checked and encoded in a process pool (bounded: at most
   ``2 * workers`` chunks in flight), and the results come back in plan order.
4. The driver appends members to the current shard (streamed to ``lake.open_write``: atomic, a crash
   leaves no partial tar under a final key) and closes it before a sample would take it past
   ``max_shard_bytes`` or ``max_shard_samples``. After each shard a commit record is written.
5. The sample index (streamed), the shard table and ``wids.json`` are written; objects of an earlier
   run that are no longer part of the result (stale shards, commit records) are deleted.

On a remote lake or raw store (``io_concurrency > 1``: OSS) the driver reads the clips and segment
members ahead of the workers (:mod:`asr_distill.stages.readahead`) and finished shards are uploaded in the
background (:class:`_Publisher`), so round trips overlap the encoding; the outputs are the same.

Shard boundaries depend only on the planned order and the encoded sizes, which are deterministic, so the
same inputs and settings give byte-identical shards whatever the number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from asr_distill import hashing
from asr_distill.lake import ShardLayout, shard_layout
from asr_distill.stages._procpool import ExecutorSpec, OrderedPool, chunked, default_workers
from asr_distill.stages.readahead import Fetched, PrefetchedStore, ReadAhead, wants_read_ahead
from asr_distill.stages.shards.config import ShardConfig
from asr_distill.stages.shards.encode import (
    AudioLoader,
    EncodedSample,
    StorageAudioLoader,
    encode_sample,
)
from asr_distill.stages.shards.plan import BucketPlan, PlannedSample, plan_partition
from asr_distill.stages.shards.schema import (
    COMMIT_KIND,
    COMMIT_VERSION,
    META_CONFIG,
    META_FINGERPRINT,
    META_VERSION,
    SAMPLE_INDEX_SCHEMA,
    SCHEMA_VERSION,
    SHARD_TABLE_SCHEMA,
    WIDS_KIND,
)
from asr_distill.stages.shards.tar import TarWriter
from asr_distill.storage import ObjectNotFoundError, Storage, StorageError

# -- worker side ------------------------------------------------------------------------------
# A chunk item: a planned sample, or one with its audio read ahead by the driver (a remote store).
Item = PlannedSample | tuple[PlannedSample, Fetched]


def _encode_chunk(
    chunk: list[Item], loader: AudioLoader, cfg: ShardConfig, lake: Storage | None
) -> list[EncodedSample]:
    out = []
    for item in chunk:
        if isinstance(item, tuple):
            s, fetched = item
            if s.member is None and isinstance(loader, StorageAudioLoader):
                view = PrefetchedStore(loader.store, fetched)
                clip_loader = StorageAudioLoader(view, loader.sample_rate, loader.quality)  # type: ignore[arg-type]
                out.append(encode_sample(s, clip_loader, cfg, lake))
            elif s.member is not None and lake is not None:
                out.append(encode_sample(s, loader, cfg, PrefetchedStore(lake, fetched)))  # type: ignore[arg-type]
            else:
                out.append(encode_sample(s, loader, cfg, lake))
        else:
            out.append(encode_sample(item, loader, cfg, lake))
    return out


def _crashed(item: Item, detail: str) -> EncodedSample:
    sample = item[0] if isinstance(item, tuple) else item
    return EncodedSample(sample, error="worker_crashed", detail=detail)


def _read_ahead(
    samples: Iterable[PlannedSample], loader: AudioLoader, lake: Storage, ra: ReadAhead[PlannedSample]
) -> Iterable[Item]:
    """Each sample with what its worker reads: the raw clip (a local copy, one GET) or the segment's
    member (one ranged GET of the lake's tar), in plan order, ``ra.depth`` at once."""
    raw = loader.store if isinstance(loader, StorageAudioLoader) else None

    def fetch(s: PlannedSample, ra: ReadAhead[PlannedSample]) -> Fetched:
        if s.member is not None:
            tar_key, offset, size = s.member
            return ra.range(lake, tar_key, offset, size) if lake.io_concurrency > 1 else Fetched(tar_key)
        if raw is not None and raw.io_concurrency > 1:
            return ra.copy(raw, s.source_key, _suffix(s.source_key), versioned=False)
        return Fetched(s.source_key)

    return ra.map(samples, fetch, lambda s: s.member[2] if s.member is not None else 0)


def _suffix(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[1] if "." in name.lstrip(".") else ""


# -- progress and summary -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ShardProgress:
    """Counts so far, for logs."""

    done: int  # planned samples handled (written, reused or failed)
    total: int
    shards_written: int
    shards_reused: int
    failed: int
    audio_s: float  # audio encoded in this run
    bytes_written: int
    elapsed_s: float

    @property
    def samples_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.done}/{self.total} samples ({self.failed} failed), {self.shards_written} shards written, "
            f"{self.shards_reused} reused, {self.bytes_written / 1e6:.1f} MB in {self.elapsed_s:.1f} s: "
            f"{self.samples_per_s:.1f} samples/s, {self.realtime_factor:.0f}x real time, {self.mb_per_s:.1f} MB/s"
        )


@dataclass
class BucketStats:
    shards: int = 0
    samples: int = 0
    hours: float = 0.0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "samples": self.samples, "hours": self.hours, "bytes": self.bytes}


@dataclass
class ShardSummary:
    """What a run did, as plain values for Dagster metadata (``to_dict``)."""

    partition: str
    config_fingerprint: str
    layout_prefix: str
    planned: int = 0  # kept rows (and kept segments) with a bucket
    planned_segments: int = 0  # of which segments of long recordings
    samples: int = 0  # samples in the shards (written now or reused)
    hours: float = 0.0
    shards: int = 0
    shards_written: int = 0
    shards_reused: int = 0
    bytes_total: int = 0  # size of all shards
    bytes_written: int = 0  # written by this run
    audio_s_encoded: float = 0.0
    stale_deleted: int = 0
    rejected: list[tuple[str, str]] = field(
        default_factory=list
    )  # (row key: clip or segment key, plan rejection)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (row key, reason, detail)
    written_keys: list[str] = field(default_factory=list)  # shards (re)written by this run
    buckets: dict[str, BucketStats] = field(default_factory=dict)
    elapsed_s: float = 0.0
    input_rows: int = 0  # kept rows given to the stage
    input_segments: int = 0  # kept segment rows given to the stage
    swept_temporaries: int = 0  # stale .asrd-tmp-* leftovers of killed writes removed from the folder

    @property
    def ok(self) -> bool:
        """Every kept row is in a shard."""
        return not self.rejected and not self.failed

    @property
    def failed_samples(self) -> int:
        return len(self.failed) + len(self.rejected)

    @property
    def reasons(self) -> dict[str, int]:
        """Rows not in a shard, per plan rejection or failure reason."""
        return dict(
            collections.Counter(r for _, r in self.rejected)
            + collections.Counter(r for _, r, _ in self.failed)
        )

    @property
    def mb_per_s(self) -> float:
        el = self.elapsed_s
        return round(self.bytes_written / 1e6 / el, 3) if el > 0 else 0.0

    @property
    def realtime_factor(self) -> float:
        el = self.elapsed_s
        return round(self.audio_s_encoded / el, 1) if el > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        el = self.elapsed_s
        return {
            "partition": self.partition,
            "config_fingerprint": self.config_fingerprint,
            "layout_prefix": self.layout_prefix,
            "planned": self.planned,
            "planned_segments": self.planned_segments,
            "samples": self.samples,
            "hours": self.hours,
            "shards": self.shards,
            "shards_written": self.shards_written,
            "shards_reused": self.shards_reused,
            "bytes_total": self.bytes_total,
            "bytes_written": self.bytes_written,
            "stale_deleted": self.stale_deleted,
            "rejected": len(self.rejected),
            "failed": len(self.failed),
            "reasons": self.reasons,
            "failed_examples": [list(f) for f in self.failed[:20]],
            "buckets": {k: v.to_dict() for k, v in self.buckets.items()},
            "elapsed_s": round(el, 3),
            "mb_per_s": self.mb_per_s,
            "realtime_factor": self.realtime_factor,
        }


# -- commit records ------------------------------------------------------------------------------
@dataclass
class _ShardRecord:
    """One finished shard: what its commit record holds."""

    shard_key: str
    bucket: int
    seq: int
    size: int
    blake3: str
    next: list[str] | None  # [sample_key, digest] of the sample after it; None at the bucket's end
    closed_by: str = "end"  # "samples" (count bound reached), "bytes" (the next sample did not fit), "end"
    sample_keys: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    source_keys: list[str] = field(default_factory=list)
    num_samples: list[int] = field(default_factory=list)
    pcm_blake3: list[str] = field(default_factory=list)
    segment_keys: list[str | None] = field(default_factory=list)  # None for a short clip
    segment_index: list[int] = field(default_factory=list)  # -1 for a short clip
    offset_s: list[float] = field(default_factory=list)
    audio: list[list[int]] = field(default_factory=list)  # [header_offset, data_offset, size]
    json: list[list[int]] = field(default_factory=list)

    def to_json(self, fingerprint: str, partition: str) -> bytes:
        doc = {
            "kind": COMMIT_KIND,
            "version": COMMIT_VERSION,
            "config_fingerprint": fingerprint,
            "partition": partition,
            "shard_key": self.shard_key,
            "bucket": self.bucket,
            "seq": self.seq,
            "size": self.size,
            "blake3": self.blake3,
            "next": self.next,
            "closed_by": self.closed_by,
            "samples": {
                "sample_key": self.sample_keys,
                "digest": self.digests,
                "source_key": self.source_keys,
                "num_samples": self.num_samples,
                "pcm_blake3": self.pcm_blake3,
                "segment_key": self.segment_keys,
                "segment_index": self.segment_index,
                "offset_s": self.offset_s,
                "audio": self.audio,
                "json": self.json,
            },
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> tuple[str, _ShardRecord]:
        doc = json.loads(data)
        if doc.get("kind") != COMMIT_KIND or doc.get("version") != COMMIT_VERSION:
            raise ValueError("not a shard commit record of this version")
        s = doc["samples"]
        rec = cls(
            shard_key=doc["shard_key"],
            bucket=int(doc["bucket"]),
            seq=int(doc["seq"]),
            size=int(doc["size"]),
            blake3=str(doc["blake3"]),
            next=doc["next"],
            closed_by=str(doc["closed_by"]),
            sample_keys=s["sample_key"],
            digests=s["digest"],
            source_keys=s["source_key"],
            num_samples=s["num_samples"],
            pcm_blake3=s["pcm_blake3"],
            segment_keys=s["segment_key"],
            segment_index=s["segment_index"],
            offset_s=s["offset_s"],
            audio=s["audio"],
            json=s["json"],
        )
        n = len(rec.sample_keys)
        if not all(
            len(x) == n
            for x in (
                rec.digests,
                rec.source_keys,
                rec.num_samples,
                rec.pcm_blake3,
                rec.segment_keys,
                rec.segment_index,
                rec.offset_s,
                rec.audio,
                rec.json,
            )
        ):
            raise ValueError("inconsistent commit record")
        return str(doc["config_fingerprint"]), rec


def _load_commit(lake: Storage, key: str) -> tuple[str, _ShardRecord] | None:
    try:
        return _ShardRecord.from_json(lake.read_bytes(key))
    except ObjectNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable or foreign: the shard is redone


def _reusable(
    lake: Storage,
    layout: ShardLayout,
    bucket: BucketPlan,
    fingerprint: str,
    cfg: ShardConfig,
    verify_checksum: bool,
) -> list[int]:
    """Sample counts of the leading shards of ``bucket`` that a previous run committed and that match
    the plan (records are re-read when their rows are emitted, so memory does not hold them all)."""
    out: list[int] = []
    planned = bucket.samples
    pos = 0
    while pos < len(planned):
        seq = len(out)
        loaded = _load_commit(lake, layout.commit_key(bucket.label, seq))
        if loaded is None:
            break
        fp, rec = loaded
        n = len(rec.sample_keys)
        if fp != fingerprint or rec.shard_key != layout.shard_key(bucket.label, seq) or n == 0:
            break
        window = planned[pos : pos + n]
        if len(window) != n or [s.sample_key for s in window] != rec.sample_keys:
            break
        if [s.digest for s in window] != rec.digests:
            break
        # The shard would close at the same place: at the bucket's end, at the count bound whatever
        # follows, or before the same next sample (whose encoded size decided it).
        after = planned[pos + n] if pos + n < len(planned) else None
        if rec.closed_by == "end" and after is not None:
            break
        if rec.closed_by == "samples" and (after is None or n != cfg.max_shard_samples):
            break
        if rec.closed_by == "bytes" and (after is None or rec.next != [after.sample_key, after.digest]):
            break
        if rec.closed_by not in ("end", "samples", "bytes"):
            break
        try:
            info = lake.stat(rec.shard_key)
        except ObjectNotFoundError:
            break
        if info.size != rec.size:
            break
        if verify_checksum and hashing.object_hex(lake, rec.shard_key) != rec.blake3:
            break
        out.append(n)
        pos += n
    return out


# -- shard building ---------------------------------------------------------------------------------
class _ShardBuilder:
    """One shard being written: a tar streamed into an atomic ``open_write`` of the lake."""

    def __init__(self, lake: Storage, key: str, bucket: int, seq: int, cfg: ShardConfig) -> None:
        self.key, self.bucket, self.seq, self.cfg = key, bucket, seq, cfg
        self._cm = lake.open_write(key, suffix=".tar")
        fh: BinaryIO = self._cm.__enter__()
        self._hash = hashing.new()
        self.tar = TarWriter(fh, self._hash)
        self.rec = _ShardRecord(shard_key=key, bucket=bucket, seq=seq, size=0, blake3="", next=None)
        self.duration_s = 0.0

    @property
    def count(self) -> int:
        return self.tar.members // 2

    def full_for(self, r: EncodedSample) -> str | None:
        """Why ``r`` cannot join this shard ("samples" or "bytes"), or None when it fits."""
        assert r.audio is not None and r.json is not None
        if self.count >= self.cfg.max_shard_samples:
            return "samples"
        if self.tar.size_after(len(r.audio), len(r.json)) > self.cfg.max_shard_bytes:
            return "bytes"
        return None

    def add(self, r: EncodedSample) -> None:
        assert r.audio is not None and r.json is not None and r.pcm_blake3 is not None
        s = r.sample
        ext = self.cfg.audio_extension
        a_hdr, a_off = self.tar.add(f"{s.sample_key}.{ext}", r.audio)
        j_hdr, j_off = self.tar.add(f"{s.sample_key}.json", r.json)
        rec = self.rec
        rec.sample_keys.append(s.sample_key)
        rec.digests.append(s.digest)
        rec.source_keys.append(s.source_key)
        rec.num_samples.append(r.num_samples)
        rec.pcm_blake3.append(r.pcm_blake3)
        rec.segment_keys.append(s.segment_key)
        rec.segment_index.append(s.segment_index)
        rec.offset_s.append(float(s.offset_s))
        rec.audio.append([a_hdr, a_off, len(r.audio)])
        rec.json.append([j_hdr, j_off, len(r.json)])
        self.duration_s += r.num_samples / self.cfg.sample_rate

    def finish(self, next_sample: PlannedSample | None, closed_by: str) -> _ShardRecord:
        """Close the tar and fill the record; :meth:`publish` then uploads the shard."""
        self.rec.size = self.tar.close()
        self.rec.blake3 = self._hash.hexdigest()
        self.rec.next = None if next_sample is None else [next_sample.sample_key, next_sample.digest]
        self.rec.closed_by = closed_by
        return self.rec

    def publish(self) -> None:
        self._cm.__exit__(None, None, None)  # the object appears under its key only now

    def abort(self, exc: BaseException) -> None:
        with contextlib.suppress(BaseException):
            self._cm.__exit__(type(exc), exc, exc.__traceback__)


class _Publisher:
    """Uploads finished shards and their commit records, in the background on a remote lake.

    Per shard, in this order: delete the shard's old commit record, upload the tar, write the new
    commit record (a crash in between leaves a shard without a record: redone next time; the old
    shard keeps its old record until then). Shards of a remote lake are published by ``threads``
    threads while the driver fills the next shard (their round trips off the critical path), at most
    ``threads`` at once (each holds its tar on local disk); a local lake publishes inline. :meth:`drain`
    waits for every upload and raises the first failure.
    """

    def __init__(self, lake: Storage, threads: int) -> None:
        self.lake = lake
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="shards-write") if threads > 0 else None
        self.limit = max(1, threads)
        self.pending: collections.deque[Future[None]] = collections.deque()

    def _run(self, builder: _ShardBuilder, commit_key: str, record: bytes) -> None:
        self.lake.delete(commit_key)
        builder.publish()
        self.lake.write_bytes(commit_key, record)

    def submit(self, builder: _ShardBuilder, commit_key: str, record: bytes) -> None:
        if self.pool is None:
            self._run(builder, commit_key, record)
            return
        while len(self.pending) >= self.limit:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._run, builder, commit_key, record))

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        """Wait for the uploads under way (finished shards are kept) without raising."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class _Outputs:
    """Accumulates the sample index (streamed to a staged Parquet file), the shard table and stats."""

    def __init__(
        self, writer: pq.ParquetWriter, partition: str, cfg: ShardConfig, fp: str, summary: ShardSummary
    ):
        self.writer, self.partition, self.cfg, self.fp, self.summary = writer, partition, cfg, fp, summary
        self.shard_rows: list[dict[str, Any]] = []
        self.shard_keys: set[str] = set()
        self.commit_keys: set[str] = set()

    def add(self, rec: _ShardRecord, layout: ShardLayout, reused: bool) -> None:
        cfg = self.cfg
        label = cfg.bucket_label(rec.bucket)
        lo, hi = cfg.bucket_edges[rec.bucket], cfg.bucket_edges[rec.bucket + 1]
        n = len(rec.sample_keys)
        ext = cfg.audio_extension
        durations = [k / cfg.sample_rate for k in rec.num_samples]
        cols = {
            "partition": [self.partition] * n,
            "shard_key": [rec.shard_key] * n,
            "bucket": [label] * n,
            "bucket_lo_s": [lo] * n,
            "bucket_hi_s": [hi] * n,
            "shard_seq": [rec.seq] * n,
            "position": list(range(n)),
            "sample_key": rec.sample_keys,
            "source_key": rec.source_keys,
            "segment_key": rec.segment_keys,
            "segment_index": rec.segment_index,
            "offset_s": rec.offset_s,
            "num_samples": rec.num_samples,
            "duration_s": durations,
            "pcm_blake3": rec.pcm_blake3,
            "audio_member": [f"{k}.{ext}" for k in rec.sample_keys],
            "audio_header_offset": [a[0] for a in rec.audio],
            "audio_offset": [a[1] for a in rec.audio],
            "audio_size": [a[2] for a in rec.audio],
            "json_member": [f"{k}.json" for k in rec.sample_keys],
            "json_header_offset": [j[0] for j in rec.json],
            "json_offset": [j[1] for j in rec.json],
            "json_size": [j[2] for j in rec.json],
        }
        self.writer.write_table(pa.Table.from_pydict(cols, schema=self.writer.schema))
        total = sum(durations)
        self.shard_rows.append(
            {
                "partition": self.partition,
                "shard_key": rec.shard_key,
                "bucket": label,
                "bucket_lo_s": lo,
                "bucket_hi_s": hi,
                "shard_seq": rec.seq,
                "nsamples": n,
                "duration_s": total,
                "size": rec.size,
                "blake3": rec.blake3,
                "first_sample_key": rec.sample_keys[0],
                "last_sample_key": rec.sample_keys[-1],
                "config_fingerprint": self.fp,
            }
        )
        self.shard_keys.add(rec.shard_key)
        self.commit_keys.add(layout.commit_key(label, rec.seq))
        sm = self.summary
        stats = sm.buckets.setdefault(label, BucketStats())
        stats.shards += 1
        stats.samples += n
        stats.hours += total / 3600
        stats.bytes += rec.size
        sm.shards += 1
        sm.samples += n
        sm.hours += total / 3600
        sm.bytes_total += rec.size
        if reused:
            sm.shards_reused += 1
        else:
            sm.shards_written += 1
            sm.bytes_written += rec.size
            sm.written_keys.append(rec.shard_key)


def _schema(schema: pa.Schema, cfg: ShardConfig, fp: str) -> pa.Schema:
    return schema.with_metadata(
        {
            META_CONFIG: cfg.to_json().encode(),
            META_FINGERPRINT: fp.encode(),
            META_VERSION: SCHEMA_VERSION.encode(),
        }
    )


def wids_index(layout: ShardLayout, shard_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``wids-shard-index-v1`` document: shard URLs relative to the index's own location (wids
    resolves them against the directory it loaded the JSON from)."""
    return {
        "__kind__": WIDS_KIND,
        "wids_version": 1,
        "name": layout.partition,
        "shardlist": [
            {
                "url": layout.relative(r["shard_key"]),
                "nsamples": r["nsamples"],
                "filesize": r["size"],
                "blake3": r["blake3"],
                "bucket": r["bucket"],
                "duration_s": r["duration_s"],
            }
            for r in shard_rows
        ],
    }


def _delete_stale(lake: Storage, layout: ShardLayout, outputs: _Outputs) -> int:
    """Remove shards and commit records of earlier runs that are not part of this result."""
    n = 0
    for obj in list(lake.iter_objects(layout.prefix)):  # listed first: no deletes under a live listing
        rel = layout.relative(obj.key)
        parts = rel.split("/")
        stale_shard = (
            len(parts) == 2
            and parts[0].startswith("bucket-")
            and parts[1].startswith("shard-")
            and parts[1].endswith(".tar")
            and obj.key not in outputs.shard_keys
        )
        stale_commit = (
            len(parts) == 3
            and parts[0] == "_commits"
            and parts[2].endswith(".json")
            and obj.key not in outputs.commit_keys
        )
        if stale_shard or stale_commit:
            lake.delete(obj.key)
            n += 1
    return n


# -- the driver -------------------------------------------------------------------------------------
def write_shards(
    rows: pa.Table | Iterable[Mapping[str, Any]],
    partition: str,
    lake: Storage,
    *,
    segments: pa.Table | Iterable[Mapping[str, Any]] | None = None,
    raw: Storage | None = None,
    loader: AudioLoader | None = None,
    config: ShardConfig | None = None,
    workers: int | None = None,
    executor: ExecutorSpec = "process",
    chunk_size: int = 4,
    verify_existing: bool = True,
    reuse: bool = True,
    progress: Callable[[ShardProgress], None] | None = None,
    progress_every_s: float = 10.0,
) -> ShardSummary:
    """Write every kept row of ``partition`` into WebDataset shards in ``lake`` (module docstring).

    ``rows``: the kept table (a pyarrow Table or row dicts; columns in
    :data:`~asr_distill.stages.shards.plan.INPUT_COLUMNS`); ``segments``: the segmentation stage's
    segment rows of the partition (only ``keep`` rows become samples; their audio is read by byte range
    from the segment tars in ``lake``, never from the raw recording). Clip audio comes from ``loader(key)`` (16 kHz
    mono float32; must be picklable for ``executor="process"``) or, by default, is decoded from ``raw``
    with the config's sample rate and resampling quality. ``verify_existing`` re-hashes a committed
    shard before reusing it (else its size is trusted); ``reuse=False`` rewrites every shard. A clip that cannot be written is reported in
    ``summary.failed``, never raised; :class:`~asr_distill.stages.shards.plan.ShardPlanError` is raised
    for input that cannot be planned.
    """
    cfg = config or ShardConfig()
    if loader is None:
        if raw is None:
            raise ValueError("give either raw (the store holding the audio) or loader")
        loader = StorageAudioLoader(raw, cfg.sample_rate, cfg.resample_quality)
    n_workers = workers or default_workers(executor)
    layout = shard_layout(partition)
    fp = cfg.fingerprint()
    start = time.monotonic()
    summary = ShardSummary(partition=partition, config_fingerprint=fp, layout_prefix=layout.prefix)

    plan = plan_partition(rows, partition, cfg, segments)
    summary.rejected = list(plan.rejected)
    summary.planned = plan.n_samples
    summary.planned_segments = sum(s.segment_key is not None for b in plan.buckets for s in b.samples)

    reused = {
        b.index: _reusable(lake, layout, b, fp, cfg, verify_existing) if reuse else [] for b in plan.buckets
    }
    todo: dict[int, list[PlannedSample]] = {}
    for b in plan.buckets:
        skip = sum(reused[b.index])
        todo[b.index] = b.samples[skip:]

    counters = {"done": 0, "failed": 0}
    last_report = [start]

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if progress is None or (not force and now - last_report[0] < progress_every_s):
            return
        last_report[0] = now
        progress(
            ShardProgress(
                counters["done"],
                summary.planned,
                summary.shards_written,
                summary.shards_reused,
                counters["failed"],
                summary.audio_s_encoded,
                summary.bytes_written,
                now - start,
            )
        )

    encoder: OrderedPool[PlannedSample, EncodedSample] = OrderedPool(
        _encode_chunk,
        (loader, cfg, lake),
        on_crash=_crashed,
        executor=executor,
        workers=n_workers,
        name="shards",
    )
    all_todo: Iterable[Item] = (s for b in plan.buckets for s in todo[b.index])
    raw_store = loader.store if isinstance(loader, StorageAudioLoader) else None
    remote = [st for st in (raw_store, lake) if wants_read_ahead(st, executor)]
    ra: ReadAhead[PlannedSample] | None = None
    if remote:
        # A remote store: the driver reads clips and segment members ahead while the workers encode.
        ra = ReadAhead(max(st.io_concurrency for st in remote if st is not None), name="shards-read")
        all_todo = _read_ahead(all_todo, loader, lake, ra)  # type: ignore[arg-type]
    batches = encoder.map(chunked(all_todo, chunk_size), in_flight=2 * n_workers)

    def released(batches: Iterable[list[EncodedSample]]) -> Iterator[EncodedSample]:
        for batch in batches:
            for r in batch:
                if ra is not None and r.sample.member is None:
                    ra.release(r.sample.source_key)  # its local copy is no longer needed
                yield r

    results = released(batches)
    publisher = _Publisher(lake, 2 if lake.io_concurrency > 1 else 0)
    builder: _ShardBuilder | None = None
    index_schema = _schema(SAMPLE_INDEX_SCHEMA, cfg, fp)
    try:
        with lake.staged_file(layout.index_key, suffix=".parquet") as index_path:
            with pq.ParquetWriter(index_path, index_schema, compression="zstd") as pw:
                out = _Outputs(pw, partition, cfg, fp, summary)
                for b in plan.buckets:
                    for seq, n in enumerate(reused[b.index]):
                        loaded = _load_commit(lake, layout.commit_key(b.label, seq))
                        if loaded is None or len(loaded[1].sample_keys) != n:
                            raise StorageError(
                                f"commit record of {layout.shard_key(b.label, seq)} changed during the run"
                            )
                        out.add(loaded[1], layout, reused=True)
                        counters["done"] += n
                        report()
                    seq = len(reused[b.index])
                    for _ in range(len(todo[b.index])):
                        r = next(results)
                        counters["done"] += 1
                        if not r.ok:
                            counters["failed"] += 1
                            summary.failed.append((r.sample.key, r.error or "", r.detail or ""))
                            report()
                            continue
                        why = None if builder is None else builder.full_for(r)
                        if builder is not None and why is not None:
                            out.add(builder.finish(r.sample, why), layout, reused=False)
                            done_builder, builder = builder, None
                            publisher.submit(
                                done_builder,
                                layout.commit_key(b.label, done_builder.seq),
                                done_builder.rec.to_json(fp, partition),
                            )
                            seq = done_builder.seq + 1
                        if builder is None:
                            builder = _ShardBuilder(lake, layout.shard_key(b.label, seq), b.index, seq, cfg)
                        builder.add(r)
                        summary.audio_s_encoded += r.num_samples / cfg.sample_rate
                        report()
                    if builder is not None:
                        out.add(builder.finish(None, "end"), layout, reused=False)
                        done_builder, builder = builder, None
                        publisher.submit(
                            done_builder,
                            layout.commit_key(b.label, done_builder.seq),
                            done_builder.rec.to_json(fp, partition),
                        )
                publisher.drain()  # every shard is up before the tables that describe them
                if next(results, None) is not None:  # pragma: no cover (a bookkeeping bug)
                    raise RuntimeError("more encoded samples than planned")
        shards_table = pa.Table.from_pylist(out.shard_rows, schema=_schema(SHARD_TABLE_SCHEMA, cfg, fp))
        with lake.staged_file(layout.shards_key, suffix=".parquet") as path:
            pq.write_table(shards_table, path, compression="zstd")
        wids = json.dumps(wids_index(layout, out.shard_rows), indent=1, ensure_ascii=False).encode("utf-8")
        lake.write_bytes(layout.wids_key, wids)
        summary.stale_deleted = _delete_stale(lake, layout, out)
    except BaseException as exc:
        if builder is not None:
            builder.abort(exc)
        raise
    finally:
        results.close()
        batches.close()  # shuts the pool down, also on errors and interrupts
        publisher.close()
        if ra is not None:
            ra.close()
    summary.failed.sort()
    summary.elapsed_s = time.monotonic() - start
    report(force=True)
    return summary
