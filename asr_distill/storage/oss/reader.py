"""A seekable, resuming reader over one OSS object that checks CRC64 after a whole sequential read."""

from __future__ import annotations

import contextlib
import http.client
import io
from typing import TYPE_CHECKING, Any

import oss2.exceptions as oss_exc

from asr_distill.storage.base import ObjectInfo, StorageError
from asr_distill.storage.oss.crc64 import crc64
from asr_distill.storage.oss.errors import StorageIntegrityError

if TYPE_CHECKING:
    from asr_distill.storage.oss.client import OSSStorage

READ_CHUNK = 1 << 20  # bytes asked of the HTTP response per read (and the buffered reader's size)


class ObjectReader(io.RawIOBase):
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
        self._mtime: float | None = None
        # CRC of bytes [0, _crc_upto) delivered so far, in order (-1: the check is done or abandoned).
        self._crc = 0
        self._crc_upto = 0
        self._open_at(0)

    @property
    def object_info(self) -> ObjectInfo:
        """The version being read: every byte this reader returns belongs to it (resumes use If-Match)."""
        return ObjectInfo(key=self._key, size=self._size, etag=self._etag or None, mtime=self._mtime)

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
            self._mtime = float(result.last_modified) if result.last_modified is not None else None
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
                chunk = self._result.read(min(len(view), READ_CHUNK))
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
