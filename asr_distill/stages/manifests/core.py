"""Join shard index, teacher labels and clean metadata; drop by label-quality rules; assign splits.

Plain Python. :func:`load_partition` reads one partition's inputs (and hashes them, for the version);
:func:`build_manifest` turns the inputs of every partition into the manifest table, the dropped table and
the counts. Every sample is accounted for: per partition, ``kept + sum(drops) == |index keys U label keys|``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from asr_distill import lake as lake_layout
from asr_distill.hashing import bytes_hex
from asr_distill.language import primary_language
from asr_distill.stages.clean.schema import CLEAN_SCHEMA
from asr_distill.stages.labels.record import LabelsRecord
from asr_distill.stages.manifests.config import DROP_RULES, SPLITS, ManifestConfig
from asr_distill.stages.manifests.schema import DROPPED_SCHEMA, MANIFEST_SCHEMA
from asr_distill.stages.shards.schema import SAMPLE_INDEX_SCHEMA, SHARD_TABLE_SCHEMA
from asr_distill.storage import Storage
from asr_distill.tableio import read_table_bytes

Row = dict[str, Any]
UNKNOWN_LANGUAGE = "und"

_INDEX_COLUMNS = [
    "shard_key", "bucket", "bucket_lo_s", "bucket_hi_s", "shard_seq", "position", "sample_key",
    "source_key", "num_samples", "duration_s", "audio_member", "audio_offset", "audio_size",
]  # fmt: skip
# Segment provenance in the index (shards format 2); an older index has none: short clips only.
_PROVENANCE = {
    "segment_key": (pa.string(), None),
    "segment_index": (pa.int32(), -1),
    "offset_s": (pa.float64(), 0.0),
}
_KEPT_COLUMNS = ["key", "speaker", "language", "label_language", "reference_text"]
_SEGMENT_COLUMNS = ["segment_key", "source_key", "keep", "speaker", "language"]
_LABEL_COLUMNS = [
    "shard_id", "sample_key", "status", "error_reason", "text", "language", "expected_language",
    "has_reference", "error_rate", "error_metric", "flags", "teacher_fingerprint",
]  # fmt: skip


class ManifestInputError(Exception):
    """A partition's inputs cannot be joined at all (a table is missing or lacks columns)."""


def _read_parquet(lake: Storage, key: str, columns: list[str] | None = None) -> tuple[pa.Table, str]:
    """(table, BLAKE3 of the object's bytes)."""
    try:
        return read_table_bytes(lake, key, columns)
    except FileNotFoundError as exc:
        raise ManifestInputError(f"{lake.url(key)} does not exist") from exc
    except (pa.ArrowInvalid, KeyError) as exc:
        raise ManifestInputError(f"{lake.url(key)}: {exc}") from exc


@dataclass
class PartitionInputs:
    """One partition's joined inputs and what identifies them (``digest``, part of the version)."""

    partition: str
    current: LabelsRecord
    index: pa.Table
    kept: pa.Table
    labels: pa.Table
    shards: pa.Table
    digest: dict[str, Any] = field(default_factory=dict)
    segments: pa.Table | None = None  # kept segment rows (_SEGMENT_COLUMNS); None: no segments table

    @property
    def labels_version(self) -> str:
        return str(self.current.version)

    @property
    def teacher_fingerprint(self) -> str:
        return str(self.current.fingerprint or "")


def load_partition(lake: Storage, partition: str) -> PartitionInputs:
    """Read a partition's shard index, shard table, kept table and current labels."""
    current = LabelsRecord.read_current(lake, partition)
    if current is None:
        raise ManifestInputError(
            f"partition {partition!r} has no {lake_layout.labels_current_key(partition)}"
        )
    label_keys = lake_layout.current_labels_keys(lake, partition)
    if not isinstance(current.version, str) or not current.version:
        raise ManifestInputError(f"{lake_layout.labels_current_key(partition)} lacks a string 'version'")
    if label_keys and (not isinstance(current.fingerprint, str) or not current.fingerprint):
        raise ManifestInputError(f"{lake_layout.labels_current_key(partition)} lacks a string 'fingerprint'")
    sl = lake_layout.shard_layout(partition)
    if not label_keys and not lake.exists(sl.index_key):
        # A partition with no kept clips: the labels asset writes a current.json with no labels, and the
        # shards stage may have written nothing. It contributes nothing and is no error.
        empty = {"index": SAMPLE_INDEX_SCHEMA, "shards": SHARD_TABLE_SCHEMA, "kept": CLEAN_SCHEMA}
        t = {k: pa.Table.from_pylist([], schema=v) for k, v in empty.items()}
        index = t["index"].select(_INDEX_COLUMNS + list(_PROVENANCE))
        shards, kept = t["shards"], t["kept"].select(_KEPT_COLUMNS)
        index_digest = kept_digest = ""
    else:
        index, index_digest = _read_index(lake, sl.index_key)
        shards, _ = _read_parquet(lake, sl.shards_key, ["shard_key", "blake3", "size", "nsamples"])
        kept, kept_digest = _read_parquet(lake, lake_layout.cleaned_kept_key(partition), _KEPT_COLUMNS)
    segments, segments_digest = _read_segments(lake, partition)
    label_tables, label_digests = [], {}
    for key in label_keys:
        t2, sha = _read_parquet(lake, key, _LABEL_COLUMNS)
        label_tables.append(t2.cast(pa.schema([t2.schema.field(c) for c in _LABEL_COLUMNS])))
        label_digests[key] = sha
    if label_tables:
        labels = pa.concat_tables(label_tables)
    else:
        labels = pa.Table.from_pylist([], schema=_empty_label_schema())
    shard_list = sorted(
        zip(shards.column("shard_key").to_pylist(), shards.column("blake3").to_pylist(), strict=True)
    )
    digest = {
        "partition": partition,
        "labels_version": current.version,
        "teacher_fingerprint": current.fingerprint or "",
        "shards_blake3": bytes_hex(repr(shard_list).encode()),
        "index_blake3": index_digest,
        "kept_blake3": kept_digest,
        "segments_blake3": segments_digest,
        "labels_blake3": bytes_hex(repr(sorted(label_digests.items())).encode()),
        "label_files": len(label_digests),
    }
    return PartitionInputs(partition, current, index, kept, labels, shards, digest, segments)


def _read_index(lake: Storage, key: str) -> tuple[pa.Table, str]:
    """The shard index's columns the join reads, with the segment provenance columns (filled with a
    short clip's values when the index predates them)."""
    full, sha = _read_parquet(lake, key)
    missing = [c for c in _INDEX_COLUMNS if c not in full.column_names]
    if missing:
        raise ManifestInputError(f"{lake.url(key)} lacks the columns {missing}")
    for name, (typ, default) in _PROVENANCE.items():
        if name not in full.column_names:
            full = full.append_column(name, pa.array([default] * full.num_rows, type=typ))
    return full.select(_INDEX_COLUMNS + list(_PROVENANCE)), sha


def _read_segments(lake: Storage, partition: str) -> tuple[pa.Table | None, str]:
    """(kept segment rows, BLAKE3 of segments.parquet), or (None, "") when the partition has none."""
    key = lake_layout.segmented_segments_key(partition)
    if not lake.exists(key):
        return None, ""
    table, sha = _read_parquet(lake, key, _SEGMENT_COLUMNS)
    return table.filter(pc.equal(table.column("keep"), True)), sha


def _empty_label_schema() -> pa.Schema:
    from asr_distill.stages.labels.schema import LABELS_SCHEMA

    return pa.schema([LABELS_SCHEMA.field(c) for c in _LABEL_COLUMNS])


# -- the join -----------------------------------------------------------------------------------------
@dataclass
class PartitionCounts:
    partition: str
    index_samples: int = 0
    label_rows: int = 0
    accounted: int = 0  # |index keys U label keys|
    kept: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "index_samples": self.index_samples,
            "label_rows": self.label_rows,
            "accounted": self.accounted,
            "kept": self.kept,
            "dropped": sum(self.drops.values()),
            "drops": dict(sorted(self.drops.items())),
        }


@dataclass
class ManifestBuild:
    manifest: pa.Table
    dropped: pa.Table
    counts: list[PartitionCounts]

    @property
    def drop_counts(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for c in self.counts:
            total.update(c.drops)
        return {r: total[r] for r in DROP_RULES if total[r]}


def _opt_str(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _drop_reason(
    label: Row, duration: float, cfg: ManifestConfig, fingerprint: str
) -> tuple[str | None, str | None]:
    """(rule, detail) of the first rule that drops a labelled sample, or (None, None)."""
    if label["teacher_fingerprint"] != fingerprint:
        return (
            "fingerprint_mismatch",
            f"label by {label['teacher_fingerprint'][:16]}, current {fingerprint[:16]}",
        )
    if label["status"] != "ok":
        return "label_error", label.get("error_reason") or "unknown"
    if not (math.isfinite(duration) and duration > 0) or duration < cfg.min_duration_s:
        return "too_short", f"{duration:.3f}s"
    if duration > cfg.max_duration_s:
        return "too_long", f"{duration:.3f}s"
    rate = label.get("error_rate")
    scored = bool(label.get("has_reference")) and rate is not None
    if scored and not rate < cfg.max_error_rate:
        return "high_wer", f"{label.get('error_metric') or 'wer'}={rate:.4f}"
    if not scored or cfg.flags_with_reference:
        hit = [f for f in cfg.drop_flags if f in set(label.get("flags") or [])]
        if hit:
            return f"flag:{hit[0]}", ",".join(label.get("flags") or [])
    if cfg.drop_empty_text and not (label.get("text") or "").strip():
        return "empty_text", None
    return None, None


def split_group(partition: str, speaker: str | None, source_key: str, cfg: ManifestConfig) -> str:
    """The unit of splitting: the speaker when known, else the source clip (for a segment of a long
    recording: the recording, so all its segments share a split)."""
    if speaker:
        return f"spk:{partition}/{speaker}" if cfg.speaker_scope == "partition" else f"spk:{speaker}"
    return f"src:{source_key}"


def _join_partition(
    inp: PartitionInputs, cfg: ManifestConfig, kept_rows: list[Row], dropped: list[Row]
) -> PartitionCounts:
    p = inp.partition
    fp = inp.teacher_fingerprint
    counts = PartitionCounts(p, index_samples=inp.index.num_rows, label_rows=inp.labels.num_rows)
    index_rows = inp.index.to_pylist()
    labels_by_key: dict[str, list[Row]] = defaultdict(list)
    for r in inp.labels.to_pylist():
        labels_by_key[r["sample_key"]].append(r)
    kept_by_source = {r["key"]: r for r in inp.kept.to_pylist()}
    seg_rows = [] if inp.segments is None else inp.segments.to_pylist()
    segments_by_key = {r["segment_key"]: r for r in seg_rows}
    recording_speaker = _recording_speakers(seg_rows)
    index_keys = set()

    def drop(key: str, reason: str, src: str | None, shard: str | None, detail: str | None = None,
             duration: float | None = None, label: Row | None = None) -> None:  # fmt: skip
        counts.drops[reason] += 1
        dropped.append({
            "partition": p, "sample_key": key, "source_key": src, "shard_key": shard, "reason": reason,
            "detail": detail, "duration_s": duration,
            "error_rate": (label or {}).get("error_rate"), "flags": (label or {}).get("flags"),
        })  # fmt: skip

    for ir in index_rows:
        key = ir["sample_key"]
        index_keys.add(key)
        src, shard, dur = ir["source_key"], ir["shard_key"], float(ir["duration_s"])
        labels = labels_by_key.get(key, [])
        if not labels:
            drop(key, "no_label", src, shard, None, dur)
            continue
        if len(labels) > 1:
            drop(key, "duplicate_label", src, shard, f"{len(labels)} rows", dur)
            continue
        label = labels[0]
        segment_key = ir["segment_key"]
        if segment_key is None:
            clean = kept_by_source.get(src)
        else:  # a segment: its row of segments.parquet, of the recording src
            clean = segments_by_key.get(segment_key)
            if clean is not None and clean["source_key"] != src:
                clean = None
        if clean is None:
            drop(key, "no_clean_row", src, shard, None, dur, label)
            continue
        if label["shard_id"] != shard:
            drop(key, "not_in_shards", src, label["shard_id"], f"index puts it in {shard}", dur, label)
            continue
        reason, detail = _drop_reason(label, dur, cfg, fp)
        if reason is not None:
            drop(key, reason, src, shard, detail, dur, label)
            continue
        speaker = _opt_str(clean.get("speaker"))
        group_speaker = speaker if segment_key is None else recording_speaker.get(src)
        lang = (
            primary_language(label.get("language"))
            or primary_language(label.get("expected_language"))
            or primary_language(clean.get("label_language"))
            or primary_language(clean.get("language"))
            or UNKNOWN_LANGUAGE
        )
        n = int(ir["num_samples"])
        rate = round(n / dur) if dur > 0 else 0
        kept_rows.append({
            "split": cfg.split_of(split_group(p, group_speaker, src, cfg)),
            "partition": p, **{c: ir[c] for c in (
                "shard_key", "bucket", "bucket_lo_s", "bucket_hi_s", "shard_seq", "position", "sample_key",
                "source_key", "segment_key", "segment_index", "offset_s", "audio_member", "audio_offset",
                "audio_size", "num_samples")},
            "sample_rate": rate, "duration_s": dur,
            "text": (label.get("text") or "").strip(), "language": lang, "speaker": speaker,
            "reference_text": _opt_str(clean.get("reference_text")),
            "error_rate": label.get("error_rate") if label.get("has_reference") else None,
            "error_metric": label.get("error_metric") if label.get("has_reference") else None,
            "flags": list(label.get("flags") or []),
            "teacher_fingerprint": fp, "labels_version": inp.labels_version,
        })  # fmt: skip
        counts.kept += 1
    for key in sorted(labels_by_key.keys() - index_keys):
        rows = labels_by_key[key]
        drop(key, "not_in_shards", None, rows[0]["shard_id"], f"{len(rows)} label row(s)", None, rows[0])
    counts.accounted = len(index_keys | labels_by_key.keys())
    return counts


def _recording_speakers(seg_rows: list[Row]) -> dict[str, str | None]:
    """recording key -> the speaker its kept segments share (None when unknown or not one speaker), so
    that the split group of a recording's segments is one group whatever a segment row says."""
    speakers: dict[str, set[str | None]] = defaultdict(set)
    for r in seg_rows:
        speakers[r["source_key"]].add(_opt_str(r.get("speaker")))
    return {k: next(iter(v)) if len(v) == 1 else None for k, v in speakers.items()}


def build_manifest(inputs: list[PartitionInputs], cfg: ManifestConfig) -> ManifestBuild:
    """The manifest (kept samples with their split) and the dropped samples of every partition."""
    kept_rows: list[Row] = []
    dropped: list[Row] = []
    counts = [
        _join_partition(inp, cfg, kept_rows, dropped) for inp in sorted(inputs, key=lambda i: i.partition)
    ]
    order = {s: i for i, s in enumerate(SPLITS)}
    kept_rows.sort(
        key=lambda r: (
            order[r["split"]],
            r["partition"],
            r["bucket_lo_s"],
            r["bucket"],
            r["shard_seq"],
            r["position"],
        )
    )
    dropped.sort(key=lambda r: (r["partition"], r["reason"], r["sample_key"]))
    return ManifestBuild(
        manifest=pa.Table.from_pylist(kept_rows, schema=MANIFEST_SCHEMA),
        dropped=pa.Table.from_pylist(dropped, schema=DROPPED_SCHEMA),
        counts=counts,
    )


# -- statistics ---------------------------------------------------------------------------------------
def manifest_stats(build: ManifestBuild) -> dict[str, Any]:
    """Hours and samples per split, per language and per split and language, drops per rule, bucket
    edges and counts."""
    m = build.manifest.select(
        ["split", "language", "duration_s", "bucket", "bucket_lo_s", "bucket_hi_s", "speaker"]
    ).to_pylist()
    per_split: dict[str, dict[str, Any]] = {
        s: {"samples": 0, "hours": 0.0, "speakers": set()} for s in SPLITS
    }
    per_lang: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"samples": 0, "hours": 0.0})
    languages: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"samples": 0, "hours": 0.0, "speakers": set()}
    )
    buckets: dict[tuple[float, float, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    bucket_hours: dict[tuple[float, float, str], float] = defaultdict(float)
    for r in m:
        s = per_split[r["split"]]
        s["samples"] += 1
        s["hours"] += r["duration_s"] / 3600
        if r["speaker"]:
            s["speakers"].add(r["speaker"])
        pl = per_lang[(r["split"], r["language"])]
        pl["samples"] += 1
        pl["hours"] += r["duration_s"] / 3600
        lt = languages[r["language"]]
        lt["samples"] += 1
        lt["hours"] += r["duration_s"] / 3600
        if r["speaker"]:
            lt["speakers"].add(r["speaker"])
        b = (r["bucket_lo_s"], r["bucket_hi_s"], r["bucket"])
        buckets[b][r["split"]] += 1
        bucket_hours[b] += r["duration_s"] / 3600
    edges = sorted({e for lo, hi, _ in buckets for e in (lo, hi)})
    return {
        "samples": build.manifest.num_rows,
        "hours": round(sum(s["hours"] for s in per_split.values()), 6),
        "splits": {
            k: {"samples": v["samples"], "hours": round(v["hours"], 6), "speakers": len(v["speakers"])}
            for k, v in per_split.items()
        },
        "splits_by_language": [
            {"split": s, "language": lang, "samples": v["samples"], "hours": round(v["hours"], 6)}
            for (s, lang), v in sorted(per_lang.items(), key=lambda kv: (SPLITS.index(kv[0][0]), kv[0][1]))
        ],
        "languages": {
            lang: {"samples": v["samples"], "hours": round(v["hours"], 6), "speakers": len(v["speakers"])}
            for lang, v in sorted(languages.items())
        },
        "drops": build.drop_counts,
        "dropped": build.dropped.num_rows,
        "partitions": [c.to_dict() for c in build.counts],
        "bucket_edges": edges,
        "buckets": [
            {
                "bucket": label,
                "lo_s": lo,
                "hi_s": hi,
                **counts,
                "total": sum(counts.values()),
                "hours": round(bucket_hours[(lo, hi, label)], 6),
            }
            for (lo, hi, label), counts in sorted(buckets.items())
        ],  # fmt: skip
    }
