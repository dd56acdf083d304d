"""Blocking checks of a manifest version: each function returns the problems it finds (empty = pass).

They read what was written (``manifest.parquet``, ``dropped.parquet``, ``_MANIFEST.json``) and the inputs
it names, so they catch a writer bug as well as damage done afterwards.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa

from asr_distill import lake as lake_layout
from asr_distill.lake import manifest_layout, shard_layout
from asr_distill.stages.manifests.config import DROP_RULES, ManifestConfig
from asr_distill.stages.manifests.formats import read_jsonl
from asr_distill.storage import Storage
from asr_distill.tableio import read_table

Problem = dict[str, Any]
MAX_PROBLEMS = 1000


def load_version(lake: Storage, version: str) -> tuple[dict[str, Any], pa.Table, pa.Table]:
    """(record, manifest table, dropped table) of a written version."""
    layout = manifest_layout(version)
    record = json.loads(lake.read_bytes(layout.record_key))
    return record, read_table(lake, layout.manifest_key), read_table(lake, layout.dropped_key)


# -- splits ---------------------------------------------------------------------------------------------
def check_splits_disjoint(manifest: pa.Table, cfg: ManifestConfig | None = None) -> list[Problem]:
    """A sample key (per partition), a known speaker or the segments of one long recording in more than
    one split."""
    scope = (cfg or ManifestConfig()).speaker_scope
    d = manifest.select(
        ["partition", "sample_key", "speaker", "split", "source_key", "segment_index"]
    ).to_pydict()
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    by_speaker: dict[str, set[str]] = defaultdict(set)
    by_recording: dict[tuple[str, str], set[str]] = defaultdict(set)
    for part, key, spk, split, src, seg in zip(
        d["partition"],
        d["sample_key"],
        d["speaker"],
        d["split"],
        d["source_key"],
        d["segment_index"],
        strict=True,
    ):
        by_key[(part, key)].add(split)
        if spk:
            by_speaker[f"{part}/{spk}" if scope == "partition" else spk].add(split)
        if seg >= 0:
            by_recording[(part, src)].add(split)
    out: list[Problem] = []
    counts = Counter(zip(d["partition"], d["sample_key"], strict=True))
    for (part, key), n in sorted(counts.items()):
        if n > 1:
            out.append({"partition": part, "sample_key": key, "problem": "key_repeated", "count": n,
                        "splits": ",".join(sorted(by_key[(part, key)]))})  # fmt: skip
    for spk, splits in sorted(by_speaker.items()):
        if len(splits) > 1:
            out.append(
                {"speaker": spk, "problem": "speaker_in_several_splits", "splits": ",".join(sorted(splits))}
            )
    for (part, src), splits in sorted(by_recording.items()):
        if len(splits) > 1:
            out.append({"partition": part, "source_key": src, "problem": "recording_in_several_splits",
                        "splits": ",".join(sorted(splits))})  # fmt: skip
    return out[:MAX_PROBLEMS]


# -- counts ---------------------------------------------------------------------------------------------
def check_counts(
    lake: Storage, record: dict[str, Any], manifest: pa.Table, dropped: pa.Table
) -> list[Problem]:
    """Per partition and rule: manifest rows = accounted - dropped, the record agrees with the tables, and
    the inputs (index rows, current label rows) still count what the record says."""
    out: list[Problem] = []
    kept = Counter(manifest.column("partition").to_pylist())
    drops: dict[str, Counter[str]] = defaultdict(Counter)
    for part, reason in zip(
        dropped.column("partition").to_pylist(), dropped.column("reason").to_pylist(), strict=True
    ):
        drops[part][reason] += 1
        if reason not in DROP_RULES:
            out.append({"partition": part, "problem": "unknown_drop_rule", "rule": reason})
    seen = set()
    for c in record["counts"]:
        p = c["partition"]
        seen.add(p)
        if kept[p] != c["kept"]:
            out.append({"partition": p, "problem": "kept_mismatch", "record": c["kept"], "manifest": kept[p]})
        if dict(drops[p]) != {k: v for k, v in c["drops"].items() if v}:
            out.append({"partition": p, "problem": "drops_mismatch", "record": json.dumps(c["drops"], sort_keys=True),
                        "dropped_table": json.dumps(dict(sorted(drops[p].items())))})  # fmt: skip
        if kept[p] + sum(drops[p].values()) != c["accounted"]:
            out.append({"partition": p, "problem": "not_reconciled", "accounted": c["accounted"],
                        "kept_plus_dropped": kept[p] + sum(drops[p].values())})  # fmt: skip
        index_key = shard_layout(p).index_key
        index_rows = read_table(lake, index_key).num_rows if lake.exists(index_key) else 0
        if index_rows != c["index_samples"]:
            out.append(
                {"partition": p, "problem": "index_changed", "record": c["index_samples"], "now": index_rows}
            )
        label_rows = _labels_rows(lake, record, p)
        if label_rows != c["label_rows"]:
            out.append(
                {"partition": p, "problem": "labels_changed", "record": c["label_rows"], "now": label_rows}
            )
    for p in sorted((set(kept) | set(drops)) - seen):
        out.append({"partition": p, "problem": "partition_not_in_record"})
    return out


def _labels_rows(lake: Storage, record: dict[str, Any], partition: str) -> int:
    version = record["teachers"][partition]["labels_version"]
    return sum(
        read_table(lake, k).num_rows for k in lake_layout.labels_version_keys(lake, partition, version)
    )


# -- every row points at a shard member --------------------------------------------------------------------
def _parse_header(block: bytes) -> tuple[str, int] | None:
    """(name, size) of a USTAR header block, or None when it is not one (checksum, magic)."""
    if len(block) != 512 or block[257:262] != b"ustar":
        return None
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        size = int(block[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        return None
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
    return (f"{prefix}/{name}" if prefix else name), size


def _header_sample(keys: list[str], limit: int) -> set[int]:
    """Indices of the rows whose tar header is read: all, or ``limit`` chosen by a stable hash."""
    if limit == 0 or len(keys) <= limit:
        return set(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).digest())
    return set(ranked[:limit])


def check_members(lake: Storage, manifest: pa.Table, max_header_reads: int = 0) -> list[Problem]:
    """Every row names a sample of its partition's ``index.parquet`` with the same member, offset and size,
    its tar exists, and (for up to ``max_header_reads`` rows, 0 = all) the 512-byte tar header before the
    offset names that member with that size."""
    rows = manifest.select(["partition", "shard_key", "sample_key", "audio_member", "audio_offset", "audio_size",
                            "num_samples"]).to_pylist()  # fmt: skip
    out: list[Problem] = []
    index: dict[str, dict[str, dict[str, Any]]] = {}
    sizes: dict[str, int | None] = {}
    check_header = _header_sample([f"{r['partition']}/{r['sample_key']}" for r in rows], max_header_reads)
    for i, r in enumerate(rows):
        p = r["partition"]
        if p not in index:
            try:
                t = read_table(lake, shard_layout(p).index_key)
                index[p] = {x["sample_key"]: x for x in t.to_pylist()}
            except FileNotFoundError:
                index[p] = {}
        ir = index[p].get(r["sample_key"])
        base = {"partition": p, "sample_key": r["sample_key"]}
        if ir is None:
            out.append({**base, "problem": "not_in_shard_index"})
            continue
        for col in ("shard_key", "audio_member", "audio_offset", "audio_size", "num_samples"):
            if ir[col] != r[col]:
                out.append({**base, "problem": f"{col}_differs", "manifest": r[col], "index": ir[col]})
        shard = r["shard_key"]
        if shard not in sizes:
            try:
                sizes[shard] = lake.stat(shard).size
            except FileNotFoundError:
                sizes[shard] = None
        if sizes[shard] is None:
            out.append({**base, "problem": "shard_missing", "shard_key": shard})
            continue
        if r["audio_offset"] < 512 or r["audio_offset"] + r["audio_size"] > sizes[shard]:
            out.append({**base, "problem": "member_outside_tar", "shard_key": shard})
            continue
        if i in check_header:
            parsed = _parse_header(lake.read_range(shard, r["audio_offset"] - 512, 512))
            if parsed is None:
                out.append({**base, "problem": "no_tar_header_at_offset", "shard_key": shard})
            elif parsed != (r["audio_member"], r["audio_size"]):
                out.append(
                    {**base, "problem": "tar_header_differs", "header": f"{parsed[0]} ({parsed[1]} B)"}
                )
        if len(out) >= MAX_PROBLEMS:
            break
    return out


# -- durations ------------------------------------------------------------------------------------------
def check_durations(manifest: pa.Table, cfg: ManifestConfig) -> list[Problem]:
    """Durations finite, positive, within the configured bounds and their bucket, equal to
    ``num_samples / sample_rate``."""
    out: list[Problem] = []
    cols = [
        "partition",
        "sample_key",
        "duration_s",
        "num_samples",
        "sample_rate",
        "bucket_lo_s",
        "bucket_hi_s",
    ]
    for r in manifest.select(cols).to_pylist():
        d = r["duration_s"]
        base = {"partition": r["partition"], "sample_key": r["sample_key"], "duration_s": d}
        if d is None or not math.isfinite(d) or d <= 0:
            out.append({**base, "problem": "not_positive"})
        elif d < cfg.min_duration_s or d > cfg.max_duration_s:
            out.append(
                {
                    **base,
                    "problem": "out_of_bounds",
                    "bounds": f"[{cfg.min_duration_s}, {cfg.max_duration_s}]",
                }
            )
        elif not (r["bucket_lo_s"] <= d <= r["bucket_hi_s"]):
            out.append(
                {**base, "problem": "outside_bucket", "bucket": f"[{r['bucket_lo_s']}, {r['bucket_hi_s']}]"}
            )
        elif r["sample_rate"] <= 0 or abs(r["num_samples"] / r["sample_rate"] - d) > 1e-6:
            out.append({**base, "problem": "num_samples_disagree", "num_samples": r["num_samples"]})
        if len(out) >= MAX_PROBLEMS:
            break
    return out


# -- the formats agree with the Parquet manifest --------------------------------------------------------------
def check_formats(lake: Storage, record: dict[str, Any], manifest: pa.Table) -> list[Problem]:
    """The NeMo and Lhotse files hold exactly the Parquet rows of their split (member, tar, duration, text)."""
    layout = manifest_layout(record["version"])
    out: list[Problem] = []
    rows = manifest.select(
        ["split", "shard_key", "audio_member", "duration_s", "text", "sample_key"]
    ).to_pylist()
    for split in ("train", "dev", "test"):
        want = [r for r in rows if r["split"] == split]
        entries = read_jsonl(lake, layout.nemo_manifest_key(split))
        if any("offset" in e for e in entries):  # NeMo would seek inside the member
            out.append({"split": split, "problem": "nemo_offset_field"})
        tars = lake.read_bytes(layout.nemo_tars_key(split)).decode().splitlines()
        got = [(e["audio_filepath"], tars[e["shard_id"]] if 0 <= e["shard_id"] < len(tars) else None,
                e["duration"], e["text"]) for e in entries]  # fmt: skip
        exp = [(r["audio_member"], None, r["duration_s"], r["text"]) for r in want]
        shard_of = [r["shard_key"] for r in want]
        if len(got) != len(exp):
            out.append({"split": split, "problem": "nemo_row_count", "nemo": len(got), "parquet": len(exp)})
        else:
            for g, e, shard in zip(got, exp, shard_of, strict=True):
                if (g[0], g[2], g[3]) != (e[0], e[2], e[3]) or g[1] is None or g[1] != shard:
                    out.append({"split": split, "problem": "nemo_row_differs", "member": e[0]})
                    break
        cuts = read_jsonl(lake, layout.lhotse_cuts_key(split))
        if [(c["id"], c["duration"], c["supervisions"][0]["text"]) for c in cuts] != [
            (r["sample_key"], r["duration_s"], r["text"]) for r in want
        ]:
            out.append(
                {"split": split, "problem": "lhotse_cuts_differ", "cuts": len(cuts), "parquet": len(want)}
            )
    return out
