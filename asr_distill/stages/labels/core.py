"""Label one shard with a loaded teacher: one labels-table row per sample, in the shard's order.

Plain Python (no Ray, no Dagster): the Ray pool calls :func:`label_shard` inside its actors, and it can
run in-process as well (tests, a laptop, a debugger).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from asr_distill.language import primary_language
from asr_distill.stages.labels.inputs import LabelInput
from asr_distill.stages.labels.quality import QualityConfig, assess
from asr_distill.stages.labels.schema import (
    ERROR_REASONS,
    LABELS_SCHEMA,
    META_FINGERPRINT,
    META_QUALITY,
    META_TEACHER,
)
from asr_distill.storage import ObjectInfo, Storage
from asr_distill.tableio import write_table
from asr_distill.teachers.base import SAMPLE_RATE, Teacher, TeacherResult, canonical_json

Row = dict[str, Any]


class ShardError(Exception):
    """The shard as a whole cannot be labelled (unreadable, duplicate sample keys)."""


@dataclass(frozen=True, slots=True)
class ShardStats:
    rows: int
    labelled: int
    errors: int
    flagged: int
    audio_s: float
    decode_s: float

    @classmethod
    def of(cls, table: pa.Table) -> ShardStats:
        d = table.select(["status", "flagged", "audio_duration_s", "decode_time_s"]).to_pydict()
        ok = sum(1 for s in d["status"] if s == "ok")
        return cls(
            rows=table.num_rows,
            labelled=ok,
            errors=table.num_rows - ok,
            flagged=sum(1 for f, s in zip(d["flagged"], d["status"], strict=True) if f and s == "ok"),
            audio_s=float(sum(x for x in d["audio_duration_s"] if x is not None)),
            decode_s=float(sum(x for x in d["decode_time_s"] if x is not None)),
        )


def _error_row(shard_id: str, item: LabelInput, reason: str, detail: str | None, fingerprint: str) -> Row:
    if reason not in ERROR_REASONS:
        raise ValueError(f"unknown error reason {reason!r}")
    return {
        "shard_id": shard_id,
        "sample_key": item.key,
        "status": "error",
        "error_reason": reason,
        "error_detail": detail or ERROR_REASONS[reason],
        "expected_language": primary_language(item.expected_language),
        "audio_duration_s": item.duration_s,
        "truncated": False,
        "has_reference": item.reference_text is not None,
        "flags": [],
        "flagged": True,
        "teacher_fingerprint": fingerprint,
    }


def _label_row(
    shard_id: str, item: LabelInput, res: TeacherResult, cfg: QualityConfig, fingerprint: str
) -> Row:
    if not res.ok:
        row = _error_row(shard_id, item, res.error or "teacher_error", res.error_detail, fingerprint)
        row["decode_time_s"] = res.decode_time_s
        return row
    text = res.text or ""
    duration = len(item.audio) / SAMPLE_RATE if item.audio is not None else 0.0
    q = assess(
        text,
        duration_s=duration,
        cfg=cfg,
        avg_logprob=res.avg_logprob,
        no_speech_prob=res.no_speech_prob,
        truncated=res.truncated,
        # What identification said (also on declared clips), else the language the text was decoded in.
        language=res.detected_language or res.language,
        language_probability=res.language_probability,
        language_detected=res.detected_language is not None,
        expected_language=item.expected_language,
        reference_text=item.reference_text,
    )
    return {
        "shard_id": shard_id,
        "sample_key": item.key,
        "status": "ok",
        "text": text,
        "language": primary_language(res.language),
        "language_detected": res.language_detected,
        "detected_language": primary_language(res.detected_language),
        "language_probability": res.language_probability,
        "expected_language": primary_language(item.expected_language),
        "avg_logprob": res.avg_logprob,
        "num_tokens": res.num_tokens,
        "compression_ratio": res.compression_ratio,
        "no_speech_prob": res.no_speech_prob,
        "truncated": res.truncated,
        "audio_duration_s": duration,
        "chars_per_second": q.chars_per_second,
        "decode_time_s": res.decode_time_s,
        "has_reference": item.reference_text is not None,
        "error_rate": q.error_rate,
        "error_metric": q.error_metric,
        "flags": list(q.flags),
        "flagged": bool(q.flags),
        "teacher_fingerprint": fingerprint,
    }


def labels_table(rows: list[Row], *, teacher: dict[str, Any], quality: QualityConfig) -> pa.Table:
    """Rows -> a table of :data:`LABELS_SCHEMA` whose metadata names the teacher and the thresholds."""
    cols = {name: [r.get(name) for r in rows] for name in LABELS_SCHEMA.names}
    meta = {
        META_FINGERPRINT: str(teacher["fingerprint"]).encode(),
        META_TEACHER: canonical_json(teacher).encode(),
        META_QUALITY: json.dumps(quality.to_dict(), sort_keys=True).encode(),
    }
    return pa.Table.from_pydict(cols, schema=LABELS_SCHEMA.with_metadata(meta))


def label_shard(
    teacher: Teacher,
    shard_id: str,
    samples: Iterable[LabelInput],
    *,
    quality: QualityConfig | None = None,
    batch_size: int = 8,
    teacher_info: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """Label every sample of one shard; rows keep the shard's order, one per sample key.

    Raises :class:`ShardError` when a sample key repeats (the shard is malformed: which row would be
    the sample's?). Reader errors and teacher errors become error rows; nothing is dropped.
    """
    cfg = quality or QualityConfig()
    info = teacher_info or teacher.describe()
    fingerprint = str(info["fingerprint"])
    rows: list[Row | None] = []
    seen: set[str] = set()
    pending: list[tuple[int, LabelInput]] = []

    def flush() -> None:
        if not pending:
            return
        # Each clip's declared language (sidecar or index): the teacher decodes in it and its language
        # identification is compared with it (``language_mismatch``).
        results = teacher.transcribe(
            [(it.key, it.audio) for _, it in pending],
            languages=[primary_language(it.expected_language) for _, it in pending],
        )
        for (pos, it), res in zip(pending, results, strict=True):
            rows[pos] = _label_row(shard_id, it, res, cfg, fingerprint)
        pending.clear()
        if progress is not None:
            progress(sum(r is not None for r in rows))

    for item in samples:
        if item.key in seen:
            raise ShardError(f"shard {shard_id!r}: sample key {item.key!r} occurs twice")
        seen.add(item.key)
        rows.append(None)
        if item.error is not None or item.audio is None:
            rows[-1] = _error_row(
                shard_id, item, item.error or "missing_audio", item.error_detail, fingerprint
            )
            continue
        pending.append((len(rows) - 1, item))
        if len(pending) >= batch_size:
            flush()
    flush()
    return labels_table([r for r in rows if r is not None], teacher=info, quality=cfg)


def write_labels(store: Storage, key: str, table: pa.Table) -> ObjectInfo:
    """Write one shard's labels table as Parquet (zstd) atomically: readers never see a partial file."""
    write_table(store, key, table)
    return store.stat(key)
