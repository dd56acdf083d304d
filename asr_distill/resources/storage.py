"""Dagster resource wrapping a :class:`~asr_distill.storage.Storage` backend.

Local paths need nothing but ``uri``. For ``oss://bucket/prefix`` use :func:`make_storage_resource`,
which wires the credentials as ``dg.EnvVar``: Dagster resolves them when the resource is
initialised for a run (not when definitions load), shows only the variable names in the UI and
run config, and fails that run with the variable's name if it is unset. Jobs that touch only
local stores never initialise an OSS resource, so local users never need the ``OSS_*`` variables.

Which endpoint, region, key pair and STS token a store uses is decided by one rule, shared with
``open_storage("oss://…")`` in Ray actors: :func:`asr_distill.storage.oss.credentials.resolve_options`.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from asr_distill import settings
from asr_distill.storage import Storage, open_storage


def is_oss_uri(uri: str) -> bool:
    return uri.startswith("oss://")


class StorageResource(dg.ConfigurableResource):
    """An object store addressed by URI: a local directory or ``oss://bucket/prefix``.

    The OSS fields are ignored for local paths. Unset OSS fields are completed at initialisation by
    the credential rule of :mod:`asr_distill.storage.oss.credentials` (``region`` and
    ``security_token`` are optional, so they cannot be a required ``EnvVar``; the environment's STS
    token is used only with the environment's key pair).
    """

    uri: str
    endpoint: str | None = Field(default=None, description="OSS endpoint, e.g. oss-cn-hangzhou.aliyuncs.com")
    region: str | None = Field(default=None, description="OSS region for V4 signing, e.g. cn-hangzhou")
    access_key_id: str | None = Field(default=None, description="OSS AccessKey id (use an EnvVar)")
    access_key_secret: str | None = Field(
        default=None, repr=False, description="OSS AccessKey secret (EnvVar)"
    )
    security_token: str | None = Field(default=None, repr=False, description="STS token (EnvVar), optional")
    signature_version: str = Field(default="v4", description="'v4' (default) or 'v1'")
    multipart_threshold_mb: int = Field(default=64, description="uploads at or above this size use multipart")
    part_size_mb: int = Field(default=16, description="multipart part size")
    max_attempts: int = Field(
        default=6, description="attempts per request (retries on 429/5xx/timeouts/resets, with backoff)"
    )
    io_concurrency: int = Field(
        default=64,
        description=(
            "requests a stage keeps in flight on this store (1..256): index probe threads, objects the "
            "clean and shards stages read ahead; lower it if the bucket throttles (429/503)"
        ),
    )

    _store: Storage | None = PrivateAttr(default=None)

    def backend_options(self) -> dict[str, Any]:
        """Options handed to remote backends (credentials, endpoint); none for local paths."""
        if not is_oss_uri(self.uri):
            return {}
        from asr_distill.storage.oss import RetryPolicy, resolve_options

        given = {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
            "security_token": self.security_token,
        }
        return {
            **resolve_options(given),
            "signature_version": self.signature_version,
            "multipart_threshold": self.multipart_threshold_mb * (1 << 20),
            "part_size": self.part_size_mb * (1 << 20),
            "retry": RetryPolicy(max_attempts=self.max_attempts),
            "io_concurrency": self.io_concurrency,
        }

    def get(self) -> Storage:
        if self._store is None:
            self._store = open_storage(self.uri, **self.backend_options())
        return self._store


def make_storage_resource(uri: str) -> StorageResource:
    """The resource for ``uri``: plain for local paths, credentials from ``OSS_*`` EnvVars for OSS."""
    if not is_oss_uri(uri):
        return StorageResource(uri=uri)
    from asr_distill.storage.oss import parse_oss_uri

    parse_oss_uri(uri)  # fail at definitions load on a malformed URI, not in the middle of a run
    return StorageResource(
        uri=uri,
        endpoint=dg.EnvVar(settings.OSS_ENDPOINT.name),
        access_key_id=dg.EnvVar(settings.OSS_ACCESS_KEY_ID.name),
        access_key_secret=dg.EnvVar(settings.OSS_ACCESS_KEY_SECRET.name),
    )
