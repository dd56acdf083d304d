"""``current.json`` / ``_SUMMARY.json`` of a labels version: one typed record that writes and reads them.

A partition's labels version ``teacher_labels/<p>/<version>/`` is complete when its ``_SUMMARY.json``
exists; ``teacher_labels/<p>/current.json`` (the same bytes) names the version downstream stages read and
is replaced, atomically, only after every shard of the partition has its labels. The record says which
teacher wrote them (fingerprint, model info and config), with which quality thresholds and check
thresholds, from which shards (shard key -> BLAKE3), in which files, and how many rows it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asr_distill import lake as layout
from asr_distill.storage import Storage
from asr_distill.tableio import json_bytes, read_json

# The labels version of a partition without kept clips (no shards, nothing to label).
NO_SHARDS_VERSION = "no-shards"


@dataclass(frozen=True)
class LabelsRecord:
    """What ``current.json`` holds (every field is written; readers tolerate missing optional ones)."""

    version: str
    fingerprint: str = ""  # teacher fingerprint ("" when the partition had no shards)
    teacher: dict[str, Any] | None = field(default_factory=dict)  # teacher info (model id, versions...)
    teacher_config: dict[str, Any] | None = field(default_factory=dict)  # backend + its config
    quality: dict[str, Any] | None = field(default_factory=dict)  # QualityConfig.to_dict()
    thresholds: dict[str, Any] = field(default_factory=dict)  # blocking check thresholds
    shards: dict[str, str] = field(
        default_factory=dict
    )  # shard key -> BLAKE3 of the shard the labels were made from
    labels: list[str] = field(default_factory=list)  # labels Parquet keys, sorted by shard
    rows: int = 0
    labelled: int = 0
    errors: int = 0

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "fingerprint": self.fingerprint,
            "teacher": self.teacher,
            "teacher_config": self.teacher_config,
            "quality": self.quality,
            "thresholds": self.thresholds,
            "shards": self.shards,
            "labels": self.labels,
            "rows": self.rows,
            "labelled": self.labelled,
            "errors": self.errors,
        }

    def to_json(self) -> bytes:
        """The record's bytes (sorted keys, one space of indent)."""
        return json_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelsRecord:
        return cls(
            version=d.get("version"),  # type: ignore[arg-type]  # validated by readers that need it
            fingerprint=d.get("fingerprint") or "",
            teacher=d.get("teacher"),
            teacher_config=d.get("teacher_config"),
            quality=d.get("quality"),
            thresholds=d.get("thresholds") or {},
            shards=d.get("shards") or {},
            labels=list(d.get("labels") or []),
            rows=int(d.get("rows") or 0),
            labelled=int(d.get("labelled") or 0),
            errors=int(d.get("errors") or 0),
        )

    # -- the lake --------------------------------------------------------------------------------
    def write(self, lake: Storage, partition: str) -> None:
        """``_SUMMARY.json`` of the version, then ``current.json`` (last: readers switch only now)."""
        blob = self.to_json()
        lake.write_bytes(layout.labels_summary_key(partition, self.version), blob)
        lake.write_bytes(layout.labels_current_key(partition), blob)

    @classmethod
    def read_current(cls, lake: Storage, partition: str) -> LabelsRecord | None:
        """The partition's ``current.json``, or None when it has none."""
        d = read_json(lake, layout.labels_current_key(partition))
        return None if d is None else cls.from_dict(d)

    @property
    def cer_languages(self) -> frozenset[str]:
        """Languages the labels' quality config scores by CER."""
        return frozenset((self.quality or {}).get("cer_languages", []))
