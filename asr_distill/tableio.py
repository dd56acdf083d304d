"""Table and record I/O through a :class:`~asr_distill.storage.Storage`: the one place that reads and
writes Parquet tables and JSON records in a store, and hashes objects.

* Parquet: :func:`read_table` (optionally some columns), :func:`read_table_bytes` (the table and the
  object's BLAKE3 checksum, read once), :func:`read_parquet_metadata` (key-value metadata of the footer only),
  :func:`write_table` (atomic: staged locally, then published).
* JSON records: :func:`read_json` (None when absent), :func:`write_json` (canonical: sorted keys, one
  space of indent; every record of the lake is written this way).

Checksums and content hashes have their own owner: :mod:`asr_distill.hashing` (BLAKE3).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from asr_distill.hashing import bytes_hex
from asr_distill.storage import ObjectNotFoundError, Storage, StorageError


# -- Parquet ----------------------------------------------------------------------------------------
def read_table(store: Storage, key: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet object of ``store`` as a table (:class:`ObjectNotFoundError` when it is missing)."""
    try:
        with store.local_copy(key, suffix=".parquet") as path:
            return pq.read_table(path, columns=columns)
    except ObjectNotFoundError:
        raise
    except OSError as exc:  # pragma: no cover
        raise StorageError(f"cannot read {store.url(key)}: {exc}") from exc


def read_table_bytes(store: Storage, key: str, columns: list[str] | None = None) -> tuple[pa.Table, str]:
    """(table, BLAKE3 of the object's bytes), the object read once. Errors as :func:`read_table`;
    ``pa.ArrowInvalid`` / ``KeyError`` for a file that is not Parquet or lacks a column."""
    data = store.read_bytes(key)
    return pq.read_table(io.BytesIO(data), columns=columns), bytes_hex(data)


def read_parquet_metadata(store: Storage, key: str) -> dict[bytes, bytes] | None:
    """The key-value metadata of a Parquet object's schema, or None when there is no readable file."""
    if not store.exists(key):
        return None
    try:
        return dict(pq.read_schema(pa.BufferReader(store.read_bytes(key))).metadata or {})
    except (pa.ArrowException, OSError):
        return None


def write_table(store: Storage, key: str, table: pa.Table, *, compression: str = "zstd") -> None:
    """Write ``table`` to ``key`` atomically (readers see the old object or the whole new one)."""
    with store.staged_file(key, suffix=".parquet") as path:
        pq.write_table(table, path, compression=compression)


# -- JSON records -----------------------------------------------------------------------------------
def json_bytes(record: Any) -> bytes:
    """The canonical bytes of a JSON record of the lake (sorted keys, one space of indent)."""
    return json.dumps(record, sort_keys=True, indent=1).encode()


def read_json(store: Storage, key: str) -> Any | None:
    """The JSON record at ``key``, or None when there is none."""
    if not store.exists(key):
        return None
    return json.loads(store.read_bytes(key))


def write_json(store: Storage, key: str, record: Any) -> bytes:
    """Write ``record`` as :func:`json_bytes` (atomic); returns the bytes written."""
    blob = json_bytes(record)
    store.write_bytes(key, blob)
    return blob
