"""Names: sample keys inside the shards, and where every object of the stage lives in the lake.

Sample key rule (``SAMPLE_KEY_RULE``), from the clip's full source key in the raw store::

    slug  = source key without its partition prefix and without the last extension,
            NFKD-folded to ASCII, every run of characters outside [A-Za-z0-9] replaced by "-",
            leading/trailing "-" removed, then its last 48 characters (again trimmed of "-")
    hash  = first 16 hex digits of sha256(full source key as UTF-8)
    key   = f"{slug}-{hash}"   or just  f"{hash}"  when the slug is empty

e.g. ``en_read/spk01/Hello World.wav`` -> ``spk01-Hello-World-3f1c0a9e5b7d2c44``. Keys match
``[A-Za-z0-9][A-Za-z0-9-]{0,64}``: no dot (WebDataset and Hugging Face ``datasets`` cut the key at the
first dot), no leading underscore (WebDataset treats ``__x__`` as metadata), no slash (no directories in
the tar), ASCII only and at most 70 bytes with the extension, so every member name fits a plain USTAR
header. Keys are unique whenever the 64-bit hashes of the source keys are (a collision among a million
clips has probability ~3e-8); :func:`~asr_distill.stages.shards.plan.plan_partition` still checks and
refuses a partition with a collision. Since the hash covers the partition prefix, keys are unique across
partitions too.

Lake layout (one function, :func:`shard_layout`), below ``<root>/<partition>/``::

    bucket-02.0-04.0/shard-000000.tar     the shards (``bucket-<lo>-<hi>``, 6-digit sequence per bucket)
    index.parquet                         one row per sample: member offsets and sizes (SAMPLE_INDEX_SCHEMA)
    shards.parquet                        one row per shard: size, sha256, counts (SHARD_TABLE_SCHEMA)
    wids.json                             wids shard index (``wids-shard-index-v1``), URLs relative to it
    _commits/bucket-02.0-04.0/shard-000000.json   per-shard commit record (what a re-run may reuse)
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from asr_distill.storage import join_key

SAMPLE_KEY_RULE = "slug48-sha256x16"
SLUG_CHARS = 48
HASH_CHARS = 16
SAMPLE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,64}$")
DEFAULT_ROOT = "webdataset_shards"

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def _slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_ALNUM.sub("-", folded).strip("-")
    return slug[-SLUG_CHARS:].strip("-")


def sample_key(source_key: str, partition: str | None = None) -> str:
    """The WebDataset sample key of a clip (rule in the module docstring)."""
    rest = source_key
    if partition and rest.startswith(partition + "/"):
        rest = rest[len(partition) + 1 :]
    head, _, last = rest.rpartition("/")
    stem = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
    slug = _slug(f"{head}/{stem}" if head else stem)
    digest = hashlib.sha256(source_key.encode("utf-8")).hexdigest()[:HASH_CHARS]
    return f"{slug}-{digest}" if slug else digest


def is_safe_sample_key(key: str) -> bool:
    """Whether ``key`` is usable as a WebDataset / Hugging Face sample key (see the module docstring)."""
    return bool(SAMPLE_KEY_RE.match(key))


@dataclass(frozen=True)
class ShardLayout:
    """Keys of every object the stage writes for one partition."""

    root: str
    partition: str

    @property
    def prefix(self) -> str:
        return join_key(self.root, self.partition) + "/"

    def shard_key(self, bucket_label: str, seq: int) -> str:
        return join_key(self.root, self.partition, bucket_label, f"shard-{seq:06d}.tar")

    def commit_key(self, bucket_label: str, seq: int) -> str:
        return join_key(self.root, self.partition, "_commits", bucket_label, f"shard-{seq:06d}.json")

    @property
    def commits_prefix(self) -> str:
        return join_key(self.root, self.partition, "_commits") + "/"

    @property
    def index_key(self) -> str:
        return join_key(self.root, self.partition, "index.parquet")

    @property
    def shards_key(self) -> str:
        return join_key(self.root, self.partition, "shards.parquet")

    @property
    def wids_key(self) -> str:
        return join_key(self.root, self.partition, "wids.json")

    def relative(self, key: str) -> str:
        """``key`` relative to :attr:`prefix` (how ``wids.json`` names shards)."""
        if not key.startswith(self.prefix):
            raise ValueError(f"{key!r} is not below {self.prefix!r}")
        return key[len(self.prefix) :]


def shard_layout(partition: str, root: str = DEFAULT_ROOT) -> ShardLayout:
    """The layout of ``partition``'s shards below ``root`` (the asset's folder in the lake)."""
    join_key(root, partition)  # validates both
    if "/" in partition:
        raise ValueError(f"a partition name cannot contain '/': {partition!r}")
    return ShardLayout(root=root.strip("/"), partition=partition)
