"""Blocking checks of a partition's segmentation outputs (read back from the lake, not from memory).

:func:`verify_partition` checks, per recording with status ``ok``/``no_speech``: kept + quarantined +
non-speech samples = recording samples (the non-speech samples re-derived from the segment rows' gaps,
so the identity is a real check), the segment counts and sums match the recording row, segments are in
order, inside the recording and never overlap, kept segments are at most ``max_segment_s``; segment keys
are unique, sort in time order, name their source and can never be a raw key; and every kept segment's
FLAC member exists in its tar at the recorded offset (the ustar header before it names the member and
its size) and decodes to ``num_samples`` int16 samples whose BLAKE3 is the row's ``pcm_blake3``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

from asr_distill import hashing
from asr_distill.stages.segment import layout
from asr_distill.stages.segment.plan import SegmentConfig
from asr_distill.stages.segment.recording import REUSABLE_STATUSES
from asr_distill.stages.segment.tables import iter_segments, read_recordings
from asr_distill.stages.shards.tar import BLOCK, ustar_header
from asr_distill.storage import Storage

Row = dict[str, Any]


class SegmentVerificationError(AssertionError):
    """The outputs break an invariant; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:10]))
        self.problems = problems


@dataclass
class VerifyReport:
    recordings: int = 0
    segments: int = 0
    members_checked: int = 0
    accounting_problems: list[str] = field(default_factory=list)  # sample identities, counts, statuses
    order_problems: list[str] = field(default_factory=list)  # order, bounds, overlap, <= 30 s, keys
    member_problems: list[str] = field(default_factory=list)  # tar members: exist, size, content

    @property
    def invariant_problems(self) -> list[str]:
        return self.accounting_problems + self.order_problems

    @property
    def problems(self) -> list[str]:
        return self.invariant_problems + self.member_problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_on_problems(self) -> None:
        if self.problems:
            raise SegmentVerificationError(self.problems)


def read_member(lake: Storage, seg: Row) -> bytes:
    """The FLAC bytes of a kept segment, by byte range."""
    return lake.read_range(seg["tar_key"], int(seg["member_offset"]), int(seg["member_size"]))


def member_pcm(data: bytes) -> np.ndarray:
    """The int16 samples of a FLAC member."""
    pcm, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=False)
    return np.asarray(pcm, dtype="<i2")


def _group(rows: Iterator[Row]) -> Iterator[tuple[str, list[Row]]]:
    cur: list[Row] = []
    for r in rows:
        if cur and r["source_key"] != cur[0]["source_key"]:
            yield cur[0]["source_key"], cur
            cur = []
        cur.append(r)
    if cur:
        yield cur[0]["source_key"], cur


def _check_recording(rec: Row, segs: list[Row], max_len: int, acc: list[str], p: list[str]) -> None:
    """Accounting problems go to ``acc``, order/bounds/length/key problems to ``p``."""
    key = rec["source_key"]
    if rec["status"] not in REUSABLE_STATUSES:
        if segs:
            acc.append(f"{key}: status {rec['status']} but {len(segs)} segment rows")
        return
    n = int(rec["n_samples"])
    kept = quar = non_speech = 0
    cursor = 0
    by_reason: dict[str, int] = {}
    for i, s in enumerate(segs):
        sk = s["segment_key"]
        if s["segment_index"] != i:
            p.append(f"{sk}: index {s['segment_index']}, expected {i}")
        if sk != layout.segment_key(key, i) or layout.source_of(sk) != key or layout.could_be_raw_key(sk):
            p.append(f"{sk}: not the segment key of {key!r} #{i}")
        a, b = int(s["start_sample"]), int(s["end_sample"])
        if not (0 <= a <= s["speech_start_sample"] <= s["speech_end_sample"] <= b <= n):
            p.append(f"{sk}: bounds [{a}, {b}) outside the recording or around its speech")
        if a < cursor:
            p.append(f"{sk}: overlaps the previous segment")
        if s["num_samples"] != b - a:
            acc.append(f"{sk}: num_samples {s['num_samples']} != {b - a}")
        if s["keep"] and b - a > max_len:
            p.append(f"{sk}: kept segment of {b - a} samples > {max_len}")
        if s["keep"] == bool(s["reasons"]):
            p.append(f"{sk}: keep={s['keep']} with reasons {s['reasons']}")
        if s["has_aligned_reference"]:
            p.append(f"{sk}: has_aligned_reference is set")
        non_speech += max(0, a - cursor)
        cursor = max(cursor, b)
        if s["keep"]:
            kept += b - a
        else:
            quar += b - a
            by_reason[s["reasons"][0]] = by_reason.get(s["reasons"][0], 0) + b - a
    non_speech += n - cursor
    if kept + quar + non_speech != n:
        acc.append(f"{key}: kept {kept} + quarantined {quar} + non-speech {non_speech} != {n} samples")
    recorded = (rec["kept_samples"], rec["quarantined_samples"], rec["non_speech_samples"])
    if recorded != (kept, quar, non_speech):
        acc.append(f"{key}: recording row says {recorded}, segments give {(kept, quar, non_speech)}")
    if (rec["quarantined_samples_by_reason"] or {}) != by_reason:
        acc.append(
            f"{key}: quarantined samples by reason {rec['quarantined_samples_by_reason']} != {by_reason}"
        )
    n_kept = sum(1 for s in segs if s["keep"])
    if (rec["kept_segments"], rec["quarantined_segments"]) != (n_kept, len(segs) - n_kept):
        acc.append(f"{key}: segment counts differ from the recording row")
    if rec["status"] == "no_speech" and segs:
        acc.append(f"{key}: no_speech with segments")
    if n_kept and not rec["tar_key"]:
        acc.append(f"{key}: kept segments but no tar")


def _check_member(lake: Storage, s: Row, p: list[str], check_hashes: bool) -> None:
    sk = s["segment_key"]
    if not (s["tar_key"] and s["member_name"]) or s["member_offset"] is None or s["member_size"] is None:
        p.append(f"{sk}: kept segment without a tar member")
        return
    off, size = int(s["member_offset"]), int(s["member_size"])
    try:
        header = lake.read_range(s["tar_key"], off - BLOCK, BLOCK)
    except Exception as exc:
        p.append(f"{sk}: cannot read its tar {s['tar_key']}: {type(exc).__name__}: {exc}")
        return
    if header != ustar_header(s["member_name"], size):
        p.append(f"{sk}: no member {s['member_name']!r} of {size} bytes at offset {off} of {s['tar_key']}")
        return
    if not check_hashes:
        return
    try:
        pcm = member_pcm(read_member(lake, s))
    except Exception as exc:
        p.append(f"{sk}: member does not decode: {type(exc).__name__}: {exc}")
        return
    if len(pcm) != s["num_samples"] or hashing.pcm_hex(pcm) != s["pcm_blake3"]:
        p.append(f"{sk}: member content differs from the row (samples or pcm_blake3)")


def verify_partition(
    lake: Storage,
    partition: str,
    *,
    max_segment_s: float = SegmentConfig().max_segment_s,
    check_members: bool = True,
    check_hashes: bool = True,
) -> VerifyReport:
    """Run every check (see the module docstring); ``report.raise_on_problems()`` makes it blocking.
    ``check_hashes=False`` checks member headers only (no FLAC decode)."""
    report = VerifyReport()
    p, acc = report.order_problems, report.accounting_problems
    max_len = SegmentConfig.samples(max_segment_s)
    recs = read_recordings(lake, partition)
    report.recordings = len(recs)
    rec_keys = [r["source_key"] for r in recs]
    if rec_keys != sorted(rec_keys) or len(set(rec_keys)) != len(rec_keys):
        p.append("recordings are not sorted by source_key without repeats")
    by_key = {r["source_key"]: r for r in recs}
    seen: set[str] = set()
    for key, segs in _group(iter_segments(lake, partition)):
        report.segments += len(segs)
        if key in seen:
            p.append(f"{key}: segment rows are not grouped by recording")
        seen.add(key)
        rec = by_key.get(key)
        if rec is None:
            acc.append(f"{key}: segment rows without a recording row")
            continue
        _check_recording(rec, segs, max_len, acc, p)
        if check_members:
            for s in segs:
                if s["keep"]:
                    _check_member(lake, s, report.member_problems, check_hashes)
                    report.members_checked += 1
    for key in rec_keys:
        if key not in seen:
            _check_recording(by_key[key], [], max_len, acc, p)
    return report
