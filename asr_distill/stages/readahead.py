"""Read objects of a remote store ahead of the CPU work that needs them (latency hiding).

On object storage every read waits a round trip (tens of milliseconds on OSS) before any byte arrives,
while a local disk answers at once. The clean and shards stages decode one object after another in
their worker processes; on a remote store each worker would sit idle for a round trip per object.
:class:`ReadAhead` runs the reads in the driver on a bounded thread pool, in input order, ahead of the
workers: ``depth`` objects in flight (the store's ``io_concurrency``), each written once to a local
file (or, for a byte range, held in memory), handed to the worker as a :class:`Fetched` and removed
when the driver has its result (:meth:`ReadAhead.release`). Each object is read by exactly the request
the worker would have made (one GET), so requests per object do not change, and the workers see
the same bytes and versions, so outputs are byte-identical with or without read-ahead.

Bounds: at most ``depth`` reads in flight and at most ``max_bytes`` of objects read but not yet
handed on (always at least one object); what the pool holds is bounded by its own ``in_flight``.

The local files live in this machine's temporary directory: read-ahead is for executors whose
workers share the driver's filesystem (processes, threads, inline).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from asr_distill.storage import ObjectInfo, Storage
from asr_distill.storage.scratch import scratch_prefix

T = TypeVar("T")

DEFAULT_MAX_BYTES = 1 << 30  # objects read ahead and not yet handed on, at most (at least one)


@dataclass(frozen=True, slots=True)
class Fetched:
    """One object read ahead: a local copy (whole object), or a byte range, or the read's exception."""

    key: str
    path: str | None = None  # a local copy of the whole object (versioned_copy / local_copy)
    info: ObjectInfo | None = None  # the version of exactly those bytes
    start: int = 0  # a byte range: ``data`` holds ``length`` bytes read from ``start``
    length: int = 0
    data: bytes | None = None
    error: BaseException | None = None  # raised again by the worker's read, as the store would have


def _portable(exc: BaseException) -> BaseException | None:
    """``exc`` when it survives pickling (it crosses to a worker process), else None."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    return exc


class PrefetchedStore:
    """A view of ``store`` whose reads of ``fetched.key`` are answered from what was read ahead.

    Only the calls the stages make on the object are served locally (``versioned_copy`` and
    ``local_copy`` from the copy, ``read_range`` of the range read); anything else goes to ``store``.
    """

    def __init__(self, store: Storage, fetched: Fetched) -> None:
        self._store = store
        self._fetched = fetched

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _mine(self, key: str) -> bool:
        f = self._fetched
        return key == f.key and (f.path is not None or f.error is not None) and f.data is None

    @contextlib.contextmanager
    def versioned_copy(self, key: str, suffix: str = "") -> Iterator[tuple[Path, ObjectInfo]]:
        if not self._mine(key) or (self._fetched.error is None and self._fetched.info is None):
            with self._store.versioned_copy(key, suffix) as pair:
                yield pair
            return
        if self._fetched.error is not None:
            raise self._fetched.error
        assert self._fetched.path is not None and self._fetched.info is not None
        yield Path(self._fetched.path), self._fetched.info

    @contextlib.contextmanager
    def local_copy(self, key: str, suffix: str = "") -> Iterator[Path]:
        if not self._mine(key):
            with self._store.local_copy(key, suffix) as path:
                yield path
            return
        if self._fetched.error is not None:
            raise self._fetched.error
        assert self._fetched.path is not None
        yield Path(self._fetched.path)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        f = self._fetched
        if key == f.key and start == f.start and length == f.length:
            if f.error is not None:
                raise f.error
            if f.data is not None:
                return f.data
        return self._store.read_range(key, start, length)


def wants_read_ahead(store: Storage | None, executor: str) -> bool:
    """Whether a stage should read ``store``'s objects ahead: a store with latency to hide (its
    ``io_concurrency`` > 1) and workers on this machine."""
    return (
        store is not None
        and executor in ("process", "thread", "inline")
        and store.io_concurrency > 1
    )


class ReadAhead(Generic[T]):
    """Ordered, bounded read-ahead of objects for a stream of items (see the module docstring).

    ``fetch(item, ra)`` reads what ``item`` needs with :meth:`copy` or :meth:`range` and returns the
    :class:`Fetched`; :meth:`map` yields ``(item, fetched)`` in input order. Use as a context manager:
    leaving it stops the reads and removes every local copy.
    """

    def __init__(self, depth: int, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str = "readahead") -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.depth = depth
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(depth, thread_name_prefix=name)
        self._tmp = tempfile.mkdtemp(prefix=scratch_prefix("readahead"))
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._paths: dict[str, str] = {}  # key -> local copy not yet released
        self._closed = False

    # -- reads (run on the pool's threads) ----------------------------------------------------------
    def copy(self, store: Storage, key: str, suffix: str = "", *, versioned: bool = True) -> Fetched:
        """A local copy of the whole object (one GET on OSS), with its version when ``versioned``."""
        try:
            if store.local_path(key) is not None:
                return Fetched(key)  # a local file: nothing to hide, never moved
        except Exception:
            return Fetched(key)  # the worker's own read reports it
        dest = os.path.join(self._tmp, f"{next(self._ids)}{suffix}")
        try:
            if versioned:
                with store.versioned_copy(key, suffix) as (path, info):
                    _move(path, dest)
            else:
                info = None
                with store.local_copy(key, suffix) as path:
                    _move(path, dest)
        except Exception as exc:
            with contextlib.suppress(OSError):
                os.unlink(dest)
            err = _portable(exc)
            return Fetched(key, error=err) if err is not None else Fetched(key)
        with self._lock:
            if self._closed:
                os.unlink(dest)
                return Fetched(key)
            self._paths[key] = dest
        return Fetched(key, path=dest, info=info)

    def range(self, store: Storage, key: str, start: int, length: int) -> Fetched:
        """``length`` bytes from ``start`` (one ranged GET on OSS), held in memory."""
        try:
            data = store.read_range(key, start, length)
        except Exception as exc:
            err = _portable(exc)
            if err is None:
                return Fetched(key)
            return Fetched(key, start=start, length=length, error=err)
        return Fetched(key, start=start, length=length, data=data)

    # -- driver side ------------------------------------------------------------------------------
    def map(
        self,
        items: Iterable[T],
        fetch: Callable[[T, ReadAhead[T]], Fetched],
        size: Callable[[T], int] = lambda _: 0,
    ) -> Iterator[tuple[T, Fetched]]:
        """``(item, fetched)`` in input order, reading up to ``depth`` items (``max_bytes``) ahead."""
        window: collections.deque[tuple[T, int, Future[Fetched]]] = collections.deque()
        source = iter(items)
        pending_bytes = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < self.depth:
                    if window and pending_bytes >= self.max_bytes:
                        break
                    item = next(source, _END)
                    if item is _END:
                        exhausted = True
                        break
                    n = max(0, int(size(item)))  # type: ignore[arg-type]
                    pending_bytes += n
                    window.append((item, n, self._pool.submit(fetch, item, self)))  # type: ignore[arg-type]
                if not window:
                    return
                item, n, fut = window.popleft()
                pending_bytes -= n
                yield item, fut.result()
        finally:
            for _, _, fut in window:
                fut.cancel()

    def release(self, key: str) -> None:
        """Remove the local copy of ``key`` (its worker is done with it); no-op when there is none."""
        with self._lock:
            path = self._paths.pop(key, None)
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    @property
    def held(self) -> int:
        """Local copies not yet released."""
        with self._lock:
            return len(self._paths)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._paths.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_END: Any = object()


def _move(src: Path, dest: str) -> None:
    """Move a copy out of the backend's temporary directory (removed when its block ends)."""
    try:
        os.replace(src, dest)
    except OSError:  # another filesystem
        shutil.copyfile(src, dest)
