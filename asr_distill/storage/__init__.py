"""Object storage: one interface, pluggable backends chosen by URI scheme."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from asr_distill.storage.base import (
    InvalidKeyError,
    ObjectChangedError,
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageAccessDeniedError,
    StorageError,
    join_key,
    validate_key,
    validate_prefix,
)
from asr_distill.storage.local import LocalStorage

__all__ = [
    "InvalidKeyError",
    "LocalStorage",
    "ObjectChangedError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "Storage",
    "StorageAccessDeniedError",
    "StorageError",
    "join_key",
    "open_storage",
    "register_backend",
    "validate_key",
    "validate_prefix",
]

# scheme -> factory(uri, **options). Backends with heavy imports register lazily.
_BACKENDS: dict[str, Callable[..., Storage]] = {}


def register_backend(scheme: str, factory: Callable[..., Storage]) -> None:
    _BACKENDS[scheme] = factory


def open_storage(uri: str, **options: Any) -> Storage:
    """Open a store from a URI: a local path, ``file:///path`` or ``<scheme>://...``.

    ``options`` are passed to remote backends (credentials, endpoint, ...).
    """
    if not uri:
        raise StorageError("empty storage URI")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return LocalStorage(os.path.expanduser(uri))
    if scheme == "file":
        return LocalStorage(rest)
    if scheme not in _BACKENDS and scheme == "oss":
        # Imported lazily so the local default pays nothing for oss2.
        import asr_distill.storage.oss  # noqa: F401
    try:
        factory = _BACKENDS[scheme]
    except KeyError:
        raise StorageError(f"unsupported storage URI scheme {scheme!r} in {uri!r}") from None
    return factory(uri, **options)
