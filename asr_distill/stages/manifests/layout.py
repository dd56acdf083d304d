"""Where the training manifests live in the lake.

Below ``training_manifests/``::

    latest.json                                     {"version": ..., "record": ...}: the newest complete version
    <version>/manifest.parquet                      one row per kept sample, every split (MANIFEST_SCHEMA)
    <version>/dropped.parquet                       one row per dropped sample with its rule (DROPPED_SCHEMA)
    <version>/stats.json                            hours/samples per split and language, drops, buckets
    <version>/nemo/<split>/tarred_audio_manifest.jsonl        NeMo tarred-dataset manifest of the split
    <version>/nemo/<split>/tarred_audio_filepaths.txt         its ordered tar list (line i = shard_id i)
    <version>/nemo/<split>/<bucket>/tarred_audio_manifest.jsonl   the same per duration bucket (NeMo bucketing)
    <version>/nemo/<split>/<bucket>/tarred_audio_filepaths.txt
    <version>/lhotse/<split>/cuts.jsonl.gz          Lhotse CutSet (MonoCut + Recording + supervision)
    <version>/_MANIFEST.json                        written last: config, inputs, teacher fingerprints, files

A version directory is never rewritten: a version whose ``_MANIFEST.json`` exists is complete.
"""

from __future__ import annotations

from dataclasses import dataclass

from asr_distill.storage import join_key

ROOT = "training_manifests"


def latest_key(root: str = ROOT) -> str:
    return join_key(root, "latest.json")


@dataclass(frozen=True)
class ManifestLayout:
    root: str
    version: str

    @property
    def prefix(self) -> str:
        return join_key(self.root, self.version) + "/"

    def key(self, *parts: str) -> str:
        return join_key(self.root, self.version, *parts)

    @property
    def manifest_key(self) -> str:
        return self.key("manifest.parquet")

    @property
    def dropped_key(self) -> str:
        return self.key("dropped.parquet")

    @property
    def stats_key(self) -> str:
        return self.key("stats.json")

    @property
    def record_key(self) -> str:
        return self.key("_MANIFEST.json")

    def nemo_manifest_key(self, split: str, bucket: str | None = None) -> str:
        return self.key("nemo", split, *([bucket] if bucket else []), "tarred_audio_manifest.jsonl")

    def nemo_tars_key(self, split: str, bucket: str | None = None) -> str:
        return self.key("nemo", split, *([bucket] if bucket else []), "tarred_audio_filepaths.txt")

    def lhotse_cuts_key(self, split: str) -> str:
        return self.key("lhotse", split, "cuts.jsonl.gz")


def manifest_layout(version: str, root: str = ROOT) -> ManifestLayout:
    if not version or "/" in version:
        raise ValueError(f"bad manifest version {version!r}")
    join_key(root, version)
    return ManifestLayout(root=root.strip("/"), version=version)
