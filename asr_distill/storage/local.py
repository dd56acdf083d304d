"""Local-directory backend: the embedded default for both the raw store and the lake."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from asr_distill.storage.base import (
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageError,
    validate_key,
    validate_prefix,
)

# Temporary files of in-flight atomic writes start with this and are never listed.
TMP_MARK = ".asrd-tmp-"


@functools.lru_cache(maxsize=8192)
def _realpath_cached(path: str) -> str:
    """Real path of a folder. Cached: a folder swapped for a symlink *while* a process runs is not seen."""
    return os.path.realpath(path)


class LocalStorage(Storage):
    """Objects are files below ``root``; keys are their ``/``-separated relative paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.uri = str(self.root)
        self._real_root = os.path.realpath(self.root)

    # -- key -> path ---------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        validate_key(key)
        path = self.root / key
        # Symlinks (or anything else) must not lead outside the root. Resolving every component
        # of every key is slow, so the real path of parent folders is cached; the object's own
        # name is checked on each call.
        parent, _, name = key.rpartition("/")
        real_parent = _realpath_cached(f"{self.root}/{parent}") if parent else self._real_root
        real = os.path.join(real_parent, name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise InvalidKeyError(key, "resolves outside the storage root")
        return path

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    @staticmethod
    def _info(key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key=key, size=st.st_size, etag=None, mtime=st.st_mtime_ns / 1e9)

    # -- listing -------------------------------------------------------------------------
    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise ObjectNotFoundError(f"storage root {self.root} does not exist or is not a directory")

    @staticmethod
    def _sorted_entries(directory: Path) -> list[tuple[str, os.DirEntry[str]]]:
        """Entries of one directory, sorted so that a full-key walk comes out in key order.

        A sub-directory ``b`` sorts as ``b/`` so that ``b.wav`` < ``b/x.wav`` as in a flat store.
        """
        out = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.startswith(TMP_MARK):
                        continue
                    is_dir = entry.is_dir(follow_symlinks=False)
                    out.append((entry.name + ("/" if is_dir else ""), entry))
        except FileNotFoundError:
            return []
        out.sort(key=lambda item: item[0])
        return out

    def _walk(self, directory: Path, key_prefix: str, name_filter: str, recursive: bool) -> Iterator[ObjectInfo]:
        for sort_name, entry in self._sorted_entries(directory):
            if not entry.name.startswith(name_filter):
                continue
            if sort_name.endswith("/"):
                if recursive:
                    yield from self._walk(Path(entry.path), f"{key_prefix}{entry.name}/", "", True)
                continue
            if not entry.is_file(follow_symlinks=False):
                continue  # sockets, fifos, symlinks: not objects
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while listing
            yield self._info(key_prefix + entry.name, st)

    def iter_objects(self, prefix: str = "", *, recursive: bool = True) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        self._require_root()
        dir_part, _, name_part = prefix.rpartition("/")
        directory = self.root / dir_part if dir_part else self.root
        yield from self._walk(directory, f"{dir_part}/" if dir_part else "", name_part, recursive)

    def list_prefixes(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        self._require_root()
        dir_part, _, name_part = prefix.rpartition("/")
        directory = self.root / dir_part if dir_part else self.root
        base = f"{dir_part}/" if dir_part else ""
        for sort_name, entry in self._sorted_entries(directory):
            if sort_name.endswith("/") and entry.name.startswith(name_part):
                yield f"{base}{entry.name}/"

    # -- metadata and reads --------------------------------------------------------------
    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(f"{self.url(key)} does not exist") from exc
        if not path.is_file():
            raise ObjectNotFoundError(f"{self.url(key)} is not an object")
        return self._info(key, st)

    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"{self.url(key)} does not exist") from exc

    def read_bytes(self, key: str) -> bytes:
        with self._open(key) as fh:
            return fh.read()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise StorageError(f"invalid range start={start} length={length} for {self.url(key)}")
        with self._open(key) as fh:
            fh.seek(start)
            return fh.read(length)

    def open_read(self, key: str) -> BinaryIO:
        return self._open(key)

    # -- atomic writes -------------------------------------------------------------------
    @contextlib.contextmanager
    def _atomic_target(self, key: str) -> Iterator[Path]:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TMP_MARK}{uuid.uuid4().hex}-{final.name}"[:255]
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        with self._atomic_target(key) as tmp:
            tmp.write_bytes(data)
        return self.stat(key)

    def write_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        with self._atomic_target(key) as tmp:
            shutil.copyfile(path, tmp)
        return self.stat(key)

    @contextlib.contextmanager
    def open_write(self, key: str, suffix: str = "") -> Iterator[BinaryIO]:
        with self._atomic_target(key) as tmp, open(tmp, "wb") as fh:
            yield fh

    @contextlib.contextmanager
    def staged_file(self, key: str, suffix: str = "") -> Iterator[Path]:
        with self._atomic_target(key) as tmp:
            yield tmp
            if not tmp.exists():
                raise StorageError(f"nothing was written for {self.url(key)}")

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


