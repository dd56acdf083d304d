"""Long recordings cut by the real segmentation core, for the tests of the stages downstream of it.

Two generated long-form recordings (:mod:`asr_distill.demo.longform`: ``just_over_30s.flac``, 31 s,
and ``monologue.wav``, ~33 s) are written into a raw store below ``<partition>/long/``, analysed as the
clean stage does (their long-form rows) and segmented by :func:`run_segment` into the lake:
``segmented_audio/<partition>/segments.parquet`` and one tar of FLAC members per recording.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from asr_distill.demo.longform import write_longform_partition
from asr_distill.stages.clean.config import CleanConfig
from asr_distill.stages.clean.core import analyze_clip
from asr_distill.stages.segment import layout as segment_layout
from asr_distill.stages.segment.config import SegmentStageConfig
from asr_distill.stages.segment.core import SegmentSummary, run_segment
from asr_distill.storage import LocalStorage
from asr_distill.tableio import read_table

LONG_NAMES = ("just_over_30s.flac", "monologue.wav")
_GENERATED: dict[str, Path] = {}


def _generated(work: Path) -> Path:
    """The generated long-form files (written once per session; short dialogue to save time)."""
    if "dir" not in _GENERATED:
        out = work / "longform_generated"
        write_longform_partition(out, seed=0, dialogue_s=12.0, monologue_s=33.0)
        _GENERATED["dir"] = out
    return _GENERATED["dir"]


def write_long_recordings(raw_root: Path, partition: str, work: Path) -> list[str]:
    """Copy the two long recordings to ``raw_root/<partition>/long/``; their raw keys, sorted."""
    src = _generated(work)
    keys = []
    for name in LONG_NAMES:
        dest = raw_root / partition / "long" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dest)
        keys.append(f"{partition}/long/{name}")
    return sorted(keys)


def long_form_rows(raw: LocalStorage, keys: list[str], speakers: dict[str, str] | None = None) -> list[dict]:
    """The recordings' rows as the clean stage computes them (analyze_clip), sorted by key."""
    rows = []
    for key in keys:
        part = key.split("/", 1)[0]
        index_row: dict[str, Any] = {"partition": part, "key": key, "extension": key.rsplit(".", 1)[-1]}
        row = analyze_clip({**index_row, "text": None}, raw, CleanConfig())
        assert "too_long" in row["reasons"] and row["pcm_sha256"], row
        if speakers and key in speakers:
            row["speaker"] = speakers[key]
        rows.append(row)
    return sorted(rows, key=lambda r: r["key"])


def segment(
    raw: LocalStorage,
    lake: LocalStorage,
    partition: str,
    keys: list[str],
    speakers: dict[str, str] | None = None,
) -> SegmentSummary:
    rows = long_form_rows(raw, keys, speakers)
    return run_segment(
        raw, lake, partition, SegmentStageConfig(workers=1, executor="thread"), long_form_rows=rows
    )


def segments_table(lake: LocalStorage, partition: str) -> pa.Table:
    return read_table(lake, segment_layout.segments_key(partition))
