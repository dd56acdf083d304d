"""The stage pools' Ray executor: chunks of items as Ray tasks, with :class:`~._procpool.OrderedPool`'s
semantics (ordered results, bounded in-flight chunks, crash isolation).

:class:`RayPool` runs ``fn(chunk, *args)`` over the chunks as Ray tasks (``num_cpus=1``; consecutive chunks
share a task up to :attr:`RayTasks.items_per_task` items) on the cluster this process is
connected to (``ray.init`` is the caller's business: the Dagster assets connect through the
``ray_cluster`` resource). Results come back per chunk in input order and at most ``in_flight`` tasks
are submitted at once.

* **The fixed arguments travel once.** ``args`` are pickled once into one object (``ray.put``); each
  task gets a reference to it, and a worker process unpickles it on its first task and keeps it for
  the next ones (a few recent ones per process), so a store is opened once per worker, not per chunk.
* **Stores and credentials.** With :attr:`RayTasks.ship_stores` ``False`` (the default: a cluster
  on other machines) an OSS store travels *without* its key pair and STS token: its URI and
  non-secret settings (endpoint, region, signature, part sizes, retry policy, timeouts) do, and the
  worker completes the credentials from its own environment by the rule of
  :mod:`asr_distill.storage.oss.credentials` (``OSS_ACCESS_KEY_ID`` / ``OSS_ACCESS_KEY_SECRET`` /
  ``OSS_SECURITY_TOKEN``), exactly as the teacher actors open the lake. ``ship_stores=True`` (the
  private local cluster: worker processes of this machine) sends the stores as the process pool
  does, settings and credentials included. A local-directory store always travels as its path: the
  workers must see the same filesystem (the assets refuse a remote cluster unless told it does).
* **Crashes.** Tasks run with ``max_retries=0``: Ray does not retry a task whose worker died, the
  pool does, like the process pool. A chunk whose worker process died (a native decoder crash, the
  kernel's OOM killer, Ray's memory monitor, a lost node) is redone one item per task; an item
  whose task dies again gets ``on_crash(item, detail)`` as its result. Unlike the process pool, the
  other chunks in flight are not affected (each task has its own fate). An exception raised by
  ``fn`` is raised here, as the process pool does.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RayTasks:
    """Executor spec: run the chunks as Ray tasks on the cluster this process is connected to.

    ``ship_stores``: send opened stores with their credentials (only for a cluster whose workers are
    processes of this machine); otherwise OSS credentials come from each worker's environment.
    ``num_cpus``: the CPUs Ray reserves per task (one chunk is single-threaded work).
    ``items_per_task``: consecutive chunks go into one task until it holds this many items; a Ray
    task costs more to schedule than a process pool's, and the stages' chunks are sized for the latter
    (clean: 8 files, shards: 4; the index's 64 objects stay one chunk per task).
    """

    ship_stores: bool = False
    num_cpus: float = 1.0
    items_per_task: int = 16


def is_ray(executor: object) -> bool:
    """Whether an executor spec (``"ray"`` or a :class:`RayTasks`) asks for Ray tasks."""
    return executor == "ray" or isinstance(executor, RayTasks)


def as_ray_tasks(executor: object) -> RayTasks:
    return executor if isinstance(executor, RayTasks) else RayTasks()


def cluster_cpus() -> int:
    """The CPUs of the connected cluster (at least 1): the default number of parallel tasks."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("the Ray executor needs a connected cluster: call ray.init() first")
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# -- what travels: the arguments, stores reopened where they run ------------------------------------
def _oss_class() -> type | None:
    module = sys.modules.get("asr_distill.storage.oss.client")  # no OSS store exists unless imported
    return getattr(module, "OSSStorage", None)


def _reopen_oss(state: dict[str, Any]) -> Any:
    """An OSS store rebuilt on a Ray worker from its non-secret state and the worker's own credentials."""
    from asr_distill.storage import StorageError
    from asr_distill.storage.oss.client import OSSStorage
    from asr_distill.storage.oss.credentials import resolve_options
    from asr_distill.storage.oss.redact import register_secret

    found = resolve_options({})
    key_id, secret, token = found["access_key_id"], found["access_key_secret"], found["security_token"]
    if not key_id or not secret:
        raise StorageError(
            f"{state.get('uri')}: no OSS credentials on this Ray worker: set OSS_ACCESS_KEY_ID and "
            "OSS_ACCESS_KEY_SECRET (or a RAM role's STS variables) in the workers' environment"
        )
    register_secret(secret, token)
    store = OSSStorage.__new__(OSSStorage)
    store.__setstate__({**state, "_credentials": (key_id, secret, token or "")})
    return store


def dumps_args(args: tuple[Any, ...], *, ship_stores: bool) -> bytes:
    """The bytes put into the object store for ``args`` (see the module docstring).

    Ray's cloudpickle (what Ray itself uses for task arguments), so that what Ray can ship, this can.
    """
    from ray import cloudpickle

    oss = None if ship_stores else _oss_class()

    class ArgsPickler(cloudpickle.Pickler):  # type: ignore[misc, name-defined]
        def reducer_override(self, obj: Any) -> Any:
            if oss is not None and type(obj) is oss:  # an OSS store travels without credentials
                state = obj.__getstate__()
                state.pop("_credentials", None)
                return _reopen_oss, (state,)
            return super().reducer_override(obj)

    buf = io.BytesIO()
    ArgsPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(args)
    return buf.getvalue()


# -- worker side --------------------------------------------------------------------------------------
_ARGS: collections.OrderedDict[bytes, tuple[Any, ...]] = collections.OrderedDict()
_ARGS_KEEP = 4  # argument sets a worker process keeps (workers live on between stage runs)
_ARGS_LOCK = threading.Lock()


def _worker_args(holder: list[Any]) -> tuple[Any, ...]:
    import ray

    ref = holder[0]
    key = ref.binary()
    with _ARGS_LOCK:
        args = _ARGS.get(key)
        if args is not None:
            _ARGS.move_to_end(key)
            return args
    args = pickle.loads(ray.get(ref))
    with _ARGS_LOCK:
        _ARGS[key] = args
        while len(_ARGS) > _ARGS_KEEP:
            _ARGS.popitem(last=False)
    return args


def _ray_chunks(fn: Callable[..., list[Any]], holder: list[Any], chunks: list[list[Any]]) -> list[list[Any]]:
    """The body of every task: ``fn(chunk, *args)`` for each chunk, with the arguments of ``holder[0]``."""
    from asr_distill.stages._procpool import call_chunk

    args = _worker_args(holder)
    return [call_chunk(fn, args, chunk) for chunk in chunks]


_REMOTE: dict[float, Any] = {}


def _remote(num_cpus: float) -> Any:
    """The Ray remote function (made once per process and CPU size; ``ray`` is imported lazily)."""
    import ray

    fn = _REMOTE.get(num_cpus)
    if fn is None:
        fn = _REMOTE[num_cpus] = ray.remote(num_cpus=num_cpus, max_retries=0)(_ray_chunks)
    return fn


def _crash_types() -> tuple[type[BaseException], ...]:
    """Ray errors that mean the task's process (or node) died, not that ``fn`` raised."""
    from ray import exceptions as rx

    return (rx.WorkerCrashedError, rx.OutOfMemoryError, rx.NodeDiedError, rx.LocalRayletDiedError)


# -- driver side ---------------------------------------------------------------------------------------
class RayPool(Generic[T, R]):
    """Ordered, bounded ``fn(chunk, *args)`` over chunks, as Ray tasks; see the module docstring."""

    def __init__(
        self,
        fn: Callable[..., list[R]],
        args: tuple[Any, ...],
        *,
        on_crash: Callable[[T, str], R],
        spec: RayTasks | None = None,
        name: str = "pool",
    ) -> None:
        self.fn, self.args, self.on_crash = fn, args, on_crash
        self.spec = spec or RayTasks()
        self.name = name
        self.restarts = 0  # tasks lost to a dying worker (a culprit costs two: its chunk, then itself)
        self._holder: list[Any] | None = None  # [ObjectRef of the pickled args]
        self._pending: collections.deque[tuple[list[list[T]], Any]] = collections.deque()  # (chunks, ref)

    def start(self) -> None:
        """Put the arguments into the object store (once); raises when Ray is not connected."""
        if self._holder is not None:
            return
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                f"the {self.name} Ray executor needs a connected cluster: call ray.init() first"
            )
        try:
            payload = dumps_args(self.args, ship_stores=self.spec.ship_stores)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise RuntimeError(f"the {self.name} worker arguments cannot be pickled: {exc}") from exc
        # Nested in a list: Ray passes the reference itself to the task instead of the value, so a
        # worker fetches and unpickles it once (see _worker_args), not once per task.
        self._holder = [ray.put(payload)]

    def close(self) -> None:
        """Cancel the chunks still in flight and release the arguments."""
        if self._pending:
            import ray

            for _, ref in self._pending:
                with contextlib.suppress(Exception):  # a finished or lost task
                    ray.cancel(ref)
            self._pending.clear()
        self._holder = None

    def _submit(self, chunks: list[list[T]]) -> Any:
        self.start()
        return (
            _remote(self.spec.num_cpus)
            .options(name=f"{self.name}-chunk")
            .remote(self.fn, self._holder, chunks)
        )

    def _result(self, ref: Any) -> list[list[R]]:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, Exception):  # fn's own exception, raised as the process pool does
                raise cause from exc
            raise

    def _isolate(self, chunks: list[list[T]]) -> Iterator[list[R]]:
        """Chunks whose worker died: each item in its own task; one that dies again gets on_crash."""
        crashed = _crash_types()
        refs = [[(item, self._submit([[item]])) for item in chunk] for chunk in chunks]
        for chunk_refs in refs:
            out: list[R] = []
            for item, ref in chunk_refs:
                try:
                    out.extend(self._result(ref)[0])
                except crashed as exc:
                    self.restarts += 1
                    out.append(self.on_crash(item, f"worker process died: {type(exc).__name__}: {exc}"[:500]))
            yield out

    def map(self, chunks: Iterable[list[T]], in_flight: int) -> Iterator[list[R]]:
        """Results of every chunk, in order, with at most ``in_flight`` tasks submitted at once (so at
        most ``in_flight`` x ``items_per_task`` items, or ``in_flight`` chunks when they are larger)."""
        crashed = _crash_types()
        source = iter(chunks)
        per_task = max(1, self.spec.items_per_task)
        pending = self._pending
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < max(1, in_flight):
                    group: list[list[T]] = []
                    items = 0
                    for chunk in source:
                        group.append(chunk)
                        items += len(chunk)
                        if items >= per_task:
                            break
                    else:
                        exhausted = True
                    if not group:
                        break
                    pending.append((group, self._submit(group)))
                if not pending:
                    return
                group, ref = pending[0]
                try:
                    results = self._result(ref)
                except crashed:
                    pending.popleft()
                    self.restarts += 1
                    yield from self._isolate(group)
                    continue
                pending.popleft()
                yield from results
        finally:
            self.close()


__all__ = ["RayPool", "RayTasks", "as_ray_tasks", "cluster_cpus", "dumps_args", "is_ray"]
