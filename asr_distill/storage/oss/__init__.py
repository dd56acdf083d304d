"""Alibaba Cloud OSS backend (``oss://bucket/prefix``) on the official ``oss2`` SDK.

What it guarantees on top of :class:`~asr_distill.storage.base.Storage`:

* listing through ListObjectsV2 pages (continuation tokens), streamed and checked to be sorted;
* reads verify CRC64 (computed here, incrementally, as bytes arrive) when an object is read whole;
  streams resume after a
  dropped connection with a ranged GET pinned to the object's ETag (``If-Match``) and are seekable;
* writes are atomic: one PUT below ``multipart_threshold``, else a multipart upload that is
  completed only when every part is in (aborted on failure); ``Content-MD5`` and CRC64 are checked,
  and an object the server stored with a wrong CRC is removed again;
* bounded retries with exponential backoff and jitter on 5xx/429, timeouts, resets and integrity
  failures; 403 -> :class:`StorageAccessDeniedError`, missing key -> :class:`ObjectNotFoundError`,
  missing bucket -> :class:`BucketNotFoundError`, at once; every message names bucket and key;
* credentials live only inside the oss2 auth object: never in ``repr``, ``url()``, messages or
  logs (oss2's own debug logs are filtered for the STS token and signatures);
* one instance is safe to share between threads (one pooled HTTP session, kept-alive connections).

Per-request client cost is kept low (it bounds small-object throughput): oss2's own CRC64 (a pure
Python table built for every response) is replaced by one table-driven C CRC (crcmod's extension);
requests' per-request environment scan (proxies, ``.netrc``, CA bundle) is done once at construction;
response bodies are read to the end so that connections go back to the pool instead of being closed.

Modules: :mod:`.client` (``OSSStorage``), :mod:`.reader` (resumable reads), :mod:`.crc64` (CRC-64 and
its combination), :mod:`.retry` (retry policy, error translation), :mod:`.redact` (log redaction),
:mod:`.credentials` (the one rule for endpoint, region and credentials), :mod:`.uri` (``oss://`` URIs).
The package is imported only when an ``oss://`` store is opened, so local runs never import oss2.
"""

from __future__ import annotations

from typing import Any

from asr_distill.storage import register_backend
from asr_distill.storage.oss.client import OSSStorage
from asr_distill.storage.oss.crc64 import CRC64_IN_C, crc64
from asr_distill.storage.oss.credentials import resolve_options
from asr_distill.storage.oss.errors import BucketNotFoundError, StorageIntegrityError
from asr_distill.storage.oss.retry import RetryPolicy
from asr_distill.storage.oss.uri import parse_oss_uri, region_from_endpoint

__all__ = [
    "CRC64_IN_C",
    "BucketNotFoundError",
    "OSSStorage",
    "RetryPolicy",
    "StorageIntegrityError",
    "crc64",
    "parse_oss_uri",
    "region_from_endpoint",
    "resolve_options",
]


def _from_uri(uri: str, **options: Any) -> OSSStorage:
    """Factory for :func:`~asr_distill.storage.open_storage`; settings completed by the credential rule.

    See :func:`~asr_distill.storage.oss.credentials.resolve_options`.
    """
    return OSSStorage(uri, **resolve_options(options))


register_backend("oss", _from_uri)
