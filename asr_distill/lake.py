"""Lake layout: the one owner of every key an asset writes, and how checks find an asset's tables.

Every derived artefact lives in the lake store under ``<asset>/...``. Stage cores get every key from
here; no other module builds a lake path. Declarative checks resolve a *table name* to the Parquet
objects that hold it for a partition through :func:`table_keys` (the registry below is built from the
same key functions).

::

    audio_index/<p>/audio_index.parquet                 one row per raw audio object
    cleaned_audio/<p>/kept.parquet                      kept clips (+ the run's inputs and summary)
    cleaned_audio/<p>/quarantine.parquet                quarantined clips with their reasons
    cleaned_audio/<p>/long_form.parquet                 recordings > 30 s (<= 12 h), to be segmented
    segmented_audio/<p>/recordings.parquet              one row per long-form recording (status, counts)
    segmented_audio/<p>/segments.parquet                one row per segment, kept or quarantined
    segmented_audio/<p>/tars/<recording name>.tar       a recording's kept segments as FLAC members
    webdataset_shards/<p>/bucket-02.0-04.0/shard-000000.tar   the shards (6-digit sequence per bucket)
    webdataset_shards/<p>/index.parquet                 one row per sample: member offsets and sizes
    webdataset_shards/<p>/shards.parquet                one row per shard: size, blake3 (b3sum), counts
    webdataset_shards/<p>/wids.json                     wids shard index, URLs relative to it
    webdataset_shards/<p>/_commits/bucket-.../shard-000000.json   per-shard commit record
    teacher_labels/<p>/<version>/<bucket>/shard-000000.parquet     one labels table per shard
    teacher_labels/<p>/<version>/_SUMMARY.json          written when every shard is done
    teacher_labels/<p>/current.json                     the version to read (last complete)
    training_manifests/latest.json                      the newest complete manifest version
    training_manifests/<version>/...                    see :class:`ManifestLayout`

``<version>`` of the labels = labels_version(teacher fingerprint): a new teacher never overwrites older
labels. A manifest version directory is never rewritten: one whose ``_MANIFEST.json`` exists is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from asr_distill.storage import Storage, join_key

# (lake store, partition key or None) -> Parquet keys holding the table for that partition.
TableResolver = Callable[[Storage, str | None], list[str]]
_TABLES: dict[str, TableResolver] = {}


def register_table(name: str, resolver: TableResolver) -> None:
    _TABLES[name] = resolver


def registered_tables() -> list[str]:
    return sorted(_TABLES)


def table_keys(name: str, lake: Storage, partition: str | None) -> list[str]:
    try:
        resolver = _TABLES[name]
    except KeyError:
        raise KeyError(f"no lake table named {name!r}; known: {', '.join(registered_tables())}") from None
    return resolver(lake, partition)


def _single_file(asset: str, filename: str) -> TableResolver:
    def resolve(lake: Storage, partition: str | None) -> list[str]:
        if partition is None:
            return [o.key for o in lake.iter_objects(f"{asset}/") if o.key.endswith("/" + filename)]
        key = join_key(asset, partition, filename)
        return [key] if lake.exists(key) else []

    return resolve


# -- raw store --------------------------------------------------------------------------------
def raw_prefix(partition: str) -> str:
    """The raw-store key prefix of a partition (a partition is a top-level raw prefix)."""
    return f"{partition}/"


# -- audio_index ------------------------------------------------------------------------
AUDIO_INDEX = "audio_index"
_AUDIO_INDEX_FILE = "audio_index.parquet"


def audio_index_key(partition: str) -> str:
    return join_key(AUDIO_INDEX, partition, _AUDIO_INDEX_FILE)


register_table(AUDIO_INDEX, _single_file(AUDIO_INDEX, _AUDIO_INDEX_FILE))


# -- cleaned audio (kept + long form + quarantine) ----------------------------------------------
CLEANED = "cleaned_audio"
_KEPT_FILE, _QUARANTINE_FILE, _LONG_FORM_FILE = "kept.parquet", "quarantine.parquet", "long_form.parquet"


def cleaned_kept_key(partition: str) -> str:
    return join_key(CLEANED, partition, _KEPT_FILE)


def cleaned_quarantine_key(partition: str) -> str:
    return join_key(CLEANED, partition, _QUARANTINE_FILE)


def cleaned_long_form_key(partition: str) -> str:
    return join_key(CLEANED, partition, _LONG_FORM_FILE)


register_table("cleaned", _single_file(CLEANED, _KEPT_FILE))
register_table("quarantine", _single_file(CLEANED, _QUARANTINE_FILE))
register_table("long_form", _single_file(CLEANED, _LONG_FORM_FILE))


# -- segmented audio (long-form recordings cut into <= 30 s segments) ---------------------------------
SEGMENTED = "segmented_audio"
_RECORDINGS_FILE, _SEGMENTS_FILE = "recordings.parquet", "segments.parquet"


def _partition_part(partition: str) -> str:
    if "/" in partition:
        raise ValueError(f"a partition name cannot contain '/': {partition!r}")
    return partition


def segmented_prefix(partition: str) -> str:
    return join_key(SEGMENTED, _partition_part(partition)) + "/"


def segmented_recordings_key(partition: str) -> str:
    return join_key(SEGMENTED, _partition_part(partition), _RECORDINGS_FILE)


def segmented_segments_key(partition: str) -> str:
    return join_key(SEGMENTED, _partition_part(partition), _SEGMENTS_FILE)


def segmented_tars_prefix(partition: str) -> str:
    return join_key(SEGMENTED, _partition_part(partition), "tars") + "/"


def segmented_tar_key(partition: str, recording_name: str) -> str:
    """The tar of one recording's kept segments; ``recording_name`` is the segment stage's safe name
    of the recording (:func:`asr_distill.stages.segment.layout.recording_name`)."""
    return join_key(SEGMENTED, _partition_part(partition), "tars", recording_name + ".tar")


register_table("segment_recordings", _single_file(SEGMENTED, _RECORDINGS_FILE))
register_table("segments", _single_file(SEGMENTED, _SEGMENTS_FILE))


# -- WebDataset shards --------------------------------------------------------------------
SHARDS = "webdataset_shards"
_SHARD_INDEX_FILE, _SHARD_TABLE_FILE, _WIDS_FILE = "index.parquet", "shards.parquet", "wids.json"


@dataclass(frozen=True)
class ShardLayout:
    """Keys of every object the shards stage writes for one partition (below ``webdataset_shards/<p>/``)."""

    partition: str

    @property
    def prefix(self) -> str:
        return join_key(SHARDS, self.partition) + "/"

    def shard_key(self, bucket_label: str, seq: int) -> str:
        return join_key(SHARDS, self.partition, bucket_label, f"shard-{seq:06d}.tar")

    def commit_key(self, bucket_label: str, seq: int) -> str:
        return join_key(SHARDS, self.partition, "_commits", bucket_label, f"shard-{seq:06d}.json")

    @property
    def commits_prefix(self) -> str:
        return join_key(SHARDS, self.partition, "_commits") + "/"

    @property
    def index_key(self) -> str:
        return join_key(SHARDS, self.partition, _SHARD_INDEX_FILE)

    @property
    def shards_key(self) -> str:
        return join_key(SHARDS, self.partition, _SHARD_TABLE_FILE)

    @property
    def wids_key(self) -> str:
        return join_key(SHARDS, self.partition, _WIDS_FILE)

    def relative(self, key: str) -> str:
        """``key`` relative to :attr:`prefix` (how ``wids.json`` names shards)."""
        if not key.startswith(self.prefix):
            raise ValueError(f"{key!r} is not below {self.prefix!r}")
        return key[len(self.prefix) :]


def shard_layout(partition: str) -> ShardLayout:
    """The layout of ``partition``'s shards."""
    join_key(SHARDS, partition)  # validates the partition as a key part
    if "/" in partition:
        raise ValueError(f"a partition name cannot contain '/': {partition!r}")
    return ShardLayout(partition=partition)


register_table("shard_index", _single_file(SHARDS, _SHARD_INDEX_FILE))
register_table("shards", _single_file(SHARDS, _SHARD_TABLE_FILE))


# -- teacher pseudo-labels ------------------------------------------------------------------
LABELS = "teacher_labels"


def labels_prefix(partition: str, version: str) -> str:
    return join_key(LABELS, partition, version) + "/"


def labels_key(partition: str, version: str, shard_key: str) -> str:
    """Labels Parquet of one shard: the shard's path below its partition, ``.tar`` -> ``.parquet``."""
    shards_prefix = shard_layout(partition).prefix
    if not shard_key.startswith(shards_prefix) or not shard_key.endswith(".tar"):
        raise ValueError(f"{shard_key!r} is not a shard of partition {partition!r}")
    rel = shard_key[len(shards_prefix) : -len(".tar")]
    return join_key(LABELS, partition, version, rel + ".parquet")


def labels_summary_key(partition: str, version: str) -> str:
    return join_key(LABELS, partition, version, "_SUMMARY.json")


def labels_current_key(partition: str) -> str:
    return join_key(LABELS, partition, "current.json")


def labelled_partitions(lake: Storage) -> list[str]:
    """Partitions that have ``teacher_labels/<p>/current.json``, sorted."""
    out = []
    for prefix in lake.list_prefixes(LABELS + "/"):
        p = prefix.rstrip("/").rsplit("/", 1)[-1]
        if lake.exists(labels_current_key(p)):
            out.append(p)
    return sorted(out)


def labels_version_keys(lake: Storage, partition: str, version: str) -> list[str]:
    """Every labels Parquet key written under ``version`` of ``partition``, sorted."""
    prefix = labels_prefix(partition, version)
    return sorted(o.key for o in lake.iter_objects(prefix) if o.key.endswith(".parquet"))


def current_labels_keys(lake: Storage, partition: str) -> list[str]:
    """Labels Parquet keys of the partition's current version (empty when it has none)."""
    from asr_distill.stages.labels.record import LabelsRecord  # the record reads current.json

    cur = LabelsRecord.read_current(lake, partition)
    return [] if cur is None else labels_version_keys(lake, partition, cur.version)


def _labels_resolver(lake: Storage, partition: str | None) -> list[str]:
    if partition is not None:
        return current_labels_keys(lake, partition)
    parts = [p.rstrip("/").rsplit("/", 1)[-1] for p in lake.list_prefixes(LABELS + "/")]
    return [k for p in sorted(parts) for k in current_labels_keys(lake, p)]


register_table("labels", _labels_resolver)


# -- training manifests ----------------------------------------------------------------------
MANIFESTS = "training_manifests"


def manifests_latest_key() -> str:
    """``training_manifests/latest.json``: ``{"version", "record", "prefix"}`` of the newest version."""
    return join_key(MANIFESTS, "latest.json")


@dataclass(frozen=True)
class ManifestLayout:
    """Keys of one manifest version, below ``training_manifests/<version>/``::

    manifest.parquet                                one row per kept sample, every split
    dropped.parquet                                 one row per dropped sample with its rule
    stats.json                                      hours/samples per split and language, drops, buckets
    nemo/<split>/tarred_audio_manifest.jsonl        NeMo tarred-dataset manifest of the split
    nemo/<split>/tarred_audio_filepaths.txt         its ordered tar list (line i = shard_id i)
    nemo/<split>/<bucket>/...                       the same per duration bucket (NeMo bucketing)
    lhotse/<split>/cuts.jsonl.gz                    Lhotse CutSet (MonoCut + Recording + supervision)
    _MANIFEST.json                                  written last: config, inputs, teachers, files
    """

    version: str

    @property
    def prefix(self) -> str:
        return join_key(MANIFESTS, self.version) + "/"

    def key(self, *parts: str) -> str:
        return join_key(MANIFESTS, self.version, *parts)

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


def manifest_layout(version: str) -> ManifestLayout:
    if not version or "/" in version:
        raise ValueError(f"bad manifest version {version!r}")
    join_key(MANIFESTS, version)
    return ManifestLayout(version=version)
