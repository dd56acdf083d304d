"""Lake layout: where each asset writes, and how checks find an asset's tables.

Every derived artefact lives in the lake store under ``<asset>/<partition>/...``. Stage cores
get keys from here so the layout is defined once. Declarative checks resolve a *table name*
to the Parquet objects that hold it for a partition through :func:`table_keys`.
"""

from __future__ import annotations

from collections.abc import Callable

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
