"""Sample keys inside the shards (the lake keys of the shards themselves live in :mod:`asr_distill.lake`).

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

The lake keys of the stage's objects (shards, index.parquet, shards.parquet, wids.json, commit records)
are owned by :mod:`asr_distill.lake` (:class:`~asr_distill.lake.ShardLayout`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

SAMPLE_KEY_RULE = "slug48-sha256x16"
SLUG_CHARS = 48
HASH_CHARS = 16
SAMPLE_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,64}$")

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
