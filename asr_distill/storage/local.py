"""Local-directory backend: the embedded default for both the raw store and the lake."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from asr_distill.storage.base import (
    InvalidKeyError,
    ObjectChangedError,
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageError,
    SweepResult,
    key_problem,
    validate_key,
    validate_prefix,
)

# Temporary files of in-flight atomic writes start with this and are never listed. The rest of the
# name says who writes it: ``<host tag>.<pid>.<process start>.<random>-<final name>`` (host tag: 8 hex
# digits of sha256(hostname); process start: clock ticks since boot, /proc/<pid>/stat field 22, 0 where
# unknown), so a sweep can tell a live writer's temporary from a killed one's.
TMP_MARK = ".asrd-tmp-"
_TMP_OWNER = re.compile(r"^\.asrd-tmp-([0-9a-f]{8})\.(\d+)\.(\d+)\.[0-9a-f]+-")


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    # Field 2 (the command) may hold spaces and parentheses: split after its last ')'.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


@functools.lru_cache(maxsize=4)
def _owner_tag(pid: int) -> str:
    """``<host>.<pid>.<start>`` of this process (cached per pid: a forked child computes its own)."""
    start = 0
    if os.path.isdir("/proc/self"):
        start = _process_start(pid) or 0
    return f"{_host_tag()}.{pid}.{start}"


def tmp_name(final_name: str) -> str:
    """The temporary name of an atomic write of ``final_name`` by this process."""
    return f"{TMP_MARK}{_owner_tag(os.getpid())}.{uuid.uuid4().hex[:12]}-{final_name}"[:255]


def writer_alive(name: str) -> bool | None:
    """Whether the writer named in a temporary's name is alive: True/False when it ran on this host
    and this host can tell (the pid exists with the same start time), None when unknown (another
    host, an old-style name)."""
    m = _TMP_OWNER.match(name)
    if m is None:
        return None
    return owner_alive(m.group(1), int(m.group(2)), int(m.group(3)))


def owner_tag() -> str:
    """``<host tag>.<pid>.<process start>`` of this process, as temporaries' names carry it."""
    return _owner_tag(os.getpid())


def owner_alive(host: str, pid: int, start: int) -> bool | None:
    """Whether the process named by an owner tag is alive (None: another host, cannot tell)."""
    if host != _host_tag():
        return None
    if os.path.isdir("/proc/self"):
        current = _process_start(pid)
        if current is None:
            return False
        return start == 0 or current == 0 or current == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def _walk(
        self, directory: Path, key_prefix: str, name_filter: str, recursive: bool, unaddressable: bool
    ) -> Iterator[ObjectInfo]:
        for sort_name, entry in self._sorted_entries(directory):
            if not entry.name.startswith(name_filter):
                continue
            if sort_name.endswith("/"):
                if recursive:
                    yield from self._walk(
                        Path(entry.path), f"{key_prefix}{entry.name}/", "", True, unaddressable
                    )
                continue
            if not entry.is_file(follow_symlinks=False):
                continue  # sockets, fifos, symlinks: not objects
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while listing
            key = key_prefix + entry.name
            problem = key_problem(key)
            if problem is None:
                yield self._info(key, st)
            elif unaddressable:
                yield ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime_ns / 1e9, key_error=problem)

    def iter_objects(
        self, prefix: str = "", *, recursive: bool = True, include_unaddressable: bool = False
    ) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        self._require_root()
        dir_part, _, name_part = prefix.rpartition("/")
        directory = self.root / dir_part if dir_part else self.root
        yield from self._walk(
            directory, f"{dir_part}/" if dir_part else "", name_part, recursive, include_unaddressable
        )

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

    @contextlib.contextmanager
    def versioned_copy(self, key: str, suffix: str = "") -> Iterator[tuple[Path, ObjectInfo]]:
        """The file itself and its size + mtime; raises :class:`ObjectChangedError` after the block
        when the file was rewritten or replaced while the block read it."""
        path = self._path(key)
        try:
            before = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(f"{self.url(key)} does not exist") from exc
        if not path.is_file():
            raise ObjectNotFoundError(f"{self.url(key)} is not an object")
        yield path, self._info(key, before)
        try:
            after = os.stat(path)
        except FileNotFoundError:
            after = None
        same = after is not None and (before.st_ino, before.st_size, before.st_mtime_ns) == (
            after.st_ino,
            after.st_size,
            after.st_mtime_ns,
        )
        if not same:
            raise ObjectChangedError(f"{self.url(key)} changed while it was being read")

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
        tmp = final.parent / tmp_name(final.name)
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

    # -- leftovers -----------------------------------------------------------------------
    def sweep_temporaries(self, prefix: str, *, max_age_s: float) -> SweepResult:
        """Remove ``.asrd-tmp-*`` files below the folder ``prefix`` left by killed writers.

        A temporary is removed when it was not modified for ``max_age_s`` and its writer is not known to
        be alive: on this host the pid and process start encoded in its name are checked (a live writer's
        temporary is kept whatever its age, e.g. a stalled upload); another host's is judged by age only
        (a writer keeps its temporary's mtime fresh while it writes).
        """
        validate_prefix(prefix)
        result = SweepResult()
        folder = self.root / prefix.rstrip("/") if prefix else self.root
        if not folder.is_dir():
            return result
        now = time.time()
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in filenames:
                if not name.startswith(TMP_MARK):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # its writer finished meanwhile
                alive = writer_alive(name)
                stale = alive is not True and now - st.st_mtime >= max_age_s
                if not stale:
                    result.kept += 1
                    continue
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                result.removed += 1
                result.removed_bytes += st.st_size
                if len(result.sample) < 10:
                    result.sample.append(os.path.relpath(path, self.root))
        return result
