"""Copy a local tree (any :class:`~asr_distill.storage.Storage`) into a bucket of the OSS test server."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asr_distill.storage import Storage, validate_prefix


def upload_tree(
    server: Any,
    bucket: str,
    source: Storage,
    *,
    prefixes: Iterable[str] | None = None,
    root: str = "",
    store: Storage | None = None,
) -> dict[str, int]:
    """Copy every object of ``source`` (or only those under ``prefixes``) to ``oss://bucket/root/...``.

    Objects go straight into the server's backend (no HTTP, no faults, no auth), unless ``store``
    is given: then each object is written through it (the real client path). Returns ``{key: size}``
    of what was copied (keys relative to ``root``). Object names keep the source's keys, so a run
    over the copy sees the same keys as a run over the source.
    """
    wanted = [""] if prefixes is None else [p if p.endswith("/") else p + "/" for p in prefixes]
    for prefix in wanted:
        validate_prefix(prefix)
    base = root.strip("/")
    copied: dict[str, int] = {}
    batch: dict[str, bytes] = {}
    for prefix in wanted:
        for obj in source.iter_objects(prefix):
            data = source.read_bytes(obj.key)
            copied[obj.key] = len(data)
            if store is not None:
                store.write_bytes(obj.key, data)
                continue
            batch[f"{base}/{obj.key}" if base else obj.key] = data
            if len(batch) >= 64:
                server.seed_objects(bucket, batch)
                batch = {}
    if batch:
        server.seed_objects(bucket, batch)
    if not copied:
        raise ValueError(f"nothing to upload from {source.url()} under {wanted}")
    return copied
