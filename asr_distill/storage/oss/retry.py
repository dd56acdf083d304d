"""Which OSS failures are worth another attempt, what each becomes, and how long to wait in between."""

from __future__ import annotations

import http.client
import random
import socket
from dataclasses import dataclass

import oss2.exceptions as oss_exc
import requests
import urllib3.exceptions

from asr_distill import settings
from asr_distill.storage.base import ObjectNotFoundError, StorageAccessDeniedError, StorageError
from asr_distill.storage.oss.errors import BucketNotFoundError, StorageIntegrityError

# Errors of the HTTP stack that mean "the connection broke": always worth another attempt.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and "equal jitter" (half fixed, half random)."""

    max_attempts: int = 6
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return cap / 2 + rng.uniform(0, cap / 2)


def short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:300]}"


def translate(
    exc: BaseException, op: str, where: str, *, endpoint: str, bucket_name: str
) -> tuple[bool, BaseException]:
    """(retryable, exception to raise) for a failure of ``op`` on ``where`` (bucket and key, for messages)."""
    if isinstance(exc, StorageIntegrityError):
        return exc.retryable, exc
    if isinstance(exc, StorageError):
        return False, exc
    if isinstance(exc, oss_exc.InconsistentError):
        return True, StorageIntegrityError(
            f"{op} {where}: CRC64 mismatch between client and OSS ({exc.body})"
        )
    if isinstance(exc, oss_exc.RequestError):
        return True, StorageError(
            f"{op} {where}: network error talking to {endpoint}: {short(exc.exception)}"
        )
    if isinstance(exc, TRANSPORT_ERRORS):
        return True, StorageError(f"{op} {where}: network error talking to {endpoint}: {short(exc)}")
    if isinstance(exc, oss_exc.ClientError):
        return False, StorageError(f"{op} {where}: {exc.body}")
    if isinstance(exc, oss_exc.OssError):
        status, code = exc.status, exc.code or ""
        detail = (
            f"HTTP {status} {code or '(no code)'}: {exc.message or ''} [request id {exc.request_id or '-'}]"
        )
        if status == 403:
            hint = ""
            if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidSecurityToken"):
                hint = (
                    f" (check {settings.OSS_ACCESS_KEY_ID.name}/{settings.OSS_ACCESS_KEY_SECRET.name}"
                    f"/{settings.OSS_SECURITY_TOKEN.name})"
                )
            elif code == "RequestTimeTooSkewed":
                hint = " (the local clock is off by more than 15 minutes)"
            return False, StorageAccessDeniedError(f"OSS refused {op} on {where}: {detail}{hint}")
        if status == 404 and code == "NoSuchBucket":
            return False, BucketNotFoundError(
                f"{op} {where}: OSS bucket {bucket_name!r} does not exist at {endpoint}: {detail}"
            )
        if status == 404 and code in ("NoSuchKey", ""):
            return False, ObjectNotFoundError(f"{op} {where}: no such object ({detail})")
        if status in (429,) or status >= 500:
            return True, StorageError(f"{op} {where}: OSS is unavailable: {detail}")
        if status == 400 and code in ("InvalidDigest", "BadDigest"):
            return True, StorageIntegrityError(f"{op} {where}: the upload was corrupted in transit: {detail}")
        return False, StorageError(f"{op} {where}: {detail}")
    return False, exc
