"""OSS-specific storage errors."""

from __future__ import annotations

from asr_distill.storage.base import StorageError


class BucketNotFoundError(StorageError):
    """The OSS bucket does not exist (at this endpoint)."""


class StorageIntegrityError(StorageError):
    """Data did not survive the trip: CRC64 or Content-MD5 mismatch."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class StoredCorruptError(StorageIntegrityError):
    """OSS reports a CRC64 for a stored object that differs from the bytes sent."""
