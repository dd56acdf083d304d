"""A labelled lake for the manifests tests: the demo corpus through the real index, clean and shards
stages, then teacher labels the way the teacher_labels asset lays them out.

* ``en_conversational``: labelled by the real CPU teacher (bundled faster-whisper tiny.en) through ``label_shard``;
* ``en_read``: controlled labels, one case per drop rule (see :data:`CONTROLLED`);
* ``en_mixed``: controlled clean labels (text = reference, WER 0) with speakers.

Built once per test session (the base lake is read-only: tests copy it before writing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from asr_distill import lake as L
from asr_distill.stages.clean import clean_to_tables, read_index_rows
from asr_distill.stages.index.build import build_index
from asr_distill.stages.labels import (
    QualityConfig,
    WebDatasetShardReader,
    label_shard,
    labels_table,
    write_labels,
)
from asr_distill.stages.shards import ShardConfig, write_shards
from asr_distill.storage import LocalStorage
from asr_distill.tableio import read_table
from asr_distill.teachers.base import labels_version

PARTITIONS = ("en_conversational", "en_read", "en_mixed")
SHARD_CONFIG = ShardConfig(max_shard_samples=4)
CONTROLLED_FP = hashlib.sha256(b"controlled test teacher").hexdigest()
OTHER_FP = hashlib.sha256(b"another teacher").hexdigest()
QUALITY = QualityConfig()

# en_read, by position in index order: what its label looks like -> the rule expected to drop it.
CONTROLLED: dict[int, tuple[str, str | None]] = {
    0: ("missing", "no_label"),
    1: ("error", "label_error"),
    2: ("wer_0.25", "high_wer"),
    3: ("wer_0.05_flagged", None),  # reference and a low WER: kept despite its flags
    4: ("noref_repeated_ngram", "flag:repeated_ngram"),
    5: ("noref_low_logprob", None),  # low_avg_logprob is not a drop flag by default
    6: ("other_teacher", "fingerprint_mismatch"),
    7: ("wer_0.10", "high_wer"),  # the bound itself is dropped (keep only WER < 10 %)
    8: ("duplicate", "duplicate_label"),
}
ORPHAN_KEY = "orphan-sample-0000000000000000"  # a label row for a sample no shard holds -> not_in_shards

_CACHE: dict[str, Path] = {}


def _base_row(ir: dict[str, Any], fp: str) -> dict[str, Any]:
    return {
        "shard_id": ir["shard_key"],
        "sample_key": ir["sample_key"],
        "status": "ok",
        "text": "a fine label",
        "language": "en",
        "language_detected": False,
        "expected_language": "en",
        "avg_logprob": -0.2,
        "num_tokens": 4,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
        "truncated": False,
        "audio_duration_s": ir["duration_s"],
        "chars_per_second": 3.0,
        "decode_time_s": 0.01,
        "has_reference": False,
        "error_rate": None,
        "error_metric": None,
        "flags": [],
        "flagged": False,
        "teacher_fingerprint": fp,
    }


def _controlled_rows(case: str, ir: dict[str, Any], ref: str | None) -> list[dict[str, Any]]:
    r = _base_row(ir, CONTROLLED_FP)
    r["text"] = ref or "a fine label"
    if case == "missing":
        return []
    if case == "error":
        r.update(status="error", error_reason="teacher_error", error_detail="boom", text=None, flagged=True)
    elif case.startswith("wer_"):
        rate = float(case.split("_")[1])
        r.update(has_reference=True, error_rate=rate, error_metric="wer")
        if case.endswith("flagged"):
            r.update(flags=["repeated_ngram", "low_avg_logprob"], flagged=True)
        elif rate > QUALITY.max_error_rate - 1e-9:
            r.update(flags=["high_wer"], flagged=True)
    elif case == "noref_repeated_ngram":
        r.update(flags=["repeated_ngram"], flagged=True)
    elif case == "noref_low_logprob":
        r.update(flags=["low_avg_logprob"], flagged=True, avg_logprob=-1.5)
    elif case == "other_teacher":
        r.update(teacher_fingerprint=OTHER_FP)
    elif case == "duplicate":
        return [r, dict(r)]
    return [r]


def _write_current(lake: LocalStorage, partition: str, fp: str, teacher: dict[str, Any]) -> str:
    version = labels_version(fp)
    body = {"version": version, "fingerprint": fp, "teacher": teacher, "quality": QUALITY.to_dict()}
    lake.write_bytes(L.labels_current_key(partition), json.dumps(body, sort_keys=True).encode())
    return version


def _label_controlled(lake: LocalStorage, partition: str, index: list[dict[str, Any]], refs: dict[str, Any],
                      cases: bool) -> None:  # fmt: skip
    teacher = {"fingerprint": CONTROLLED_FP, "backend": "controlled"}
    version = _write_current(lake, partition, CONTROLLED_FP, teacher)
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for pos, ir in enumerate(index):
        ref = refs.get(ir["source_key"])
        if cases and pos in CONTROLLED:
            rows = _controlled_rows(CONTROLLED[pos][0], ir, ref)
        else:
            rows = [_base_row(ir, CONTROLLED_FP)]
            if ref:
                rows[0].update(text=ref, has_reference=True, error_rate=0.0, error_metric="wer")
        by_shard.setdefault(ir["shard_key"], []).extend(rows)
    if cases:
        first = index[0]
        orphan = _base_row(first, CONTROLLED_FP)
        orphan["sample_key"] = ORPHAN_KEY
        by_shard[first["shard_key"]].append(orphan)
    for shard_key in sorted({ir["shard_key"] for ir in index}):
        table = labels_table(by_shard.get(shard_key, []), teacher=teacher, quality=QUALITY)
        write_labels(lake, L.labels_key(partition, version, shard_key), table)


def _label_with_teacher(lake: LocalStorage, partition: str, index: list[dict[str, Any]]) -> None:
    from asr_distill.teachers.faster_whisper import FasterWhisperConfig

    teacher = FasterWhisperConfig().build()
    info = teacher.describe()
    version = _write_current(lake, partition, info["fingerprint"], info)
    reader = WebDatasetShardReader(lake.uri)
    for shard_key in sorted({ir["shard_key"] for ir in index}):
        table = label_shard(teacher, shard_key, reader(shard_key), quality=QUALITY, teacher_info=info)
        write_labels(lake, L.labels_key(partition, version, shard_key), table)
    teacher.close()


def build_labelled_lake(raw: LocalStorage, root: Path) -> Path:
    """The base lake (built once per session); copy it before writing into it."""
    key = str(raw.uri)
    if key in _CACHE:
        return _CACHE[key]
    lake = LocalStorage(root)
    for p in PARTITIONS:
        build_index(raw, lake, p, p + "/", L.audio_index_key(p))
        clean_to_tables(read_index_rows(lake, L.audio_index_key(p)), raw, lake, kept_key=L.cleaned_kept_key(p),
                  quarantine_key=L.cleaned_quarantine_key(p), executor="inline")  # fmt: skip
        kept = read_table(lake, L.cleaned_kept_key(p))
        write_shards(kept, p, lake, raw=raw, config=SHARD_CONFIG, executor="inline")
        index = read_table(lake, L.shard_layout(p).index_key).to_pylist()
        refs = {r["key"]: r["reference_text"] for r in kept.to_pylist()}
        if p == "en_conversational":
            _label_with_teacher(lake, p, index)
        else:
            _label_controlled(lake, p, index, refs, cases=(p == "en_read"))
    _CACHE[key] = root
    return root


def copy_lake(base: Path, dest: Path) -> LocalStorage:
    shutil.copytree(base, dest)
    return LocalStorage(dest)
