"""Checks of a partition's shards, one function per rule, each returning the failing items (empty = pass).

They read what the stage wrote (the tars, ``index.parquet``, ``shards.parquet``, ``wids.json``), not what
it meant to write, so they catch a writer bug as well as damage done afterwards.
"""

from __future__ import annotations

import collections
import io
import json
import tarfile
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import soundfile as sf

from asr_distill import hashing
from asr_distill.lake import ShardLayout, shard_layout
from asr_distill.stages.shards.config import ShardConfig
from asr_distill.stages.shards.schema import WIDS_KIND
from asr_distill.storage import ObjectNotFoundError, Storage
from asr_distill.tableio import read_table

Problem = dict[str, Any]


def load_outputs(lake: Storage, partition: str) -> tuple[pa.Table, pa.Table]:
    """``(index, shards)`` tables of a partition."""
    layout = shard_layout(partition)
    return read_table(lake, layout.index_key), read_table(lake, layout.shards_key)


def read_member(lake: Storage, shard_key: str, offset: int, size: int) -> bytes:
    """One member's bytes by a range read (random access through the index)."""
    return lake.read_range(shard_key, offset, size)


# -- every kept row in exactly one shard, nothing else -------------------------------------------------
def index_row_keys(index: pa.Table) -> list[str]:
    """The input row key of every index row: the segment key of a segment, else the source key."""
    sources = index.column("source_key").to_pylist()
    if "segment_key" not in index.column_names:
        return sources
    segs = index.column("segment_key").to_pylist()
    return [seg if seg is not None else src for src, seg in zip(sources, segs, strict=True)]


def check_coverage(kept_keys: Iterable[str], index: pa.Table) -> list[Problem]:
    """Kept rows (clean keys of kept clips and segment keys of kept segments) in no shard or in several,
    and shard samples that are not kept rows (``source_key`` in the problems names the row key)."""
    kept = set(kept_keys)
    counts = collections.Counter(index_row_keys(index))
    out: list[Problem] = []
    for key in sorted(kept - counts.keys()):
        out.append({"source_key": key, "problem": "not_in_any_shard"})
    for key, n in sorted(counts.items()):
        if key not in kept:
            out.append({"source_key": key, "problem": "not_a_kept_row"})
        if n > 1:
            out.append({"source_key": key, "problem": "in_several_shards", "count": n})
    return out


# -- the bucket of every sample ----------------------------------------------------------------------------
def check_buckets(index: pa.Table, config: ShardConfig) -> list[Problem]:
    """Samples whose duration (``num_samples / sample_rate``) is outside their shard's bucket."""
    out: list[Problem] = []
    rate = config.sample_rate
    for row in index.select(["shard_key", "sample_key", "bucket", "num_samples"]).to_pylist():
        dur = row["num_samples"] / rate
        b = config.bucket_of(dur)
        expected = None if b is None else config.bucket_label(b)
        in_key = f"/{row['bucket']}/" in row["shard_key"]
        if expected != row["bucket"] or not in_key:
            out.append(
                {
                    "shard_key": row["shard_key"],
                    "sample_key": row["sample_key"],
                    "problem": "outside_bucket",
                    "duration_s": dur,
                    "bucket": row["bucket"],
                    "expected_bucket": expected,
                }
            )
    return out


# -- size bounds ----------------------------------------------------------------------------------------
def check_shard_sizes(shards: pa.Table, config: ShardConfig) -> list[Problem]:
    """Shards over ``max_shard_bytes`` or ``max_shard_samples``, or empty. A shard holding one sample
    that alone exceeds the byte bound is reported too (``single_sample: True``): raise the bound."""
    out: list[Problem] = []
    for row in shards.select(["shard_key", "size", "nsamples"]).to_pylist():
        if row["nsamples"] < 1:
            out.append({"shard_key": row["shard_key"], "problem": "empty_shard"})
        if row["nsamples"] > config.max_shard_samples:
            out.append(
                {"shard_key": row["shard_key"], "problem": "too_many_samples", "nsamples": row["nsamples"]}
            )
        if row["size"] > config.max_shard_bytes:
            out.append(
                {
                    "shard_key": row["shard_key"],
                    "problem": "too_many_bytes",
                    "size": row["size"],
                    "single_sample": row["nsamples"] == 1,
                }
            )
    return out


# -- the tars themselves -------------------------------------------------------------------------------
def _check_one_tar(
    lake: Storage,
    shard: dict[str, Any],
    rows: list[dict[str, Any]],
    config: ShardConfig,
    decode_audio: bool,
) -> list[Problem]:
    key = shard["shard_key"]
    out: list[Problem] = []

    def bad(problem: str, **extra: Any) -> None:
        out.append({"shard_key": key, "problem": problem, **extra})

    ext = config.audio_extension
    try:
        fh = lake.open_read(key)
    except ObjectNotFoundError:
        bad("missing")
        return out
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with fh:
        reader = hashing.HashingReader(fh)  # the tar is read once: parsed and hashed together
        try:
            with tarfile.open(fileobj=reader.buffered(1 << 20), mode="r|") as tf:
                for ti in tf:
                    data = None
                    if ti.isfile() and (ti.name.endswith("." + ext) or ti.name.endswith(".json")):
                        f = tf.extractfile(ti)
                        data = f.read() if f is not None else None
                    members.append((ti, data))
        except (tarfile.TarError, OSError, EOFError) as exc:
            bad("unreadable", detail=f"{type(exc).__name__}: {exc}")
            return out
        digest = reader.finish()  # hashes what the tar reader left unread (padding at the end)
        if reader.hashed_bytes != shard["size"]:
            bad("size_mismatch", size=reader.hashed_bytes, expected=shard["size"])
        if digest != shard["blake3"]:
            bad("blake3_mismatch")
    if len(members) != 2 * len(rows) or len(members) != 2 * shard["nsamples"]:
        bad("member_count", members=len(members), samples=len(rows), nsamples=shard["nsamples"])
    for i, row in enumerate(rows):
        pair = members[2 * i : 2 * i + 2]
        if len(pair) < 2:
            break
        (a, a_data), (j, j_data) = pair
        sk = row["sample_key"]
        if a.name != f"{sk}.{ext}" or j.name != f"{sk}.json":
            bad("member_names", sample_key=sk, names=[a.name, j.name])
            continue
        if not (a.isfile() and j.isfile()) or a.mtime != 0 or a.mode != 0o644 or a.uname or a.gname:
            bad("member_metadata", sample_key=sk)
        offsets = (a.offset, a.offset_data, a.size, j.offset, j.offset_data, j.size)
        expected = (
            row["audio_header_offset"],
            row["audio_offset"],
            row["audio_size"],
            row["json_header_offset"],
            row["json_offset"],
            row["json_size"],
        )
        if offsets != expected:
            bad("offsets", sample_key=sk, offsets=list(offsets), index=list(expected))
        try:
            meta = json.loads(j_data or b"")
            if meta.get("id") != sk or meta.get("num_samples") != row["num_samples"]:
                bad("json_content", sample_key=sk)
        except ValueError as exc:
            bad("json_unreadable", sample_key=sk, detail=str(exc))
        if decode_audio:
            try:
                info = sf.info(io.BytesIO(a_data or b""))
                if (info.frames, info.samplerate, info.channels) != (
                    row["num_samples"],
                    config.sample_rate,
                    1,
                ):
                    bad(
                        "audio_mismatch",
                        sample_key=sk,
                        audio=[info.frames, info.samplerate, info.channels],
                        expected=[row["num_samples"], config.sample_rate, 1],
                    )
            except (sf.LibsndfileError, RuntimeError) as exc:
                bad("audio_unreadable", sample_key=sk, detail=str(exc))
    return out


def check_tars(
    lake: Storage,
    shards: pa.Table,
    index: pa.Table,
    config: ShardConfig,
    *,
    decode_audio: bool = True,
    only: Iterable[str] | None = None,
) -> list[Problem]:
    """Every shard opens as a tar of two members per sample (``<key>.<audio>``, ``<key>.json``) in index
    order, with the fixed metadata, the indexed offsets and sizes, the recorded size and BLAKE3 checksum; every
    JSON parses and names its sample; with ``decode_audio`` every audio header says mono at the sample
    rate with the indexed sample count. Reads every shard once (streamed); ``only`` limits the check to
    those shard keys (e.g. ``summary.written_keys``: reused shards were re-hashed before reuse)."""
    by_shard: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in index.to_pylist():
        by_shard[row["shard_key"]].append(row)
    out: list[Problem] = []
    shard_rows = shards.to_pylist()
    known = {r["shard_key"] for r in shard_rows}
    for key in sorted(by_shard.keys() - known):
        out.append({"shard_key": key, "problem": "indexed_shard_not_in_shard_table"})
    wanted = None if only is None else set(only)
    for shard in shard_rows:
        if wanted is not None and shard["shard_key"] not in wanted:
            continue
        rows = sorted(by_shard.get(shard["shard_key"], []), key=lambda r: r["position"])
        out.extend(_check_one_tar(lake, shard, rows, config, decode_audio))
    return out


def check_wids(lake: Storage, layout: ShardLayout, shards: pa.Table) -> list[Problem]:
    """``wids.json`` is a ``wids-shard-index-v1`` listing exactly the shards, with their counts and sizes."""
    try:
        doc = json.loads(lake.read_bytes(layout.wids_key))
    except ObjectNotFoundError:
        return [{"key": layout.wids_key, "problem": "missing"}]
    except ValueError as exc:
        return [{"key": layout.wids_key, "problem": "unreadable", "detail": str(exc)}]
    out: list[Problem] = []
    if doc.get("__kind__") != WIDS_KIND or doc.get("wids_version") != 1:
        out.append({"key": layout.wids_key, "problem": "not_a_wids_index"})
    listed = [(s.get("url"), s.get("nsamples"), s.get("filesize")) for s in doc.get("shardlist", [])]
    expected = [(layout.relative(r["shard_key"]), r["nsamples"], r["size"]) for r in shards.to_pylist()]
    if listed != expected:
        out.append({"key": layout.wids_key, "problem": "shardlist_mismatch"})
    return out
