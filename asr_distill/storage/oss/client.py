"""The OSS client: :class:`OSSStorage`, the :class:`~asr_distill.storage.base.Storage` of ``oss://bucket/prefix``.

Listing, stat, reads (whole, ranged, many at once; streams in :mod:`.reader`), atomic writes (one PUT or a
multipart upload), delete, each request under the retry policy of :mod:`.retry`. See the package
docstring for what it guarantees.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import math
import os
import random
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import oss2
import oss2.exceptions as oss_exc
import requests
import requests.utils
from oss2.models import PartInfo

from asr_distill import settings
from asr_distill.storage.base import (
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageError,
    key_problem,
    validate_key,
    validate_prefix,
)
from asr_distill.storage.oss.crc64 import crc64, crc64_combine, warn_if_slow_crc
from asr_distill.storage.oss.errors import StorageIntegrityError, StoredCorruptError
from asr_distill.storage.oss.reader import READ_CHUNK, ObjectReader
from asr_distill.storage.oss.redact import register_secret
from asr_distill.storage.oss.retry import RetryPolicy, translate
from asr_distill.storage.oss.uri import parse_oss_uri, region_from_endpoint
from asr_distill.storage.scratch import scratch_prefix

# Records keep the package's logger name (what `managed_python_loggers` in dagster.yaml names).
logger = logging.getLogger(__package__)

T = TypeVar("T")

MiB = 1 << 20
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 100 * 1024  # OSS's minimum for every part but the last
MAX_PARTS = 10_000
MAX_LIST_PAGE = 1000
# Requests in flight per stage process by default (see OSSStorage's io_concurrency): with ~1.5 requests per
# audio object, 64 hide 100 ms of latency up to ~400 objects/s, past what two cores index or decode.
DEFAULT_IO_CONCURRENCY = 64
MAX_IO_CONCURRENCY = 256


def _md5_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


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
        io_concurrency: int = DEFAULT_IO_CONCURRENCY,
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
            raise StorageError(f"{self.uri}: no OSS endpoint (set {settings.OSS_ENDPOINT.name})")
        if not access_key_id or not access_key_secret:
            raise StorageError(
                f"{self.uri}: no OSS credentials "
                f"(set {settings.OSS_ACCESS_KEY_ID.name} and {settings.OSS_ACCESS_KEY_SECRET.name})"
            )
        signature_version = signature_version.lower()
        if signature_version not in ("v1", "v4"):
            raise StorageError(
                f"{self.uri}: signature_version must be 'v1' or 'v4', not {signature_version!r}"
            )
        region = region or region_from_endpoint(endpoint)
        if signature_version == "v4" and not region:
            raise StorageError(
                f"{self.uri}: V4 signing needs the bucket's region "
                f"(set {settings.OSS_REGION.name}, e.g. cn-hangzhou, "
                "or use signature_version='v1')"
            )
        if part_size < MIN_PART_SIZE:
            raise StorageError(f"{self.uri}: part_size must be >= {MIN_PART_SIZE} bytes (OSS minimum)")
        if multipart_threshold < 1:
            raise StorageError(f"{self.uri}: multipart_threshold must be positive")
        if not isinstance(io_concurrency, int) or not 1 <= io_concurrency <= MAX_IO_CONCURRENCY:
            raise StorageError(f"{self.uri}: io_concurrency must be within 1..{MAX_IO_CONCURRENCY}")
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
        # How many requests a stage keeps in flight on this store (index probe threads, objects the
        # clean and shards stages read ahead). A real bucket throttles (429/503, retried with backoff
        # by RetryPolicy): lower it when OSS answers "Please reduce your request rate".
        self.io_concurrency = io_concurrency
        # Kept-alive connections: by default at least as many as the requests a stage keeps in flight
        # (the index's probe threads plus half as many sidecar readers), so that no thread's connection
        # is discarded and reopened for want of a pool slot.
        default_pool = max(16, 8 * (os.cpu_count() or 1), io_concurrency + io_concurrency // 2)
        self.pool_size = max(pool_size or default_pool, self.upload_concurrency)
        self.list_page_size = list_page_size
        self.content_md5 = content_md5
        self.app_name = app_name
        # Credentials live in the oss2 auth object only (and in _credentials for pickling).
        self._credentials = (access_key_id, access_key_secret, security_token or "")
        register_secret(access_key_secret, security_token)
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
                # pure-Python one): see ObjectReader, _put and _upload_part.
                enable_crc=False,
                region=self.region,
            )
        except oss_exc.OssError as exc:
            raise StorageError(
                f"{self.uri}: invalid OSS configuration (endpoint {self.endpoint!r}): {exc}"
            ) from None
        _configure_http(session.session, bucket)
        warn_if_slow_crc()
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
        return translate(exc, op, self._where(key), endpoint=self.endpoint, bucket_name=self.bucket_name)

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

    def iter_objects(
        self, prefix: str = "", *, recursive: bool = True, include_unaddressable: bool = False
    ) -> Iterator[ObjectInfo]:
        full_prefix = self._full_prefix(prefix)
        previous = ""
        for page in self._pages(full_prefix, "" if recursive else "/"):
            for obj in page.object_list:
                if self.root and not obj.key.startswith(self.root + "/"):
                    continue
                key = self._relative(obj.key)
                if key <= previous:
                    raise StorageError(
                        f"list {self._where(None)}: OSS listing is not sorted ({previous!r} >= {key!r})"
                    )
                previous = key
                # "dir/" markers made by consoles, or names no read can address: listed only on demand.
                problem = key_problem(key)
                if problem is not None and not include_unaddressable:
                    continue
                yield ObjectInfo(
                    key=key,
                    size=int(obj.size),
                    etag=obj.etag or None,
                    mtime=float(obj.last_modified),
                    key_error=problem,
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
        reader = ObjectReader(self, key)
        return io.BufferedReader(reader, buffer_size=READ_CHUNK)  # type: ignore[return-value]

    @contextlib.contextmanager
    def versioned_copy(self, key: str, suffix: str = "") -> Iterator[tuple[Path, ObjectInfo]]:
        """A local copy made by one GET, and the ETag/size/mtime that GET returned (one request)."""
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("copy")) as tmp:
            dest = Path(tmp) / ("object" + suffix)
            reader = ObjectReader(self, key)
            with io.BufferedReader(reader, buffer_size=READ_CHUNK) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, READ_CHUNK)
            yield dest, reader.object_info

    def read_bytes(self, key: str) -> bytes:
        def once() -> bytes:
            with ObjectReader(self, key) as reader:
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
                raise StoredCorruptError(
                    f"write {self._where(key)}: CRC64 mismatch between client and OSS "
                    f"(sent {sent_crc}, OSS stored {result.crc}) [request id {result.request_id or '-'}]"
                )
            return result

        try:
            result = self._call("write", key, once)
        except StoredCorruptError:
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
    bundle = settings.REQUESTS_CA_BUNDLE.get() or settings.CURL_CA_BUNDLE.get()
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
