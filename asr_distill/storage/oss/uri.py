"""``oss://bucket/prefix`` URIs and endpoints."""

from __future__ import annotations

import re

from asr_distill.storage.base import StorageError, validate_key

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_ENDPOINT_REGION_RE = re.compile(r"^(?:https?://)?oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com(?::\d+)?/?$")


def parse_oss_uri(uri: str) -> tuple[str, str]:
    """``oss://bucket/a/b/`` -> ``("bucket", "a/b")``; rejects credentials and bad names."""
    scheme, sep, rest = uri.partition("://")
    if scheme != "oss" or not sep:
        raise StorageError(f"not an OSS URI: {uri!r} (expected oss://bucket/prefix)")
    netloc, _, path = rest.partition("/")
    if "@" in netloc or ":" in netloc:
        # Never echo the URI: it may hold a secret.
        raise StorageError(
            "OSS URIs must not carry credentials or ports (oss://bucket/prefix); use OSS_* variables"
        )
    if not _BUCKET_RE.match(netloc):
        raise StorageError(f"invalid OSS bucket name {netloc!r} in {uri!r}")
    root = path.strip("/")
    if root:
        validate_key(root)
    return netloc, root


def region_from_endpoint(endpoint: str) -> str | None:
    """``oss-cn-hangzhou(-internal).aliyuncs.com`` -> ``cn-hangzhou``; None if it cannot be told."""
    m = _ENDPOINT_REGION_RE.match(endpoint.strip())
    return m.group(1) if m else None
