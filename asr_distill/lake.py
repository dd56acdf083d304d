"""Lake layout: where each asset writes, and how checks find an asset's tables.

Every derived artefact lives in the lake store under ``<asset>/<partition>/...``. Stage cores
get keys from here so the layout is defined once. Declarative checks resolve a *table name*
to the Parquet objects that hold it for a partition through :func:`table_keys`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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


# -- audio_index ------------------------------------------------------------------------
AUDIO_INDEX = "audio_index"


def audio_index_key(partition: str) -> str:
    return join_key(AUDIO_INDEX, partition, "audio_index.parquet")


register_table(AUDIO_INDEX, _single_file(AUDIO_INDEX, "audio_index.parquet"))


# -- cleaned audio (kept + quarantine) ----------------------------------------------------
CLEANED = "cleaned_audio"


def cleaned_kept_key(partition: str) -> str:
    return join_key(CLEANED, partition, "kept.parquet")


def cleaned_quarantine_key(partition: str) -> str:
    return join_key(CLEANED, partition, "quarantine.parquet")


register_table("cleaned", _single_file(CLEANED, "kept.parquet"))
register_table("quarantine", _single_file(CLEANED, "quarantine.parquet"))


# -- WebDataset shards --------------------------------------------------------------------
SHARDS = "webdataset_shards"  # == asr_distill.stages.shards.layout.DEFAULT_ROOT
register_table("shard_index", _single_file(SHARDS, "index.parquet"))
register_table("shards", _single_file(SHARDS, "shards.parquet"))


# -- teacher pseudo-labels ------------------------------------------------------------------
# teacher_labels/<partition>/<version>/<bucket>/shard-000000.parquet   one labels table per shard
# teacher_labels/<partition>/<version>/_SUMMARY.json                   written when every shard is done
# teacher_labels/<partition>/current.json                              the version to read (last complete)
# <version> = labels_version(teacher fingerprint): a new teacher never overwrites older labels.
LABELS = "teacher_labels"


def labels_prefix(partition: str, version: str) -> str:
    return join_key(LABELS, partition, version) + "/"


def labels_key(partition: str, version: str, shard_key: str) -> str:
    """Labels Parquet of one shard: the shard's path below its partition, ``.tar`` -> ``.parquet``."""
    shards_prefix = join_key(SHARDS, partition) + "/"
    if not shard_key.startswith(shards_prefix) or not shard_key.endswith(".tar"):
        raise ValueError(f"{shard_key!r} is not a shard of partition {partition!r}")
    rel = shard_key[len(shards_prefix) : -len(".tar")]
    return join_key(LABELS, partition, version, rel + ".parquet")


def labels_summary_key(partition: str, version: str) -> str:
    return join_key(LABELS, partition, version, "_SUMMARY.json")


def labels_current_key(partition: str) -> str:
    return join_key(LABELS, partition, "current.json")


def read_current_labels(lake: Storage, partition: str) -> dict[str, Any] | None:
    """The partition's ``current.json`` (``version``, ``fingerprint``, ``teacher``, ``shards``...) or None."""
    key = labels_current_key(partition)
    if not lake.exists(key):
        return None
    return json.loads(lake.read_bytes(key))


def current_labels_keys(lake: Storage, partition: str) -> list[str]:
    """Labels Parquet keys of the partition's current version (empty when it has none)."""
    cur = read_current_labels(lake, partition)
    if cur is None:
        return []
    prefix = labels_prefix(partition, cur["version"])
    return sorted(o.key for o in lake.iter_objects(prefix) if o.key.endswith(".parquet"))


def _labels_resolver(lake: Storage, partition: str | None) -> list[str]:
    if partition is not None:
        return current_labels_keys(lake, partition)
    parts = [p.rstrip("/").rsplit("/", 1)[-1] for p in lake.list_prefixes(LABELS + "/")]
    return [k for p in sorted(parts) for k in current_labels_keys(lake, p)]


register_table("labels", _labels_resolver)
