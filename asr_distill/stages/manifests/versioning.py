"""Versioned manifests: ``version = sha256(config fingerprint, inputs)``; a version is written once.

The inputs that name a version, per partition: the labels version and teacher fingerprint from
``current.json``, the BLAKE3 list of the shards (``shards.parquet``), and the BLAKE3 of ``index.parquet``,
of the clean stage's ``kept.parquet`` and of every current labels file. A run whose version already has its
``_MANIFEST.json`` (written last) finds it complete and rewrites nothing; ``latest.json`` then points at it.
Older versions are never touched.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from asr_distill.lake import (
    MANIFESTS,
    ManifestLayout,
    labelled_partitions,
    manifest_layout,
    manifests_latest_key,
)
from asr_distill.stages.leftovers import sweep_stage_folder
from asr_distill.stages.manifests.config import FORMAT_VERSION, ManifestConfig
from asr_distill.stages.manifests.core import (
    ManifestInputError,
    PartitionInputs,
    build_manifest,
    load_partition,
    manifest_stats,
)
from asr_distill.stages.manifests.formats import write_lhotse, write_nemo, write_parquet, write_text
from asr_distill.stages.progress import ProgressFn, Reporter
from asr_distill.storage import Storage
from asr_distill.tableio import read_json, write_json

VERSION_CHARS = 16


def manifest_version(cfg: ManifestConfig, digests: list[dict[str, Any]]) -> str:
    payload = {
        "format_version": FORMAT_VERSION,
        "config": cfg.fingerprint(),
        "inputs": sorted(digests, key=lambda d: d["partition"]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:VERSION_CHARS]


@dataclass
class ManifestSummary:
    """What :func:`run_manifests` did: the version, whether it existed already, and its record."""

    version: str
    prefix: str
    reused: bool
    record: dict[str, Any]  # the version's _MANIFEST.json
    elapsed_s: float = 0.0
    files: list[dict[str, Any]] = field(default_factory=list)
    swept_temporaries: int = 0  # stale .asrd-tmp-* leftovers of killed writes removed

    @property
    def layout(self) -> ManifestLayout:
        return manifest_layout(self.version)

    @property
    def stats(self) -> dict[str, Any]:
        """The version's ``stats.json`` document."""
        return self.record["stats"]

    @property
    def teachers(self) -> dict[str, dict[str, Any]]:
        """partition -> labels version, teacher fingerprint, teacher and quality config."""
        return self.record["teachers"]

    @property
    def teacher_fingerprints(self) -> list[str]:
        return self.record["teacher_fingerprints"]

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    @property
    def config_fingerprint(self) -> str:
        return self.record["config_fingerprint"]


def read_record(lake: Storage, version: str) -> dict[str, Any] | None:
    """A version's ``_MANIFEST.json``, or None when the version is not complete."""
    return read_json(lake, manifest_layout(version).record_key)


def read_latest(lake: Storage) -> dict[str, Any] | None:
    """``latest.json`` (``version``, ``record``: the key of its ``_MANIFEST.json``) or None."""
    return read_json(lake, manifests_latest_key())


def _point_latest(lake: Storage, version: str) -> None:
    layout = manifest_layout(version)
    body = {"version": version, "record": layout.record_key, "prefix": layout.prefix}
    cur = read_latest(lake)
    if cur is None or {k: cur.get(k) for k in body} != body:
        write_json(lake, manifests_latest_key(), body)


def run_manifests(
    lake: Storage,
    config: ManifestConfig | None = None,
    *,
    partitions: list[str] | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> ManifestSummary:
    """Build (or find) the manifest version of the current inputs and point ``latest.json`` at it.

    ``partitions``: the partitions to include (default: every partition with current labels). A version
    whose ``_MANIFEST.json`` exists is reused as it is, unless ``force`` (then written again: the same
    inputs give the same bytes).
    """
    cfg = config or ManifestConfig()
    say = Reporter("manifests", None, progress)
    start = time.monotonic()
    swept = sweep_stage_folder(lake, MANIFESTS + "/", say).removed
    names = sorted(partitions) if partitions else labelled_partitions(lake)
    if not names:
        raise ManifestInputError("no partition has teacher labels (teacher_labels/<partition>/current.json)")
    inputs: list[PartitionInputs] = [load_partition(lake, p) for p in names]
    version = manifest_version(cfg, [i.digest for i in inputs])
    layout = manifest_layout(version)
    existing = None if force else read_record(lake, version)
    if existing is not None:
        say(f"manifest version {version} is complete already; nothing rewritten")
        _point_latest(lake, version)
        return ManifestSummary(
            version, layout.prefix, True, existing, time.monotonic() - start, existing["files"], swept
        )

    build = build_manifest(inputs, cfg)
    stats = manifest_stats(build)
    say(f"manifest version {version}: {build.manifest.num_rows} kept, {build.dropped.num_rows} dropped")
    rows = build.manifest.to_pylist()
    files = [write_parquet(lake, layout.manifest_key, build.manifest)]
    files.append(write_parquet(lake, layout.dropped_key, build.dropped))
    files += write_nemo(lake, layout, rows)
    files += write_lhotse(lake, layout, rows, cfg)
    files.append(write_text(lake, layout.stats_key, json.dumps(stats, sort_keys=True, indent=1)))
    record = {
        "version": version,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "config_fingerprint": cfg.fingerprint(),
        "partitions": names,
        "inputs": [i.digest for i in inputs],
        "teachers": {
            i.partition: {
                "labels_version": i.labels_version,
                "fingerprint": i.teacher_fingerprint,
                "teacher": i.current.teacher,
                "quality": i.current.quality,
            }
            for i in inputs
        },
        "teacher_fingerprints": sorted({i.teacher_fingerprint for i in inputs if i.teacher_fingerprint}),
        "counts": [c.to_dict() for c in build.counts],
        "stats": stats,
        "files": files,
    }
    write_json(lake, layout.record_key, record)
    _point_latest(lake, version)
    return ManifestSummary(version, layout.prefix, False, record, time.monotonic() - start, files, swept)
