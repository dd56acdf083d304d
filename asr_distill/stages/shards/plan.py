"""Plan a partition from the kept table alone: sample keys, duration buckets, order inside each bucket.

Input columns (resolved once per table, first name present wins; see :data:`INPUT_COLUMNS`):
``key`` and ``partition`` (required), ``num_samples`` (16 kHz sample count; else the duration comes from
``decoded_duration_s`` or ``duration_s``), ``reference_text`` or ``text``, ``language``, ``speaker``,
``pcm_blake3``. The clean stage's kept table has all of them.

Kept segments of long recordings (``segments`` argument: rows of the segmentation stage's
``segments.parquet`` with ``keep`` true) are planned alike: the sample key is
:func:`~asr_distill.stages.shards.layout.sample_key` of the segment key (``<source_key>#s000012``), the
source key is the recording's, the audio is the segment's FLAC member in its recording's tar (read by byte
range, see :mod:`.encode`), there is no reference text (a recording's transcript is not aligned to its
segments) and the group is the recording (``rec:<source_key>``), so one recording's segments are spread
over the bucket like one speaker's clips.

Order inside a bucket ("spread by group"): clips are grouped by speaker (``spk:<speaker>``) or, when the
speaker is unknown, by source folder (``dir:<folder>``). Group ``g`` with ``m`` clips, its clips sorted by
``h(seed, "item", sample_key)``, places its ``j``-th clip at ``(j + phase_g + jitter_j / 4) / m`` with
``phase_g = h(seed, "group", g)`` and ``jitter_j = h(seed, "jitter", sample_key)`` in ``[0, 1)``; the
bucket is sorted by that position (ties by the item hash). Every group is so spread evenly over the whole
bucket (two clips of one group are at least ``0.75 / m`` apart) and groups interleave in a random order.
A last pass repairs neighbours that still share a group by moving the next clip of another group
(at most ``REPAIR_WINDOW`` ahead) between them when that makes no new pair; moves are local, so a
dominant group stays spread instead of piling up at the end. ``h`` is sha256 (stable across Python versions and machines,
unlike ``hash()``); ``seed`` is the partition name. O(n log n).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from asr_distill.stages.shards.config import ShardConfig
from asr_distill.stages.shards.layout import is_safe_sample_key, sample_key

# normalised name -> input column names, in order of preference
INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "key": ("key",),
    "partition": ("partition",),
    "num_samples": ("num_samples",),
    "duration_s": ("decoded_duration_s", "duration_s"),
    "text": ("reference_text", "text"),
    "language": ("language",),
    "speaker": ("speaker",),
    "pcm_blake3": ("pcm_blake3",),
}

# Reasons a kept row gets no shard (reported in the summary; the coverage check then fails loudly).
PLAN_REJECTIONS = {
    "no_duration": "the row has neither num_samples nor a duration",
    "outside_buckets": "the duration lies outside [first, last] bucket edge",
    "no_member": "a kept segment row names no FLAC member (tar key, offset, size)",
}

_U64 = float(1 << 64)
REPAIR_WINDOW = 64


class ShardPlanError(ValueError):
    """The input cannot be planned (wrong partition, repeated keys, a sample key collision)."""


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class PlannedSample:
    """One clip as it will be written: everything its JSON member and its commit record need."""

    sample_key: str
    source_key: str
    partition: str
    bucket: int
    num_samples: int | None  # expected 16 kHz samples (None when only a duration is known)
    duration_s: float
    text: str | None
    language: str | None
    speaker: str | None
    pcm_blake3: str | None
    group: str
    # Segments of long recordings (defaults: a short clip). ``member``: (tar key, byte offset, size) of
    # the segment's FLAC member in the lake.
    segment_key: str | None = None
    segment_index: int = -1
    offset_s: float = 0.0
    member: tuple[str, int, int] | None = None

    @property
    def key(self) -> str:
        """The input row's key: the clean table's key of a short clip, the segment key of a segment."""
        return self.segment_key if self.segment_key is not None else self.source_key

    @property
    def digest(self) -> str:
        """sha256 of the planned content (what a re-run compares to reuse a shard). For a segment it
        covers the segment key, index, offset and content hash, so a changed segments table (another
        segmentation, another recording content) rewrites the shards that hold its segments; the
        member's location in its tar is left out (it changes no byte of the shard)."""
        payload = json.dumps(
            [
                self.sample_key,
                self.source_key,
                self.partition,
                self.bucket,
                self.num_samples,
                None if self.num_samples is not None else self.duration_s,
                self.text,
                self.language,
                self.speaker,
                self.pcm_blake3,
                self.segment_key,
                self.segment_index,
                self.offset_s,
            ],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class BucketPlan:
    index: int
    label: str
    lo: float
    hi: float
    samples: list[PlannedSample] = field(default_factory=list)


@dataclass
class PartitionPlan:
    partition: str
    buckets: list[BucketPlan]
    rejected: list[tuple[str, str]]  # (source key, reason)

    @property
    def n_samples(self) -> int:
        return sum(len(b.samples) for b in self.buckets)


STALE_HASHES = (
    "predates BLAKE3 content hashes (it has pcm_sha256, not pcm_blake3): materialise cleaned_audio "
    "(and segmented_audio) for the partition again"
)


def _resolve(names: Iterable[str]) -> dict[str, str | None]:
    present = set(names)
    if "pcm_sha256" in present and "pcm_blake3" not in present:
        raise ShardPlanError(f"the kept table {STALE_HASHES}")
    out: dict[str, str | None] = {}
    for norm, candidates in INPUT_COLUMNS.items():
        out[norm] = next((c for c in candidates if c in present), None)
    for required in ("key", "partition"):
        if out[required] is None:
            raise ShardPlanError(f"input rows need a {required!r} column")
    if out["num_samples"] is None and out["duration_s"] is None:
        raise ShardPlanError("input rows need num_samples, decoded_duration_s or duration_s")
    return out


def _str_or_none(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def group_of(source_key: str, speaker: str | None) -> str:
    """The interleaving group of a clip: its speaker when known, else its source folder."""
    if speaker:
        return f"spk:{speaker}"
    return f"dir:{posixpath.dirname(source_key)}"


def _iter_rows(
    rows: pa.Table | Iterable[Mapping[str, Any]],
) -> tuple[dict[str, str | None], Iterable[Mapping]]:
    if isinstance(rows, pa.Table):
        cols = _resolve(rows.column_names)
        wanted = sorted({c for c in cols.values() if c is not None})

        def gen() -> Iterable[Mapping[str, Any]]:
            for batch in rows.select(wanted).to_batches(max_chunksize=8192):
                yield from batch.to_pylist()

        return cols, gen()
    it = iter(rows)
    first = next(it, None)
    if first is None:
        return _resolve(["key", "partition", "num_samples"]), []
    cols = _resolve(first.keys())

    def chain() -> Iterable[Mapping[str, Any]]:
        yield first
        yield from it

    return cols, chain()


def spread_order(samples: list[PlannedSample], seed: str) -> list[PlannedSample]:
    """``samples`` in the seeded "spread by group" order (module docstring)."""
    groups: dict[str, list[tuple[int, PlannedSample]]] = defaultdict(list)
    for s in samples:
        groups[s.group].append((_h(seed, "item", s.sample_key), s))
    keyed: list[tuple[float, int, PlannedSample]] = []
    for g, members in groups.items():
        members.sort(key=lambda t: (t[0], t[1].sample_key))
        m = len(members)
        phase = _h(seed, "group", g) / _U64
        for j, (item_hash, s) in enumerate(members):
            jitter = _h(seed, "jitter", s.sample_key) / _U64
            keyed.append(((j + phase + 0.25 * jitter) / m, item_hash, s))
    keyed.sort(key=lambda t: (t[0], t[1], t[2].sample_key))
    return _repair_neighbours([s for _, _, s in keyed])


def _repair_neighbours(order: list[PlannedSample], window: int = REPAIR_WINDOW) -> list[PlannedSample]:
    """Where two neighbours share a group, move the next clip (within ``window``) of another group between
    them, provided taking it out of its place does not make its own neighbours share a group."""
    out = list(order)
    n = len(out)
    for i in range(1, n):
        prev = out[i - 1].group
        if out[i].group != prev:
            continue
        for j in range(i + 1, min(n, i + window)):
            if out[j].group != prev and (j + 1 == n or out[j - 1].group != out[j + 1].group):
                out.insert(i, out.pop(j))
                break
    return out


# Columns of a segments row the plan reads (segmentation stage's SEGMENTS_SCHEMA).
SEGMENT_COLUMNS = (
    "partition", "segment_key", "source_key", "segment_index", "keep", "num_samples", "offset_s",
    "pcm_blake3", "tar_key", "member_offset", "member_size", "language", "speaker",
)  # fmt: skip


def plan_partition(
    rows: pa.Table | Iterable[Mapping[str, Any]],
    partition: str,
    config: ShardConfig,
    segments: pa.Table | Iterable[Mapping[str, Any]] | None = None,
) -> PartitionPlan:
    """Assign every kept row of ``partition`` (and every kept segment of ``segments``, when given) to a
    bucket and order each bucket (module docstring).

    Raises :class:`ShardPlanError` for rows of another partition, a repeated source key or a sample key
    collision. Rows without a usable duration are returned in ``rejected`` with a reason.
    """
    cols, it = _iter_rows(rows)
    buckets = [
        BucketPlan(i, config.bucket_label(i), config.bucket_edges[i], config.bucket_edges[i + 1])
        for i in range(config.n_buckets)
    ]
    rejected: list[tuple[str, str]] = []
    by_sample_key: dict[str, str] = {}
    rate = config.sample_rate

    def get(row: Mapping[str, Any], name: str) -> Any:
        col = cols[name]
        return None if col is None else row.get(col)

    def claim(key: str, part: Any) -> str:
        if part != partition:
            raise ShardPlanError(f"row {key!r} belongs to partition {part!r}, not {partition!r}")
        skey = sample_key(key, partition)
        if not is_safe_sample_key(skey):  # pragma: no cover (the rule guarantees it)
            raise ShardPlanError(f"unsafe sample key {skey!r} for {key!r}")
        prev = by_sample_key.get(skey)
        if prev is not None:
            what = "repeated source key" if prev == key else f"sample key collision with {prev!r}"
            raise ShardPlanError(f"{key!r}: {what} ({skey})")
        by_sample_key[skey] = key
        return skey

    def bucket_for(key: str, dur: Any) -> int | None:
        dur = None if dur is None or (isinstance(dur, float) and math.isnan(dur)) else float(dur)
        if dur is None:
            rejected.append((key, "no_duration"))
            return None
        b = config.bucket_of(dur)
        if b is None:
            rejected.append((key, "outside_buckets"))
        return b

    for row in it:
        key = str(get(row, "key"))
        skey = claim(key, get(row, "partition"))
        n = get(row, "num_samples")
        n = None if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)
        dur = n / rate if n is not None else get(row, "duration_s")
        b = bucket_for(key, dur)
        if b is None:
            continue
        speaker = _str_or_none(get(row, "speaker"))
        buckets[b].samples.append(
            PlannedSample(
                sample_key=skey,
                source_key=key,
                partition=partition,
                bucket=b,
                num_samples=n,
                duration_s=n / rate if n is not None else float(dur),
                text=_str_or_none(get(row, "text")),
                language=_str_or_none(get(row, "language")),
                speaker=speaker,
                pcm_blake3=_str_or_none(get(row, "pcm_blake3")),
                group=group_of(key, speaker),
            )
        )
    for seg in _iter_segments(segments):
        if not seg.get("keep"):
            continue  # quarantined by the segmentation stage: not a shard input
        key = str(seg["segment_key"])
        skey = claim(key, seg.get("partition"))
        n = int(seg["num_samples"])
        b = bucket_for(key, n / rate)
        if b is None:
            continue
        if not seg.get("tar_key") or seg.get("member_offset") is None or seg.get("member_size") is None:
            rejected.append((key, "no_member"))
            continue
        speaker = _str_or_none(seg.get("speaker"))
        source = str(seg["source_key"])
        buckets[b].samples.append(
            PlannedSample(
                sample_key=skey,
                source_key=source,
                partition=partition,
                bucket=b,
                num_samples=n,
                duration_s=n / rate,
                text=None,
                language=_str_or_none(seg.get("language")),
                speaker=speaker,
                pcm_blake3=_str_or_none(seg.get("pcm_blake3")),
                group=f"rec:{source}",
                segment_key=key,
                segment_index=int(seg["segment_index"]),
                offset_s=float(seg["offset_s"]),
                member=(str(seg["tar_key"]), int(seg["member_offset"]), int(seg["member_size"])),
            )
        )
    for bp in buckets:
        bp.samples = spread_order(bp.samples, partition)
    rejected.sort()
    return PartitionPlan(partition=partition, buckets=buckets, rejected=rejected)


def _iter_segments(segments: pa.Table | Iterable[Mapping[str, Any]] | None) -> Iterable[Mapping[str, Any]]:
    if segments is None:
        return
    if isinstance(segments, pa.Table):
        missing = [c for c in SEGMENT_COLUMNS if c not in segments.column_names]
        if "pcm_blake3" in missing and "pcm_sha256" in segments.column_names:
            raise ShardPlanError(f"the segments table {STALE_HASHES}")
        if missing:
            raise ShardPlanError(f"segment rows lack the columns {missing}")
        for batch in segments.select(list(SEGMENT_COLUMNS)).to_batches(max_chunksize=8192):
            yield from batch.to_pylist()
        return
    yield from segments


def adjacent_same_group_rate(samples: list[PlannedSample]) -> float:
    """Fraction of neighbouring pairs that share a group (0 for fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    same = sum(a.group == b.group for a, b in zip(samples, samples[1:], strict=False))
    return same / (len(samples) - 1)
