"""Ordered, bounded map of a chunk function over a pool of worker processes; survives crashing workers.

Used by the index, clean and shards stages. :class:`OrderedPool` calls ``fn(chunk, *args)`` for each
chunk of items and yields the results in input order, with at most ``in_flight`` chunks submitted at
once (memory stays bounded whatever the input size).

Executors:

* ``"process"``: a ``forkserver`` :class:`~concurrent.futures.ProcessPoolExecutor` (safe in a
  multi-threaded parent such as Dagster, unlike ``fork``; workers fork from a server that has the
  work's modules imported already, so they start in milliseconds). ``args`` reach each worker once,
  through the initializer. When a worker process dies (a crash inside a native decoder), the chunk
  being waited for and every chunk still pending are redone one item per task, so that the culprit is
  pinned; an item that kills its worker again gets ``on_crash(item, detail)`` as its result and the
  pool is restarted for the rest. A crash costs one result, not the run.
* ``"thread"``: a thread pool (no start-up cost, no pickling; a native crash takes the caller down).
* ``"inline"``: no pool, chunks run in the calling thread (debugging, small inputs).
* ``"ray"`` or a :class:`~._raypool.RayTasks`: the chunks as Ray tasks on the connected Ray cluster,
  same order, bounds and crash handling (see :mod:`._raypool`); ``workers`` defaults to its CPUs.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import functools
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, Literal, TypeVar

from asr_distill.settings import FORKSERVER_MAIN
from asr_distill.stages._raypool import RayPool, RayTasks, as_ray_tasks, cluster_cpus, is_ray

T = TypeVar("T")
R = TypeVar("R")
Executor = Literal["process", "thread", "inline", "ray"]
EXECUTORS: tuple[Executor, ...] = ("process", "thread", "inline", "ray")
# What a stage's ``executor`` parameter takes: a name, or Ray tasks with their options.
ExecutorSpec = Executor | RayTasks


def check_executor(executor: object) -> None:
    """Raise ValueError for anything that is neither an executor name nor a :class:`RayTasks`."""
    if not (isinstance(executor, RayTasks) or executor in EXECUTORS):
        raise ValueError(f"unknown executor {executor!r}")


def default_workers(executor: object = "process") -> int:
    """The cores this process may run on; for Ray tasks, the connected cluster's CPUs."""
    if is_ray(executor):
        return cluster_cpus()
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class PoolStartError(RuntimeError):
    """The worker processes could not start (a script without a main guard, an unpicklable argument)."""


# -- worker side ------------------------------------------------------------------------------
# Each worker process receives the function and its fixed arguments once, through the initializer.
_TASK: tuple[Callable[..., list[Any]], tuple[Any, ...]] | None = None


def _init_worker(fn: Callable[..., list[Any]], args: tuple[Any, ...]) -> None:
    global _TASK
    _TASK = (fn, args)


def _ready() -> bool:
    return _TASK is not None


def _run_chunk(chunk: list[Any]) -> list[Any]:
    assert _TASK is not None, "worker not initialised"
    fn, args = _TASK
    return call_chunk(fn, args, chunk)


def call_chunk(fn: Callable[..., list[Any]], args: tuple[Any, ...], chunk: list[Any]) -> list[Any]:
    """``fn(chunk, *args)`` in a worker (a process or a Ray task); its exception crosses back."""
    try:
        return fn(chunk, *args)
    except Exception as exc:
        # An exception that cannot cross the process boundary (a custom __init__ signature) would
        # break the whole pool when the parent unpickles it: send its type and message instead.
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            raise RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}") from None
        raise


# -- driver side ------------------------------------------------------------------------------
FORKSERVER_MAIN_ENV = FORKSERVER_MAIN.name  # declared in asr_distill.settings


@functools.cache
def _main_preload() -> list[str]:
    """Preload modules that make the forkserver import this process's main script once.

    A worker forked by the forkserver imports the parent's main script again (as ``__mp_main__``)
    unless the forkserver already did. For the ``dagster`` command (``dagster job execute``,
    ``make demo``) that is all of Dagster: about a second of CPU per worker, per pool, i.e. per
    partition of each stage. ``set_forkserver_preload(["__main__"])`` should do this, but CPython 3.11
    never hands the script's path to the forkserver, so :mod:`._forkserver_main` does it, reading the
    path from :data:`FORKSERVER_MAIN_ENV`. Nothing is needed for ``python -m ...`` (pytest, Dagster's
    step processes): workers do not import a main module run by name. The preload list counts only
    when the forkserver starts (the first pool of a process); the answer is computed once.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is not None or not path:
        return []
    os.environ[FORKSERVER_MAIN_ENV] = os.path.abspath(path)
    return [f"{__package__}._forkserver_main"]


class OrderedPool(Generic[T, R]):
    """Ordered, bounded ``fn(chunk, *args)`` over chunks of items; see the module docstring.

    ``on_crash(item, detail)`` builds the result of an item whose worker process died (called in the
    parent). ``name`` appears in thread names and in the error raised when workers cannot start.
    ``preload``: modules the forkserver imports before forking workers (default: ``fn``'s module).
    """

    def __init__(
        self,
        fn: Callable[..., list[R]],
        args: tuple[Any, ...],
        *,
        on_crash: Callable[[T, str], R],
        executor: ExecutorSpec = "process",
        workers: int | None = None,
        name: str = "pool",
        preload: Sequence[str] | None = None,
    ) -> None:
        check_executor(executor)
        self.fn, self.args, self.on_crash = fn, args, on_crash
        self.ray: RayPool[T, R] | None = None
        if is_ray(executor):
            self.ray = RayPool(fn, args, on_crash=on_crash, spec=as_ray_tasks(executor), name=name)
            executor = "ray"
        self.kind: Executor = executor  # type: ignore[assignment]
        self.workers = workers or default_workers(executor)
        self.name = name
        self.preload = list(preload) if preload is not None else [fn.__module__]
        self.pool: cf.Executor | None = None
        self.restarts = 0  # pools lost to a dying worker (a culprit costs two: its chunk, then itself)

    # -- pool lifecycle ----------------------------------------------------------------------
    def _new_pool(self) -> cf.Executor:
        if self.kind == "thread":
            return cf.ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([*_main_preload(), __name__, *self.preload])
        pool = cf.ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.fn, self.args)
        )
        try:
            # Every worker is started now, before any task. CPython 3.11 starts workers lazily inside
            # submit(); a worker dying at that moment can leave one it is starting out of the broken
            # pool's clean-up, which then waits for it forever (seen here with fast tasks).
            launch = getattr(pool, "_launch_processes", None)
            if callable(launch):
                launch()
            pool.submit(_ready).result()  # a pool that cannot run a no-op is a setup problem, not a bad item
        except BrokenProcessPool as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            raise PoolStartError(
                f"the {self.name} worker processes could not start (is the calling script missing an "
                "`if __name__ == '__main__':` guard, or are the store and settings not picklable?)"
            ) from exc
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            raise PoolStartError(f"the {self.name} worker arguments cannot be pickled: {exc}") from exc
        return pool

    def start(self) -> None:
        """Start the pool now (it starts at the first chunk otherwise); raises :class:`PoolStartError`."""
        if self.ray is not None:
            self.ray.start()
        elif self.kind != "inline" and self.pool is None:
            self.pool = self._new_pool()

    def close(self) -> None:
        """Shut the pool down (waits for the workers); :meth:`map` does this when it ends."""
        if self.ray is not None:
            self.ray.close()
        self._drop_pool()

    def _drop_pool(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _submit(self, chunk: list[T]) -> cf.Future[list[R]]:
        if self.pool is None:
            self.pool = self._new_pool()
        try:
            if self.kind == "thread":
                return self.pool.submit(self.fn, chunk, *self.args)
            return self.pool.submit(_run_chunk, chunk)
        except BrokenProcessPool as exc:
            # A worker died since the last result: the pool refuses new work. Hand back a failed
            # future so that the crash handling (isolate the culprit, restart the pool) runs.
            failed: cf.Future[list[R]] = cf.Future()
            failed.set_exception(exc)
            return failed

    # -- mapping -----------------------------------------------------------------------------
    def _isolate(self, chunks: list[list[T]]) -> Iterator[list[R]]:
        """After a worker died: redo the affected items one per task; one that kills it again fails."""
        for chunk in chunks:
            out: list[R] = []
            for item in chunk:
                try:
                    out.extend(self._submit([item]).result())
                except BrokenProcessPool as exc:
                    self._drop_pool()
                    self.restarts += 1
                    out.append(self.on_crash(item, f"worker process died: {exc}"))
            yield out

    def map(self, chunks: Iterable[list[T]], in_flight: int) -> Iterator[list[R]]:
        """Results of every chunk, in order, with at most ``in_flight`` chunks submitted at once."""
        if self.ray is not None:
            try:
                yield from self.ray.map(chunks, in_flight)
            finally:
                self.restarts = self.ray.restarts
            return
        if self.kind == "inline":
            for chunk in chunks:
                yield self.fn(chunk, *self.args)
            return
        source = iter(chunks)
        pending: collections.deque[tuple[list[T], cf.Future[list[R]]]] = collections.deque()
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < max(1, in_flight):
                    chunk = next(source, None)
                    if chunk is None:
                        exhausted = True
                        break
                    pending.append((chunk, self._submit(chunk)))
                if not pending:
                    return
                chunk, fut = pending.popleft()
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    redo = [chunk] + [c for c, _ in pending]
                    pending.clear()
                    self._drop_pool()
                    self.restarts += 1
                    yield from self._isolate(redo)
                    continue
                yield result
        finally:
            self._drop_pool()
