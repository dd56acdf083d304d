"""Label shards on a pool of teacher actors on a Ray cluster the caller has already connected to.

Work unit = one shard. The driver keeps at most ``max_in_flight_per_actor`` shards queued per actor
(default 2: one running, one waiting, so an actor never idles while the driver handles a result) and
hands each finished shard's labels table to ``on_result`` right away: the caller writes it (atomically,
e.g. Parquet to the lake) and the pool keeps no finished shard in memory.

Failures:

* an actor process that dies (OOM, segfault in a native library, a killed PID, a lost node) is
  restarted by Ray (``max_restarts``) and every shard it had in flight is retried, preferably on
  another actor. Retrying is safe because a shard's output is one table the caller writes atomically:
  a shard is reported to ``on_result`` exactly once, so every sample ends labelled exactly once;
* any other error of a shard (a transient read error, ...) is retried as well, up to
  ``shard_attempts`` tries in all; a malformed shard (:class:`ShardError`) is not retried;
* a shard that still fails is reported to ``on_failure`` and in the summary, and the run goes on;
* an actor that exceeds ``shard_timeout_s`` on one shard is killed (and restarted), its shards retried.

Skipping: the caller passes ``done`` (shard ids, or a predicate) for shards already labelled under
this pool's :attr:`LabelPool.fingerprint`; a new fingerprint means a new labels version, so nothing is
skipped for it. ``ray.init`` is the caller's job (a ``RayResource``, a test's local cluster, ...).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import ray
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from asr_distill.stages.labels.core import ShardError, ShardStats, label_shard
from asr_distill.stages.labels.inputs import ShardReader
from asr_distill.stages.labels.quality import QualityConfig
from asr_distill.teachers.base import TeacherConfig, TeacherLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolConfig:
    """Size and fault tolerance of a :class:`LabelPool`."""

    num_actors: int = 1
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor; fractional shares a GPU (size the engine's memory to match)
    batch_size: int = 8  # clips per teacher call (vLLM wants large batches: 64 or a whole shard)
    max_in_flight_per_actor: int = 2
    max_restarts: int = -1  # Ray restarts of one actor process (-1: unlimited, as Ray Data does)
    shard_attempts: int = 3  # tries per shard, all causes together
    shard_timeout_s: float | None = None  # kill (and restart) an actor stuck this long on one shard
    start_timeout_s: float = 900.0  # model load (a large vLLM model takes minutes)
    actor_options: Mapping[str, Any] = field(default_factory=dict)  # extra .options(...), e.g. runtime_env

    def __post_init__(self) -> None:
        if self.num_actors < 1 or self.max_in_flight_per_actor < 1 or self.shard_attempts < 1:
            raise ValueError("num_actors, max_in_flight_per_actor and shard_attempts must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


@dataclass(frozen=True)
class ShardResult:
    """A labelled shard, handed to ``on_result`` (the table has one row per sample of the shard)."""

    shard_id: str
    table: pa.Table
    fingerprint: str
    stats: ShardStats
    attempts: int
    actor_pid: int
    wall_s: float


@dataclass(frozen=True)
class ShardFailure:
    """A shard that could not be labelled after ``attempts`` tries."""

    shard_id: str
    attempts: int
    kind: str  # "actor_died" | "task_error" | "malformed_shard" | "fingerprint_changed" | "no_live_actors"
    error: str


@dataclass
class RunSummary:
    fingerprint: str
    shards_seen: int = 0
    shards_skipped: int = 0
    shards_labelled: int = 0
    shards_failed: int = 0
    retries: int = 0
    actor_failures: int = 0  # shard tasks lost to an actor process dying (or being restarted)
    rows: int = 0
    labelled: int = 0
    errors: int = 0
    flagged: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0
    wall_s: float = 0.0
    failures: list[ShardFailure] = field(default_factory=list)

    @property
    def rtf(self) -> float | None:
        """Real-time factor: seconds of audio labelled per wall second (higher is faster)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rtf"] = self.rtf
        return d


class _LabelActor:
    """Runs in a Ray worker: loads the teacher once, labels shard after shard."""

    def __init__(self, teacher_config: TeacherConfig, quality: QualityConfig, batch_size: int) -> None:
        self._teacher = teacher_config.build()
        self._info = self._teacher.describe()
        self._quality = quality
        self._batch_size = batch_size
        self._shard: str | None = None
        self._samples_done = 0
        self._shards_done = 0

    @ray.method(concurrency_group="control")
    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), **self._info}

    @ray.method(concurrency_group="control")
    def status(self) -> dict[str, Any]:
        """Answered even while a shard is being labelled (separate concurrency group)."""
        return {
            "pid": os.getpid(),
            "shard": self._shard,
            "samples_done": self._samples_done,
            "shards_done": self._shards_done,
        }

    def label(self, shard_id: str, reader: ShardReader) -> tuple[pa.Table, dict[str, Any]]:
        t0 = time.perf_counter()
        self._shard, self._samples_done = shard_id, 0
        try:
            table = label_shard(
                self._teacher,
                shard_id,
                reader(shard_id),
                quality=self._quality,
                batch_size=self._batch_size,
                teacher_info=self._info,
                progress=self._progress,
            )
        finally:
            self._shard = None
        self._shards_done += 1
        meta = {
            "pid": os.getpid(),
            "wall_s": time.perf_counter() - t0,
            "fingerprint": self._info["fingerprint"],
        }
        return table, meta

    def _progress(self, n: int) -> None:
        self._samples_done = n


_REMOTE_ACTOR: Any = None


def _remote_actor_class() -> Any:
    global _REMOTE_ACTOR
    if _REMOTE_ACTOR is None:
        _REMOTE_ACTOR = ray.remote(concurrency_groups={"control": 1})(_LabelActor)
    return _REMOTE_ACTOR


@dataclass
class _Slot:
    """Driver-side view of one actor."""

    handle: Any
    index: int
    in_flight: int = 0
    alive: bool = True  # False once Ray reports it dead for good
    healthy: bool = True  # False from a failure until a status probe answers (Ray restarts it meanwhile)
    probe: Any = None  # outstanding status() ref while unhealthy
    next_probe: float = 0.0
    backoff: float = 0.25
    busy_since: float | None = None  # start of the shard at the head of its queue
    queue: collections.deque = field(default_factory=collections.deque)  # refs in submission order

    @property
    def usable(self) -> bool:
        return self.alive and self.healthy


class LabelPool:
    """A pool of teacher actors. Use as a context manager, or call :meth:`start` and :meth:`close`."""

    def __init__(
        self,
        teacher: TeacherConfig,
        config: PoolConfig | None = None,
        quality: QualityConfig | None = None,
    ) -> None:
        self.teacher_config = teacher
        self.config = config or PoolConfig()
        self.quality = quality or QualityConfig()
        self._slots: list[_Slot] = []
        self.teacher_info: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> LabelPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fingerprint(self) -> str:
        if not self.teacher_info:
            raise RuntimeError("the pool is not started")
        return str(self.teacher_info["fingerprint"])

    def start(self) -> LabelPool:
        """Start the actors, wait until every one has loaded its teacher, check they agree."""
        if self._slots:
            return self
        if not ray.is_initialized():
            raise RuntimeError("connect to a Ray cluster first (ray.init(...) is the caller's job)")
        cfg = self.config
        cls = _remote_actor_class()
        options = {
            "num_cpus": cfg.num_cpus,
            "num_gpus": cfg.num_gpus,
            "max_restarts": cfg.max_restarts,
            "max_task_retries": 0,  # the driver retries shards itself (counted, on another actor)
            **dict(cfg.actor_options),
        }
        self._warn_if_resources_short()
        self._slots = [
            _Slot(cls.options(**options).remote(self.teacher_config, self.quality, cfg.batch_size), i)
            for i in range(cfg.num_actors)
        ]
        try:
            infos = ray.get([s.handle.info.remote() for s in self._slots], timeout=cfg.start_timeout_s)
        except Exception as exc:
            self.close()
            raise TeacherLoadError(f"teacher actors failed to start: {_root_cause(exc)}") from exc
        prints = {i["fingerprint"] for i in infos}
        if len(prints) != 1:
            self.close()
            raise TeacherLoadError(f"teacher actors disagree on the teacher fingerprint: {sorted(prints)}")
        self.teacher_info = {k: v for k, v in infos[0].items() if k != "pid"}
        log.info("label pool: %d actors, teacher %s", len(self._slots), self.fingerprint[:16])
        return self

    def _warn_if_resources_short(self) -> None:
        cfg = self.config
        free = ray.available_resources()
        need = {"CPU": cfg.num_cpus * cfg.num_actors, "GPU": cfg.num_gpus * cfg.num_actors}
        short = {k: (v, free.get(k, 0.0)) for k, v in need.items() if v > 0 and free.get(k, 0.0) + 1e-9 < v}
        if short:
            log.warning(
                "label pool needs %s but the cluster has %s free: actors wait for resources (or an autoscaler)",
                {k: v for k, (v, _) in short.items()},
                {k: f for k, (_, f) in short.items()},
            )

    def close(self) -> None:
        for s in self._slots:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(s.handle, no_restart=True)
        self._slots = []

    def actor_pids(self) -> list[int]:
        """PIDs of the actors that answer now (an actor Ray is restarting does not)."""
        return [st["pid"] for st in self.actor_status() if st["state"] == "alive"]

    def actor_status(self) -> list[dict[str, Any]]:
        """Per actor: ``state`` (alive | restarting | dead) and, when alive, ``pid``, ``shard``,
        ``samples_done``, ``shards_done`` (answered even while it labels a shard)."""
        refs = [(s, s.handle.status.remote()) for s in self._slots]
        out = []
        for slot, ref in refs:
            try:
                st = {"state": "alive", **ray.get(ref, timeout=60)}
            except ActorDiedError:
                st = {"state": "dead"}
            except Exception:  # ActorUnavailableError while Ray restarts it, or a timeout
                st = {"state": "restarting"}
            out.append({"actor": slot.index, **st})
        return out

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Block until no actor is restarting (dead ones are left out); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while any(st["state"] == "restarting" for st in self.actor_status()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"label pool actors still restarting after {timeout_s:.0f} s")
            time.sleep(0.2)

    # -- the run -------------------------------------------------------------------------------------
    def run(
        self,
        shards: Iterable[str],
        reader: ShardReader,
        on_result: Callable[[ShardResult], None],
        *,
        done: Collection[str] | Callable[[str], bool] | None = None,
        on_failure: Callable[[ShardFailure], None] | None = None,
    ) -> RunSummary:
        """Label every shard not ``done``; each finished shard goes to ``on_result`` once, in completion order.

        ``shards`` is consumed lazily (duplicates ignored). An exception raised by ``on_result`` (say, the
        lake write failed) ends the run and propagates: shards not written are simply not done yet.
        """
        self.start()
        run = _Run(self, shards, reader, on_result, done, on_failure)
        for st in self.actor_status():  # an actor still restarting from an earlier run gets probed first
            slot = self._slots[st["actor"]]
            slot.probe, slot.healthy = None, True
            if st["state"] == "dead":
                slot.alive = False
            elif st["state"] == "restarting":
                run.mark_unhealthy(slot)
        return run.execute()


class _Run:
    """State of one :meth:`LabelPool.run`: the shard queue, in-flight refs and actor health."""

    def __init__(
        self,
        pool: LabelPool,
        shards: Iterable[str],
        reader: ShardReader,
        on_result: Callable[[ShardResult], None],
        done: Collection[str] | Callable[[str], bool] | None,
        on_failure: Callable[[ShardFailure], None] | None,
    ) -> None:
        self.pool, self.cfg, self.slots = pool, pool.config, pool._slots
        self.fingerprint = pool.fingerprint
        self.reader, self.on_result, self.on_failure = reader, on_result, on_failure
        done_set = frozenset(() if done is None or callable(done) else done)
        self.is_done: Callable[[str], bool] = done if callable(done) else done_set.__contains__
        self.summary = RunSummary(fingerprint=self.fingerprint)
        self.source = iter(shards)
        self.seen: set[str] = set()
        self.retry: collections.deque[str] = collections.deque()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.avoid: dict[str, int] = {}  # shard -> index of the actor it last failed on
        self.inflight: dict[Any, tuple[str, _Slot]] = {}
        self.probes: dict[Any, _Slot] = {}

    # -- shard queue ---------------------------------------------------------------------------------
    def next_shard(self) -> str | None:
        if self.retry:
            return self.retry.popleft()
        for sid in self.source:
            if sid in self.seen:
                continue
            self.seen.add(sid)
            self.summary.shards_seen += 1
            if self.is_done(sid):
                self.summary.shards_skipped += 1
                continue
            return sid
        return None

    def fail(self, sid: str, kind: str, error: str) -> None:
        failure = ShardFailure(sid, self.attempts[sid], kind, error)
        self.summary.shards_failed += 1
        self.summary.failures.append(failure)
        log.error("shard %s failed after %d attempt(s): %s: %s", sid, self.attempts[sid], kind, error)
        if self.on_failure is not None:
            self.on_failure(failure)

    def submit(self, sid: str) -> bool:
        free = [s for s in self.slots if s.usable and s.in_flight < self.cfg.max_in_flight_per_actor]
        if not free:
            return False
        preferred = [s for s in free if s.index != self.avoid.get(sid)] or free
        slot = min(preferred, key=lambda s: (s.in_flight, s.index))
        self.attempts[sid] += 1
        ref = slot.handle.label.remote(sid, self.reader)
        if not slot.queue:
            slot.busy_since = time.perf_counter()
        slot.queue.append(ref)
        slot.in_flight += 1
        self.inflight[ref] = (sid, slot)
        return True

    def settle(self, ref: Any, slot: _Slot) -> None:
        slot.in_flight -= 1
        if ref in slot.queue:
            if slot.queue[0] is ref:
                slot.busy_since = time.perf_counter()
            slot.queue.remove(ref)
        if not slot.queue:
            slot.busy_since = None

    # -- actor health --------------------------------------------------------------------------------
    def mark_unhealthy(self, slot: _Slot) -> None:
        if slot.healthy:
            slot.healthy, slot.backoff = False, 0.25
            slot.next_probe = time.perf_counter()

    def launch_probes(self) -> None:
        now = time.perf_counter()
        for s in self.slots:
            if s.alive and not s.healthy and s.probe is None and now >= s.next_probe:
                s.probe = s.handle.status.remote()
                self.probes[s.probe] = s

    def settle_probe(self, ref: Any) -> None:
        slot = self.probes.pop(ref)
        slot.probe = None
        try:
            ray.get(ref)
        except ActorDiedError:  # dead for good: restarts used up, or its restart failed
            slot.alive = False
            log.error("actor %d is dead for good", slot.index)
        except Exception:  # still restarting
            slot.backoff = min(slot.backoff * 2, 2.0)
            slot.next_probe = time.perf_counter() + slot.backoff
        else:
            slot.healthy = True
            log.info("actor %d is back", slot.index)

    def wait_timeout(self) -> float | None:
        waits = []
        now = time.perf_counter()
        for s in self.slots:
            if s.alive and not s.healthy and s.probe is None:
                waits.append(max(0.0, s.next_probe - now))
        if self.cfg.shard_timeout_s is not None:
            waits.append(min(5.0, self.cfg.shard_timeout_s / 4))
        return min(waits) if waits else None

    def kill_stuck(self) -> None:
        timeout = self.cfg.shard_timeout_s
        if timeout is None:
            return
        now = time.perf_counter()
        for s in self.slots:
            if s.usable and s.busy_since is not None and now - s.busy_since > timeout:
                log.warning("actor %d stuck on a shard for more than %.0f s: killing it", s.index, timeout)
                ray.kill(s.handle, no_restart=False)
                s.busy_since = None
                self.mark_unhealthy(s)

    # -- results -------------------------------------------------------------------------------------
    def handle_error(self, sid: str, slot: _Slot, exc: BaseException) -> None:
        if isinstance(exc, RayActorError):  # died (ActorDiedError) or restarting (ActorUnavailableError)
            kind, retryable = "actor_died", True
            self.summary.actor_failures += 1
            self.mark_unhealthy(slot)
        elif isinstance(exc, ShardError) or isinstance(getattr(exc, "cause", None), ShardError):
            kind, retryable = "malformed_shard", False
        else:
            kind, retryable = "task_error", True
        self.avoid[sid] = slot.index
        if retryable and self.attempts[sid] < self.cfg.shard_attempts:
            self.summary.retries += 1
            log.warning("shard %s: %s on actor %d, retrying: %s", sid, kind, slot.index, _root_cause(exc))
            self.retry.append(sid)
        else:
            self.fail(sid, kind, _root_cause(exc))

    def handle_result(self, sid: str, table: pa.Table, meta: dict[str, Any]) -> None:
        if meta["fingerprint"] != self.fingerprint:
            self.fail(
                sid, "fingerprint_changed", f"actor pid {meta['pid']} now reports {meta['fingerprint']}"
            )
            return
        stats = ShardStats.of(table)
        self.on_result(
            ShardResult(sid, table, self.fingerprint, stats, self.attempts[sid], meta["pid"], meta["wall_s"])
        )
        s = self.summary
        s.shards_labelled += 1
        s.rows += stats.rows
        s.labelled += stats.labelled
        s.errors += stats.errors
        s.flagged += stats.flagged
        s.audio_s += stats.audio_s
        s.decode_s += stats.decode_s

    # -- loop ----------------------------------------------------------------------------------------
    def execute(self) -> RunSummary:
        t0 = time.perf_counter()
        pending: str | None = None
        while True:
            self.launch_probes()
            while True:  # fill every free, healthy slot
                if pending is None:
                    pending = self.next_shard()
                if pending is None or not self.submit(pending):
                    break
                pending = None
            if not self.inflight and pending is None:
                break  # all done
            if not any(s.alive for s in self.slots):
                for sid, _ in list(self.inflight.values()):  # cannot happen: kept for safety
                    self.fail(sid, "no_live_actors", "every actor of the pool died for good")
                self.inflight.clear()
                while pending is not None:
                    self.fail(pending, "no_live_actors", "every actor of the pool died for good")
                    pending = self.next_shard()
                break
            refs = [*self.inflight, *self.probes]
            timeout = self.wait_timeout()
            if not refs:
                time.sleep(timeout if timeout is not None else 0.1)
                continue
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if not ready:
                self.kill_stuck()
                continue
            ref = ready[0]
            if ref in self.probes:
                self.settle_probe(ref)
                continue
            sid, slot = self.inflight.pop(ref)
            self.settle(ref, slot)
            try:
                table, meta = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - classified in handle_error
                self.handle_error(sid, slot, exc)
                continue
            self.handle_result(sid, table, meta)
            del table
        self.summary.wall_s = time.perf_counter() - t0
        self.summary.failures.sort(key=lambda f: f.shard_id)
        return self.summary


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^[\w.]*(?:Error|Exception|Interrupt)\b.*:")


def _root_cause(exc: BaseException) -> str:
    """One readable line: the innermost ``SomeError: message`` in Ray's (often multi-line) error text."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"[:2000]
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    inner = [ln for ln in lines if _ERROR_LINE.match(ln)]
    if inner:
        return inner[-1][:2000]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:2000]


def iter_shard_ids(ids: Iterable[str]) -> Iterator[str]:
    """Sorted, de-duplicated shard ids (a deterministic submission order)."""
    yield from sorted(set(ids))
