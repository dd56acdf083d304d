"""Dagster resource wrapping a :class:`~asr_distill.storage.Storage` backend.

Local paths need nothing but ``uri``. For ``oss://bucket/prefix`` use :func:`make_storage_resource`,
which wires the credentials as ``dg.EnvVar``: Dagster resolves them when the resource is
initialised for a run (not when definitions load), shows only the variable names in the UI and
run config, and fails that run with the variable's name if it is unset. Jobs that touch only
local stores never initialise an OSS resource, so local users never need the ``OSS_*`` variables.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from asr_distill.storage import Storage, open_storage

ENV_ACCESS_KEY_ID = "OSS_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "OSS_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "OSS_SECURITY_TOKEN"
ENV_ENDPOINT = "OSS_ENDPOINT"
ENV_REGION = "OSS_REGION"


def is_oss_uri(uri: str) -> bool:
    return uri.startswith("oss://")


class StorageResource(dg.ConfigurableResource):
    """An object store addressed by URI: a local directory or ``oss://bucket/prefix``.

    The OSS fields are ignored for local paths. ``region`` and ``security_token`` fall back to
    ``OSS_REGION`` / ``OSS_SECURITY_TOKEN`` read at initialisation when left unset (both are
    optional, so they cannot be a required ``EnvVar``).
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
    max_attempts: int = Field(default=6, description="attempts per request (retries on 5xx/timeouts/resets)")

    _store: Storage | None = PrivateAttr(default=None)

    def backend_options(self) -> dict[str, Any]:
        """Options handed to remote backends (credentials, endpoint); none for local paths."""
        if not is_oss_uri(self.uri):
            return {}
        from asr_distill.storage.oss import RetryPolicy

        return {
            "endpoint": self.endpoint or os.environ.get(ENV_ENDPOINT),
            "region": self.region or os.environ.get(ENV_REGION) or None,
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
            # The STS token from the environment belongs to the environment's key pair only.
            "security_token": self.security_token
            or (
                os.environ.get(ENV_SECURITY_TOKEN)
                if self.access_key_id == os.environ.get(ENV_ACCESS_KEY_ID)
                else None
            )
            or None,
            "signature_version": self.signature_version,
            "multipart_threshold": self.multipart_threshold_mb * (1 << 20),
            "part_size": self.part_size_mb * (1 << 20),
            "retry": RetryPolicy(max_attempts=self.max_attempts),
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
        endpoint=dg.EnvVar(ENV_ENDPOINT),
        access_key_id=dg.EnvVar(ENV_ACCESS_KEY_ID),
        access_key_secret=dg.EnvVar(ENV_ACCESS_KEY_SECRET),
    )
