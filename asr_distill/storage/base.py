"""The storage interface every stage talks to.

A store is a flat namespace of objects addressed by ``/``-separated keys below a root
(a local directory, an OSS bucket prefix, ...). Backends implement the abstract methods;
assets and stage cores only ever see :class:`Storage`.

Guarantees every backend gives:

* listing is streamed and sorted by key (code-point order, which equals UTF-8 byte order),
* a write is atomic: a reader never sees a partial object under its final key,
* keys are validated before any I/O: nothing can address a location outside the root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from asr_distill.storage.scratch import scratch_prefix

MAX_KEY_BYTES = 1023


class StorageError(Exception):
    """Base class of every storage failure."""


class InvalidKeyError(StorageError, ValueError):
    """A key that could escape the root or that no backend can store."""

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"invalid storage key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object (or the store's root) does not exist."""


class StorageAccessDeniedError(StorageError, PermissionError):
    """The backend refused the request (credentials, ACL)."""


class ObjectChangedError(StorageError):
    """The object was replaced or rewritten while it was being read (its bytes mix two versions)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or a stat returns about one object."""

    key: str
    size: int
    etag: str | None = None
    mtime: float | None = None
    # Set only by ``iter_objects(..., include_unaddressable=True)``: why ``key`` cannot be read or
    # written through this interface (see :func:`key_problem`); such an object is listed, never opened.
    key_error: str | None = None

    @property
    def version_tag(self) -> str:
        """A string that changes when the object's content changes (etag, else size+mtime)."""
        if self.etag:
            return self.etag
        return f"{self.size}-{int((self.mtime or 0) * 1_000_000)}"


@dataclass
class SweepResult:
    """What :meth:`Storage.sweep_temporaries` removed (and kept: temporaries of live or recent writers)."""

    removed: int = 0
    removed_bytes: int = 0
    kept: int = 0
    sample: list[str] = field(default_factory=list)  # up to 10 removed names


_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")  # one C-level scan instead of a per-character loop


def _check_chars(key: str, what: object) -> None:
    if "\x00" in key:
        raise InvalidKeyError(what, "contains a NUL character")
    if "\\" in key:
        raise InvalidKeyError(what, "contains a backslash")
    if _CONTROL_CHAR.search(key):
        raise InvalidKeyError(what, "contains a control character")
    if key.isascii():  # the usual case: one byte per character, no surrogates
        if len(key) > MAX_KEY_BYTES:
            raise InvalidKeyError(what, f"longer than {MAX_KEY_BYTES} bytes")
        return
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKeyError(what, f"longer than {MAX_KEY_BYTES} bytes")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(what, "is not valid Unicode (lone surrogate)") from exc


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it names an object safely inside the root, else raise.

    Rejected: empty keys, absolute paths, ``.``/``..`` or empty segments, a trailing ``/``,
    NUL, backslashes and other control characters. Spaces and non-ASCII are fine.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(key, "is not a string")
    if not key:
        raise InvalidKeyError(key, "is empty")
    _check_chars(key, key)
    if key.startswith("/"):
        raise InvalidKeyError(key, "is an absolute path")
    if key.endswith("/"):
        raise InvalidKeyError(key, "ends with '/' (that is a prefix, not an object)")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(key, f"has a {segment or 'empty'!r} path segment")
    return key


def key_problem(key: str) -> str | None:
    """Why a listed name cannot be addressed as an object (a reason code of :data:`KEY_PROBLEMS`), or None."""
    try:
        validate_key(key)
    except InvalidKeyError as exc:
        reason = exc.reason
        if "/" in key and key.endswith("/"):
            return "directory_marker"
        if "segment" in reason:
            return "dot_or_empty_segment"
        if "backslash" in reason:
            return "backslash"
        if "control" in reason or "NUL" in reason:
            return "control_character"
        if "surrogate" in reason:
            return "not_unicode"
        if "longer" in reason:
            return "too_long"
        return "invalid_name"
    return None


# Reason codes of :func:`key_problem` (names a listing returns that no read may address).
KEY_PROBLEMS = {
    "directory_marker": "a key ending in '/' (a folder marker made by consoles and tools)",
    "dot_or_empty_segment": "a '.', '..' or empty path segment",
    "backslash": "a backslash (a path separator on Windows)",
    "control_character": "a control character (newline, tab, NUL, ...)",
    "not_unicode": "a name that is not valid UTF-8",
    "too_long": f"longer than {MAX_KEY_BYTES} bytes",
    "invalid_name": "any other name the storage interface refuses",
}


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: ``""``, or a key-like string that may end in ``/``."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(prefix, "is not a string")
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def join_key(*parts: str) -> str:
    """Join key parts with ``/`` and validate the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p and p.strip("/")))


class Storage(ABC):
    """Abstract object store rooted at :attr:`uri`."""

    uri: str
    # Requests a stage may keep in flight on this store to hide its latency (objects read ahead while
    # earlier ones are decoded, probes waiting on the network). 1: nothing to hide (a local disk).
    io_concurrency: int = 1

    # -- listing -------------------------------------------------------------------------
    @abstractmethod
    def iter_objects(
        self, prefix: str = "", *, recursive: bool = True, include_unaddressable: bool = False
    ) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, sorted by key, streamed.

        With ``recursive=False`` only objects directly below ``prefix`` (no further ``/``).
        Names no read can address (:func:`key_problem`: control characters, backslashes, ``.``/``..``
        or empty segments, ``dir/`` markers) are skipped, unless ``include_unaddressable``: then they
        are listed too, with :attr:`ObjectInfo.key_error` set (what an inventory such as the index
        needs to account for every object). Every backend treats the same names the same way.
        """

    @abstractmethod
    def list_prefixes(self, prefix: str = "") -> Iterator[str]:
        """Common prefixes (``delimiter='/'``) directly below ``prefix``, sorted, each ending in ``/``."""

    # -- metadata ------------------------------------------------------------------------
    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and version of one object; :class:`ObjectNotFoundError` if missing."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    # -- reading -------------------------------------------------------------------------
    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object."""

    @abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end of the object)."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A streaming, read-only binary file object; close it (use ``with``)."""

    def local_path(self, key: str) -> Path | None:
        """The object's path on the local filesystem when the backend has one (zero-copy reads)."""
        return None

    @contextlib.contextmanager
    def local_copy(self, key: str, suffix: str = "") -> Iterator[Path]:
        """A local file holding the object for the duration of the ``with`` block."""
        path = self.local_path(key)
        if path is not None:
            if not path.is_file():
                raise ObjectNotFoundError(f"{self.url(key)} does not exist")
            yield path
            return
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("copy")) as tmp:
            dest = Path(tmp) / ("object" + suffix)
            with self.open_read(key) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            yield dest

    @contextlib.contextmanager
    def versioned_copy(self, key: str, suffix: str = "") -> Iterator[tuple[Path, ObjectInfo]]:
        """:meth:`local_copy` plus the version (:class:`ObjectInfo`) of exactly the bytes in the file.

        Backends take the version from the same request that reads the bytes where they can (OSS: the
        GET's ETag, and a resumed read is pinned to it); a local file is stat'ed before and after the
        block and :class:`ObjectChangedError` is raised when it changed meanwhile. This default stats
        first and checks that the copy has the stat's size.
        """
        info = self.stat(key)
        with self.local_copy(key, suffix) as path:
            if path.stat().st_size != info.size:
                raise ObjectChangedError(f"{self.url(key)} changed while it was being read")
            yield path, info

    # -- writing (atomic) ----------------------------------------------------------------
    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Write ``data`` under ``key`` atomically, replacing any previous object."""

    @abstractmethod
    def write_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Upload the local file ``path`` under ``key`` atomically."""

    @contextlib.contextmanager
    def open_write(self, key: str, suffix: str = "") -> Iterator[BinaryIO]:
        """Write through a file object; the object appears only if the block ends without error."""
        validate_key(key)
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("write")) as tmp:
            path = Path(tmp) / ("object" + suffix)
            with open(path, "wb") as fh:
                yield fh
            self.write_file(key, path)

    @contextlib.contextmanager
    def staged_file(self, key: str, suffix: str = "") -> Iterator[Path]:
        """A local path to fill (e.g. by a Parquet writer); uploaded atomically on success."""
        validate_key(key)
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("stage")) as tmp:
            path = Path(tmp) / ("object" + suffix)
            yield path
            if not path.exists():
                raise StorageError(f"nothing was written for {self.url(key)}")
            self.write_file(key, path)

    def sweep_temporaries(self, prefix: str, *, max_age_s: float) -> SweepResult:
        """Remove leftovers of killed atomic writes below ``prefix`` (never a live writer's).

        Backends whose writes leave no visible temporaries (OSS: one PUT or a multipart upload that is
        invisible until completed) have nothing to sweep.
        """
        return SweepResult()

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""

    def url(self, key: str = "") -> str:
        """A human-readable address of ``key`` (never carries credentials)."""
        base = self.uri.rstrip("/")
        return f"{base}/{key}" if key else base
