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

from asr_distill import lake as layout
from asr_distill.demo.longform import write_longform_partition
from asr_distill.stages.clean.config import CleanConfig
from asr_distill.stages.clean.core import analyze_clip
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
        assert not row["reasons"] and row["pcm_blake3"] and row["decoded_duration_s"] > 30, row
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
    return read_table(lake, layout.segmented_segments_key(partition))


SEGMENTED_PARTITION = "lf"
NARRATOR = "narrator"


def build_segmented_lake(demo_raw: LocalStorage, root: Path, work: Path) -> dict[str, Any]:
    """A labelled lake of partition ``lf``: short clips (three copied from the demo corpus's
    ``en_read``) and the two long recordings (the monologue with speaker ``narrator``), through the real
    index, clean, segmentation and shards stages, then controlled labels (manifests not run)."""
    from asr_distill import lake as L
    from asr_distill.stages.clean import clean_to_tables, read_index_rows
    from asr_distill.stages.index.build import build_index
    from asr_distill.stages.shards import run_shards
    from tests.manifests_fixtures import SHARD_CONFIG, _label_controlled

    lf = SEGMENTED_PARTITION
    raw = LocalStorage(root / "raw")
    objects = list(demo_raw.iter_objects("en_read/"))
    stems = sorted({o.key.rsplit(".", 1)[0] for o in objects if o.key.endswith(".wav")})[:3]
    for o in objects:
        if o.key.rsplit(".", 1)[0] in stems:
            raw.write_bytes(f"{lf}/short/" + o.key.rsplit("/", 1)[-1], demo_raw.read_bytes(o.key))
    long_keys = write_long_recordings(root / "raw", lf, work)
    speakers = {k: NARRATOR for k in long_keys if k.endswith("monologue.wav")}
    lake = LocalStorage(root / "lake")
    build_index(raw, lake, lf, lf + "/", L.audio_index_key(lf))
    clean_to_tables(read_index_rows(lake, L.audio_index_key(lf)), raw, lake, kept_key=L.cleaned_kept_key(lf),
                    quarantine_key=L.cleaned_quarantine_key(lf), executor="inline")  # fmt: skip
    segment(raw, lake, lf, long_keys, speakers)
    shards = run_shards(raw, lake, lf, SHARD_CONFIG, executor="inline")
    kept = read_table(lake, L.cleaned_kept_key(lf)).to_pylist()
    assert kept and shards.ok and shards.planned_segments >= 3
    assert shards.samples == shards.planned_segments + len(kept)
    index = read_table(lake, L.shard_layout(lf).index_key).to_pylist()
    _label_controlled(lake, lf, index, {r["key"]: r["reference_text"] for r in kept}, cases=False)
    return {"lake": lake, "segments": segments_table(lake, lf), "long_keys": long_keys, "clips": len(kept)}
