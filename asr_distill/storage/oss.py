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
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import logging
import math
import os
import random
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import crcmod
import oss2
import oss2.exceptions as oss_exc
import requests
import requests.utils
import urllib3.exceptions
from oss2.models import PartInfo

from asr_distill.storage import register_backend
from asr_distill.storage.base import (
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageAccessDeniedError,
    StorageError,
    validate_key,
    validate_prefix,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1 << 20
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 100 * 1024  # OSS's minimum for every part but the last
MAX_PARTS = 10_000
MAX_LIST_PAGE = 1000
_READ_CHUNK = 1 * MiB

ENV_ACCESS_KEY_ID = "OSS_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "OSS_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "OSS_SECURITY_TOKEN"
ENV_ENDPOINT = "OSS_ENDPOINT"
ENV_REGION = "OSS_REGION"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_ENDPOINT_REGION_RE = re.compile(r"^(?:https?://)?oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com(?::\d+)?/?$")

# Errors of the HTTP stack that mean "the connection broke": always worth another attempt.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)


class BucketNotFoundError(StorageError):
    """The OSS bucket does not exist (at this endpoint)."""


class StorageIntegrityError(StorageError):
    """Data did not survive the trip: CRC64 or Content-MD5 mismatch."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class _StoredCorruptError(StorageIntegrityError):
    """OSS reports a CRC64 for a stored object that differs from the bytes sent."""


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


# -- log redaction -----------------------------------------------------------------------------
_SENSITIVE = (
    # header / dict / canonical-request forms: 'authorization': '...', x-oss-security-token:...
    re.compile(
        r"""(?P<k>['"]?(?:authorization|x-oss-security-token|security-token)['"]?\s*[:=]\s*['"]?)"""
        r"""(?P<v>[^'"\n,&}]+)""",
        re.IGNORECASE,
    ),
    # signature parameters (Authorization header fields, signed URLs)
    re.compile(r"""(?P<k>\b(?:Signature|x-oss-signature|OSSAccessKeyId)=)(?P<v>[^'"\s,&]+)"""),
)
_REDACT_VALUES: set[str] = set()
_REDACT_LOCK = threading.Lock()
_OSS2_LOGGERS = (
    "oss2",
    "oss2.api",
    "oss2.auth",
    "oss2.http",
    "oss2.models",
    "oss2.utils",
    "oss2.iterators",
    "oss2.resumable",
    "oss2.xml_utils",
    "oss2.credentials",
    "oss2.crypto",
    "oss2.crypto_bucket",
    "oss2.select_response",
    "oss2.task_queue",
)


class _RedactCredentials(logging.Filter):
    """Scrubs signatures, STS tokens and registered secrets out of oss2's (debug) log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        clean = message
        for pattern in _SENSITIVE:
            clean = pattern.sub(lambda m: m.group("k") + "***", clean)
        for value in tuple(_REDACT_VALUES):
            if value in clean:
                clean = clean.replace(value, "***")
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = _RedactCredentials()
for _name in _OSS2_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


def _register_secret(*values: str | None) -> None:
    with _REDACT_LOCK:
        _REDACT_VALUES.update(v for v in values if v and len(v) >= 4)


# -- helpers -----------------------------------------------------------------------------------
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


def _md5_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {text[:300]}"


# -- CRC-64/XZ (ECMA-182 reflected), as in ``x-oss-hash-crc64ecma`` ----------------------------
# One table, built once; crcmod runs it in C when its extension is built (~0.3-1 GB/s), in pure
# Python otherwise (orders of magnitude slower: correct, but a warning is logged once).
_CRC64_FUN = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
# (``crcmod.crcmod`` is shadowed by a re-exported name: look the implementation module up.)
CRC64_IN_C: bool = bool(getattr(sys.modules.get("crcmod.crcmod"), "_usingExtension", False))
_CRC_WARNED = False


def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-64/XZ of ``data``; pass the CRC of the preceding bytes as ``crc`` to continue one."""
    return _CRC64_FUN(data, crc)


def _warn_if_slow_crc() -> None:
    global _CRC_WARNED
    if not CRC64_IN_C and not _CRC_WARNED:
        _CRC_WARNED = True
        logger.warning(
            "crcmod's C extension is not built: CRC64 checks of OSS transfers run in pure Python (slow); "
            "reinstall crcmod with a C compiler available"
        )


# -- CRC-64/XZ combination (zlib's crc32_combine method, 64-bit) --------------------------------
# oss2's combine is pure-Python GF(2) matrix algebra rebuilt per call (~40 ms for a 16 MiB part);
# with the operators for 2**k zero bytes computed once, a combination costs well under 1 ms.
_CRC64_POLY_REFLECTED = 0xC96C5795D7870F42
_ZERO_BYTE_OPERATORS: list[list[int]] = []
_ZERO_OPERATORS_LOCK = threading.Lock()


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _zero_byte_operators() -> list[list[int]]:
    with _ZERO_OPERATORS_LOCK:
        if not _ZERO_BYTE_OPERATORS:
            op = [_CRC64_POLY_REFLECTED] + [1 << (n - 1) for n in range(1, 64)]  # one zero bit
            for _ in range(3):  # -> one zero byte
                op = [_gf2_times(op, op[n]) for n in range(64)]
            for _ in range(64):  # 2**k zero bytes, k = 0..63
                _ZERO_BYTE_OPERATORS.append(op)
                op = [_gf2_times(op, op[n]) for n in range(64)]
        return _ZERO_BYTE_OPERATORS


def crc64_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-64/XZ (as in ``x-oss-hash-crc64ecma``) of ``a + b`` from ``crc(a)``, ``crc(b)``, ``len(b)``."""
    if len2 <= 0:
        return crc1
    ops = _zero_byte_operators()
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(ops[k], crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2


class OSSStorage(Storage):
    """Objects under ``oss://bucket/prefix``; keys are relative to the prefix."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        security_token: str | None = None,
        region: str | None = None,
        signature_version: str = "v4",
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        upload_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        pool_size: int | None = None,
        list_page_size: int = MAX_LIST_PAGE,
        content_md5: bool = True,
        app_name: str = "asr-distill",
    ) -> None:
        self.bucket_name, self.root = parse_oss_uri(uri)
        self.uri = f"oss://{self.bucket_name}/{self.root}" if self.root else f"oss://{self.bucket_name}"
        if not endpoint:
            raise StorageError(f"{self.uri}: no OSS endpoint (set {ENV_ENDPOINT})")
        if not access_key_id or not access_key_secret:
            raise StorageError(
                f"{self.uri}: no OSS credentials (set {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET})"
            )
        signature_version = signature_version.lower()
        if signature_version not in ("v1", "v4"):
            raise StorageError(
                f"{self.uri}: signature_version must be 'v1' or 'v4', not {signature_version!r}"
            )
        region = region or region_from_endpoint(endpoint)
        if signature_version == "v4" and not region:
            raise StorageError(
                f"{self.uri}: V4 signing needs the bucket's region (set {ENV_REGION}, e.g. cn-hangzhou, "
                "or use signature_version='v1')"
            )
        if part_size < MIN_PART_SIZE:
            raise StorageError(f"{self.uri}: part_size must be >= {MIN_PART_SIZE} bytes (OSS minimum)")
        if multipart_threshold < 1:
            raise StorageError(f"{self.uri}: multipart_threshold must be positive")
        if not 1 <= list_page_size <= MAX_LIST_PAGE:
            raise StorageError(f"{self.uri}: list_page_size must be within 1..{MAX_LIST_PAGE}")
        self.endpoint = endpoint
        self.region = region
        self.signature_version = signature_version
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.upload_concurrency = max(1, upload_concurrency)
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        # Kept-alive connections: at least as many as the index's default probe threads (8 per
        # core), so that no thread's connection is discarded and reopened for want of a pool slot.
        self.pool_size = max(pool_size or max(16, 8 * (os.cpu_count() or 1)), self.upload_concurrency)
        self.list_page_size = list_page_size
        self.content_md5 = content_md5
        self.app_name = app_name
        # Credentials live in the oss2 auth object only (and in _credentials for pickling).
        self._credentials = (access_key_id, access_key_secret, security_token or "")
        _register_secret(access_key_secret, security_token)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._bucket = self._make_bucket()

    # -- construction ------------------------------------------------------------------------
    def _make_bucket(self) -> oss2.Bucket:
        provider = oss2.StaticCredentialsProvider(*self._credentials)
        auth = (
            oss2.ProviderAuthV4(provider) if self.signature_version == "v4" else oss2.ProviderAuth(provider)
        )
        session = oss2.Session(pool_size=self.pool_size)
        try:
            bucket = oss2.Bucket(
                auth,
                self.endpoint,
                self.bucket_name,
                session=session,
                connect_timeout=self.timeout_s,
                app_name=self.app_name,
                # CRC64 is computed and checked here (one C table instead of oss2's per-response
                # pure-Python one): see _ObjectReader, _put and _upload_part.
                enable_crc=False,
                region=self.region,
            )
        except oss_exc.OssError as exc:
            raise StorageError(
                f"{self.uri}: invalid OSS configuration (endpoint {self.endpoint!r}): {exc}"
            ) from None
        _configure_http(session.session, bucket)
        _warn_if_slow_crc()
        return bucket

    def __repr__(self) -> str:
        return (
            f"OSSStorage({self.uri!r}, endpoint={self.endpoint!r}, region={self.region!r}, "
            f"signature={self.signature_version})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_bucket", "_rng", "_rng_lock"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._bucket = self._make_bucket()

    # -- keys --------------------------------------------------------------------------------
    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.root}/{key}" if self.root else key

    def _full_prefix(self, prefix: str) -> str:
        validate_prefix(prefix)
        if not self.root:
            return prefix
        return f"{self.root}/{prefix}"

    def _relative(self, full: str) -> str:
        return full[len(self.root) + 1 :] if self.root else full

    def url(self, key: str = "") -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def local_path(self, key: str) -> None:
        validate_key(key)
        return None

    # -- errors and retries ------------------------------------------------------------------
    def _where(self, key: str | None) -> str:
        full = self._full_key(key) if key else (self.root + "/" if self.root else "")
        return f"oss://{self.bucket_name}/{full} (bucket {self.bucket_name!r}, key {full!r})"

    def _translate(self, exc: BaseException, op: str, key: str | None) -> tuple[bool, BaseException]:
        """(retryable, exception to raise) for a failure of ``op`` on ``key``."""
        where = self._where(key)
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
                f"{op} {where}: network error talking to {self.endpoint}: {_short(exc.exception)}"
            )
        if isinstance(exc, _TRANSPORT_ERRORS):
            return True, StorageError(
                f"{op} {where}: network error talking to {self.endpoint}: {_short(exc)}"
            )
        if isinstance(exc, oss_exc.ClientError):
            return False, StorageError(f"{op} {where}: {exc.body}")
        if isinstance(exc, oss_exc.OssError):
            status, code = exc.status, exc.code or ""
            detail = f"HTTP {status} {code or '(no code)'}: {exc.message or ''} [request id {exc.request_id or '-'}]"
            if status == 403:
                hint = ""
                if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidSecurityToken"):
                    hint = f" (check {ENV_ACCESS_KEY_ID}/{ENV_ACCESS_KEY_SECRET}/{ENV_SECURITY_TOKEN})"
                elif code == "RequestTimeTooSkewed":
                    hint = " (the local clock is off by more than 15 minutes)"
                return False, StorageAccessDeniedError(f"OSS refused {op} on {where}: {detail}{hint}")
            if status == 404 and code == "NoSuchBucket":
                return False, BucketNotFoundError(
                    f"{op} {where}: OSS bucket {self.bucket_name!r} does not exist at {self.endpoint}: {detail}"
                )
            if status == 404 and code in ("NoSuchKey", ""):
                return False, ObjectNotFoundError(f"{op} {where}: no such object ({detail})")
            if status in (429,) or status >= 500:
                return True, StorageError(f"{op} {where}: OSS is unavailable: {detail}")
            if status == 400 and code in ("InvalidDigest", "BadDigest"):
                return True, StorageIntegrityError(
                    f"{op} {where}: the upload was corrupted in transit: {detail}"
                )
            return False, StorageError(f"{op} {where}: {detail}")
        return False, exc

    def _sleep_before_retry(self, op: str, key: str | None, attempt: int, reason: BaseException) -> None:
        with self._rng_lock:
            delay = self.retry.delay(attempt, self._rng)
        logger.warning(
            "OSS %s on %s failed (attempt %d/%d), retrying in %.2fs: %s",
            op,
            self.url(key or ""),
            attempt,
            self.retry.max_attempts,
            delay,
            reason,
        )
        time.sleep(delay)

    def _call(self, op: str, key: str | None, fn: Callable[[], T]) -> T:
        """Run ``fn`` with the retry policy; raise a translated :class:`StorageError` at the end."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                retryable, translated = self._translate(exc, op, key)
                if not retryable or attempt >= self.retry.max_attempts:
                    if translated is exc:
                        raise
                    if retryable:
                        translated.args = (f"{translated.args[0]} (gave up after {attempt} attempts)",)
                    raise translated from exc
                self._sleep_before_retry(op, key, attempt, translated)

    # -- listing -----------------------------------------------------------------------------
    def _pages(self, full_prefix: str, delimiter: str) -> Iterator[Any]:
        token = ""
        while True:
            current = token
            page = self._call(
                f"list (prefix {full_prefix!r})",
                None,
                lambda current=current: self._bucket.list_objects_v2(
                    prefix=full_prefix,
                    delimiter=delimiter,
                    continuation_token=current,
                    max_keys=self.list_page_size,
                ),
            )
            yield page
            if not page.is_truncated:
                return
            token = page.next_continuation_token or ""
            if not token or token == current:
                raise StorageError(
                    f"list {self._where(None)}: OSS returned a truncated page without a new token"
                )

    def iter_objects(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        full_prefix = self._full_prefix(prefix)
        previous = ""
        for page in self._pages(full_prefix, "" if recursive else "/"):
            for obj in page.object_list:
                if self.root and not obj.key.startswith(self.root + "/"):
                    continue
                key = self._relative(obj.key)
                try:
                    validate_key(key)
                except StorageError:
                    # "dir/" markers made by consoles, or names no backend can address.
                    logger.debug("skipping unaddressable OSS object %r in %s", obj.key, self.uri)
                    continue
                if key <= previous:
                    raise StorageError(
                        f"list {self._where(None)}: OSS listing is not sorted ({previous!r} >= {key!r})"
                    )
                previous = key
                yield ObjectInfo(
                    key=key, size=int(obj.size), etag=obj.etag or None, mtime=float(obj.last_modified)
                )

    def list_prefixes(self, prefix: str = "") -> Iterator[str]:
        full_prefix = self._full_prefix(prefix)
        for page in self._pages(full_prefix, "/"):
            for name in page.prefix_list:
                if self.root and not name.startswith(self.root + "/"):
                    continue
                yield self._relative(name)

    # -- metadata ----------------------------------------------------------------------------
    def stat(self, key: str) -> ObjectInfo:
        full = self._full_key(key)
        head = self._call("stat", key, lambda: self._bucket.head_object(full))
        mtime = float(head.last_modified) if head.last_modified is not None else None
        return ObjectInfo(key=key, size=int(head.content_length or 0), etag=head.etag or None, mtime=mtime)

    # -- reading -----------------------------------------------------------------------------
    def open_read(self, key: str) -> BinaryIO:
        reader = _ObjectReader(self, key)
        return io.BufferedReader(reader, buffer_size=_READ_CHUNK)  # type: ignore[return-value]

    def read_bytes(self, key: str) -> bytes:
        def once() -> bytes:
            with _ObjectReader(self, key) as reader:
                return reader.readall()

        return self._call("read", key, once)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        full = self._full_key(key)
        if start < 0 or length < 0:
            raise StorageError(f"invalid range start={start} length={length} for {self.url(key)}")
        if length == 0:
            self.stat(key)  # missing objects still fail, as for LocalStorage
            return b""

        def once() -> bytes:
            try:
                result = self._bucket.get_object(
                    full,
                    byte_range=(start, start + length - 1),
                    headers={"x-oss-range-behavior": "standard"},
                )
            except oss_exc.ServerError as exc:
                if exc.status == 416:
                    return b""  # start at or past the end
                raise
            with contextlib.closing(result):
                data = result.read()
            if result.status == 200:  # the server ignored the range
                return data[start : start + length]
            return data

        return self._call("read range", key, once)

    def read_many(self, keys: Iterable[str], *, max_workers: int = 8) -> Iterator[tuple[str, bytes]]:
        """``(key, bytes)`` for every key, in input order, reading up to ``max_workers`` at once."""
        max_workers = max(1, min(max_workers, self.pool_size))
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="oss-read") as pool:
            window: deque[tuple[str, Future[bytes]]] = deque()
            try:
                for key in keys:
                    window.append((key, pool.submit(self.read_bytes, key)))
                    if len(window) >= 2 * max_workers:
                        k, fut = window.popleft()
                        yield k, fut.result()
                while window:
                    k, fut = window.popleft()
                    yield k, fut.result()
            finally:
                for _, fut in window:
                    fut.cancel()

    # -- writing -----------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        full = self._full_key(key)
        view = memoryview(data).cast("B")
        if len(view) >= self.multipart_threshold:
            return self._multipart(key, full, len(view), lambda off, n: bytes(view[off : off + n]))
        return self._put(key, full, data if isinstance(data, bytes) else bytes(view))

    def write_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        full = self._full_key(key)
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size >= self.multipart_threshold:
                fd = fh.fileno()
                return self._multipart(key, full, size, lambda off, n: _pread_exact(fd, n, off))
            data = fh.read()
        return self._put(key, full, data)

    def _put(self, key: str, full: str, data: bytes) -> ObjectInfo:
        headers = {"Content-MD5": _md5_b64(data)} if self.content_md5 else {}
        sent_crc = crc64(data)

        def once() -> Any:
            result = self._bucket.put_object(full, data, headers=headers)
            if result.crc is not None and result.crc != sent_crc:
                raise _StoredCorruptError(
                    f"write {self._where(key)}: CRC64 mismatch between client and OSS "
                    f"(sent {sent_crc}, OSS stored {result.crc}) [request id {result.request_id or '-'}]"
                )
            return result

        try:
            result = self._call("write", key, once)
        except _StoredCorruptError:
            # OSS stored something other than what was sent: do not leave it under the key.
            self._remove_corrupt(key, full)
            raise
        return ObjectInfo(key=key, size=len(data), etag=result.etag or None, mtime=None)

    def _remove_corrupt(self, key: str, full: str) -> None:
        try:
            self._call("delete corrupt object", key, lambda: self._bucket.delete_object(full))
            logger.error("removed %s: OSS reported a CRC64 different from the data sent", self.url(key))
        except StorageError as exc:
            logger.error("could not remove corrupt object %s: %s", self.url(key), exc)

    def _part_size_for(self, size: int) -> int:
        return max(self.part_size, MIN_PART_SIZE, math.ceil(size / MAX_PARTS))

    def _multipart(
        self, key: str, full: str, size: int, read_part: Callable[[int, int], bytes]
    ) -> ObjectInfo:
        part_size = self._part_size_for(size)
        upload_id = self._call(
            "start multipart upload", key, lambda: self._bucket.init_multipart_upload(full).upload_id
        )
        logger.debug("multipart upload of %s: %d bytes in parts of %d", self.url(key), size, part_size)
        try:
            offsets = list(range(0, size, part_size))
            with ThreadPoolExecutor(
                max_workers=self.upload_concurrency, thread_name_prefix="oss-part"
            ) as pool:
                futures = [
                    pool.submit(
                        self._upload_part,
                        key,
                        full,
                        upload_id,
                        number,
                        off,
                        min(part_size, size - off),
                        read_part,
                    )
                    for number, off in enumerate(offsets, start=1)
                ]
                try:
                    done = [f.result() for f in futures]
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
            parts = [part for part, _ in done]
            crcs = [crc for _, crc in done]
            expected_crc: int | None = None
            if all(crc is not None for crc in crcs):
                expected_crc = 0
                for part, crc in zip(parts, crcs, strict=True):
                    expected_crc = crc64_combine(expected_crc, crc, part.size)
            etag, mtime = self._complete(key, full, upload_id, parts, size, expected_crc)
        except BaseException:
            self._abort(key, full, upload_id)
            raise
        return ObjectInfo(key=key, size=size, etag=etag, mtime=mtime)

    def _upload_part(
        self,
        key: str,
        full: str,
        upload_id: str,
        number: int,
        offset: int,
        length: int,
        read_part: Callable[[int, int], bytes],
    ) -> tuple[PartInfo, int | None]:
        data = read_part(offset, length)
        headers = {"Content-MD5": _md5_b64(data)} if self.content_md5 else {}
        sent_crc = crc64(data)

        def once() -> Any:
            result = self._bucket.upload_part(full, upload_id, number, data, headers=headers)
            if result.crc is not None and result.crc != sent_crc:
                raise StorageIntegrityError(
                    f"upload part {number} of {self._where(key)}: CRC64 mismatch between client and OSS "
                    f"(sent {sent_crc}, OSS stored {result.crc})"
                )
            return result

        result = self._call(f"upload part {number}", key, once)
        # part_crc stays out of PartInfo: oss2 would then combine CRCs with its slow code;
        # _complete() checks the assembled object's CRC against the parts' CRCs itself.
        return PartInfo(number, result.etag, size=len(data)), sent_crc

    def _complete(
        self, key: str, full: str, upload_id: str, parts: list[PartInfo], size: int, expected_crc: int | None
    ) -> tuple[str | None, float | None]:
        attempts = 0

        def once() -> tuple[str | None, float | None]:
            nonlocal attempts
            attempts += 1
            try:
                result = self._bucket.complete_multipart_upload(full, upload_id, parts)
            except oss_exc.NoSuchUpload:
                if attempts == 1:
                    raise
                # An earlier attempt may have completed the upload and lost its response.
                head = self._bucket.head_object(full)
                if expected_crc is None or head.server_crc != expected_crc or head.content_length != size:
                    raise
                return head.etag, float(head.last_modified) if head.last_modified else None
            if expected_crc is not None and result.crc is not None and result.crc != expected_crc:
                raise StorageIntegrityError(
                    f"complete multipart upload {self._where(key)}: CRC64 of the assembled object "
                    f"({result.crc}) differs from the parts sent ({expected_crc})",
                    retryable=False,
                )
            if result.etag:
                return result.etag, None
            head = self._bucket.head_object(full)
            return head.etag, float(head.last_modified) if head.last_modified else None

        try:
            return self._call("complete multipart upload", key, once)
        except StorageIntegrityError:
            self._remove_corrupt(key, full)
            raise

    def _abort(self, key: str, full: str, upload_id: str) -> None:
        try:
            self._call(
                "abort multipart upload", key, lambda: self._bucket.abort_multipart_upload(full, upload_id)
            )
        except StorageError as exc:
            if isinstance(exc.__cause__, oss_exc.NoSuchUpload):
                return  # already completed (and removed again) or aborted
            logger.warning("could not abort multipart upload %s of %s: %s", upload_id, self.url(key), exc)

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        with contextlib.suppress(ObjectNotFoundError):
            self._call("delete", key, lambda: self._bucket.delete_object(full))


def _configure_http(http: requests.Session, bucket: oss2.Bucket) -> None:
    """Resolve what requests would look up in the environment on every request, once.

    With ``trust_env`` on, each request scans ``os.environ`` for proxies, reads ``~/.netrc`` and looks
    up a CA bundle (~1 ms of CPU per request here). Proxies (honouring ``NO_PROXY``) and the CA bundle
    are taken from the environment now, for this endpoint; ``.netrc`` credentials never apply to OSS
    (requests would put them in the ``Authorization`` header oss2 signs).
    """
    proxies = requests.utils.get_environ_proxies(bucket.endpoint)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    http.trust_env = False
    if bundle:
        http.verify = bundle
    if proxies:
        bucket.proxies = dict(proxies)


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    chunks = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            raise StorageError(f"file shrank while uploading (short read at offset {offset})")
        chunks.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return b"".join(chunks)


class _ObjectReader(io.RawIOBase):
    """A seekable, resuming reader over one object; verifies CRC64 after a whole sequential read."""

    def __init__(self, store: OSSStorage, key: str) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._full = store._full_key(key)
        self._pos = 0
        self._result: Any = None
        self._etag: str | None = None
        self._size = 0
        self._server_crc: int | None = None
        # CRC of bytes [0, _crc_upto) delivered so far, in order (-1: the check is done or abandoned).
        self._crc = 0
        self._crc_upto = 0
        self._open_at(0)

    # -- connection --------------------------------------------------------------------------
    def _open_at(self, pos: int) -> None:
        self._drop()
        headers: dict[str, str] = {}
        if self._etag:
            headers["If-Match"] = f'"{self._etag}"'
        byte_range = None
        if pos > 0:
            byte_range = (pos, None)
            headers["x-oss-range-behavior"] = "standard"
        store = self._store

        def once() -> Any:
            try:
                return store._bucket.get_object(self._full, byte_range=byte_range, headers=headers)
            except oss_exc.PreconditionFailed:
                raise StorageError(
                    f"read {store._where(self._key)}: the object changed while it was being read"
                ) from None

        result = store._call("read", self._key, once)
        if self._etag is None:
            self._etag = result.etag
            self._size = int(result.content_length or 0)
            self._server_crc = result.server_crc
        elif byte_range is not None and result.status == 200:
            result.close()
            raise StorageError(f"read {store._where(self._key)}: OSS ignored the range request on resume")
        self._result = result

    def _drop(self) -> None:
        if self._result is not None:
            # A response read to its end has already given its connection back to the pool
            # (urllib3 releases it at EOF); closing one read part-way closes its connection.
            with contextlib.suppress(Exception):
                self._result.close()
            self._result = None

    # -- RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._pos:
            self._drop()
            self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if len(view) == 0:
            return 0
        if self._pos >= self._size:
            self._finish()
            return 0
        store = self._store
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._result is None:
                    self._open_at(self._pos)
                chunk = self._result.read(min(len(view), _READ_CHUNK))
                if not chunk:
                    raise http.client.IncompleteRead(b"", self._size - self._pos)
                break
            except Exception as exc:
                retryable, translated = store._translate(exc, "read", self._key)
                if not retryable or attempt >= store.retry.max_attempts:
                    if translated is exc:
                        raise
                    raise translated from exc
                self._drop()
                store._sleep_before_retry("read (resume)", self._key, attempt, translated)
        n = len(chunk)
        view[:n] = chunk
        if self._pos == self._crc_upto:
            self._crc = crc64(chunk, self._crc)
            self._crc_upto += n
        self._pos += n
        if self._pos >= self._size:
            self._finish()
        return n

    def readall(self) -> bytes:
        out = bytearray(max(0, self._size - self._pos))
        view = memoryview(out)
        got = 0
        while got < len(out):
            n = self.readinto(view[got:])
            if not n:
                break
            got += n
        if self._pos >= self._size:
            self._finish()
        return bytes(view[:got])

    def _finish(self) -> None:
        """At the end of the object: check the CRC if every byte was read in order."""
        self._drop()
        if self._crc_upto != self._size or self._server_crc is None:
            return
        if self._crc != self._server_crc:
            self._crc_upto = -1  # report once
            raise StorageIntegrityError(
                f"read {self._store._where(self._key)}: CRC64 mismatch "
                f"(computed {self._crc}, OSS says {self._server_crc})"
            )

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                if self._result is not None:
                    self._result.close()
            self._result = None
        super().close()


def _from_uri(uri: str, **options: Any) -> OSSStorage:
    """Factory for :func:`~asr_distill.storage.open_storage`; missing settings come from ``OSS_*``.

    The key id, secret and STS token are taken as a group: explicit credentials never pick up a
    token from the environment.
    """
    env = os.environ
    for name, var in (("endpoint", ENV_ENDPOINT), ("region", ENV_REGION)):
        if not options.get(name):
            options[name] = env.get(var) or None
    if not options.get("access_key_id") and not options.get("access_key_secret"):
        options["access_key_id"] = env.get(ENV_ACCESS_KEY_ID)
        options["access_key_secret"] = env.get(ENV_ACCESS_KEY_SECRET)
        if not options.get("security_token"):
            options["security_token"] = env.get(ENV_SECURITY_TOKEN) or None
    return OSSStorage(uri, **options)


register_backend("oss", _from_uri)
