"""Recovery from run workers that died without reporting their end (SIGKILL, the OOM killer, a lost node).

Such a run stays ``STARTED`` in the instance for good and keeps what it held: its pool slots (``gpu``,
``manifests``, limit 1), its pending claims, and its place under the run queue's limits (one run per
partition). Every later run of the pool then waits forever. Dagster's run monitoring cannot see it: the
default run launcher has no worker health check, and ``dagster job execute`` runs have no launcher at all.

This module closes the gap for run workers on this machine:

1. Every run worker records who it is on its run, as the tag ``asr_distill/run_worker``: host, kernel boot
   id, pid namespace, pid and the process's start time (so a reused pid is not mistaken for the worker).
   :func:`with_run_recovery` wraps the code location's executor to do this first thing in the run worker,
   before any step claims a pool slot, whatever the executor (in-process, multiprocess, k8s).
2. :func:`reap_dead_runs` finds runs whose recorded worker ran in this pid namespace of this boot of this
   host and is gone (no such process, a zombie, or the pid now belongs to another process). It frees
   their pool slots and pending claims; a run still in progress is then marked FAILED (CANCELED if it
   was being canceled) with a message that says what happened. (A run that already ended keeps its
   status: the code server that launched a daemon run marks it failed when its worker dies, but leaves
   its slots to Dagster's ``free_slots_after_run_end_seconds``.) Runs whose worker ran elsewhere, or
   that carry no record, are never touched: liveness cannot be checked from here (see the README's
   recovery section for the Dagster settings that cover multi-host deployments).
3. The reaper runs at the start of every run (in the wrapped executor, before the first claim) and on
   every tick of :data:`run_reaper_sensor` (every :data:`REAPER_INTERVAL_SECONDS` seconds while a daemon
   runs), which also unblocks queued runs that the run queue holds back behind a dead run.

``python -m asr_distill.recovery`` shows the pool slots and who holds them, reaps now, or frees the
slots of one run by hand (see :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.events import DagsterEvent, EngineEventData, JobFailureData, RunFailureReason
from dagster._core.executor.base import Executor
from dagster._utils.error import serializable_error_info_from_exc_info

if TYPE_CHECKING:
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan
    from dagster._core.execution.retries import RetryMode
    from dagster._core.execution.step_dependency_config import StepDependencyConfig

TAG_RUN_WORKER = "asr_distill/run_worker"
REAPER_SENSOR_NAME = "run_reaper_sensor"
REAPER_INTERVAL_SECONDS = 30

# A run in one of these states should have a live worker; FAILED/SUCCESS/CANCELED runs have ended, and
# QUEUED/NOT_STARTED runs have no worker yet.
_IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


# ---------------------------------------------------------------------------------------------------------
# Who a run worker is, and whether it still lives


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@cache
def _node() -> tuple[str, str | None, str | None]:
    """(host name, kernel boot id, pid namespace) of this process: a pid means the same process only
    where all three match. Boot id and namespace are None where /proc is not available (not Linux)."""
    pidns: str | None
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = None
    return socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), pidns


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) of a process from /proc, None if absent."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None or ")" not in raw:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it start after the last ")".
    rest = raw[raw.rindex(")") + 1 :].split()
    return rest[0], rest[19]


@dataclass(frozen=True)
class RunWorker:
    """The process that executes a run (the ``dagster job execute`` process, or a daemon-launched worker)."""

    run_id: str
    host: str
    boot_id: str | None
    pidns: str | None
    pid: int
    start: str | None  # start time in clock ticks since boot (Linux); None where unknown

    @classmethod
    def this_process(cls, run_id: str) -> RunWorker:
        host, boot_id, pidns = _node()
        stat = _proc_stat(os.getpid()) if pidns is not None else None
        return cls(run_id, host, boot_id, pidns, os.getpid(), stat[1] if stat else None)

    def to_tag(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "host": self.host,
                "boot_id": self.boot_id,
                "pidns": self.pidns,
                "pid": self.pid,
                "start": self.start,
            },
            sort_keys=True,
        )

    @classmethod
    def from_tag(cls, value: str | None) -> RunWorker | None:
        if not value:
            return None
        try:
            d = json.loads(value)
            return cls(
                str(d["run_id"]),
                str(d["host"]),
                d.get("boot_id"),
                d.get("pidns"),
                int(d["pid"]),
                d.get("start"),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def is_local(self) -> bool:
        """Whether this process can check the worker's pid: same host, same boot, same pid namespace."""
        return (self.host, self.boot_id, self.pidns) == _node()

    def describe(self) -> str:
        return f"run worker pid {self.pid} on host {self.host}"


def why_gone(worker: RunWorker) -> str | None:
    """None while ``worker`` (local) still runs; otherwise why it is known to be gone."""
    if worker.pidns is not None:
        stat = _proc_stat(worker.pid)
        if stat is None:
            # /proc may hide other users' processes (mount option hidepid): ask the kernel before judging.
            return _kill_probe(worker.pid)
        state, start = stat
        if worker.start is not None and start != worker.start:
            return "its pid now belongs to another process"
        if state in ("Z", "X"):
            return "the process has exited (a zombie not yet reaped by its parent)"
        return None
    return _kill_probe(worker.pid)


def _kill_probe(pid: int) -> str | None:
    """Signal 0 checks that a pid exists without touching the process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "no such process"
    except PermissionError:
        return None  # exists, owned by another user
    return None


# ---------------------------------------------------------------------------------------------------------
# The reaper


@dataclass(frozen=True)
class ReapedRun:
    """A run that the reaper ended, and what it freed."""

    run_id: str
    job_name: str
    previous_status: str
    new_status: str
    worker: RunWorker
    cause: str
    freed_slots: list[tuple[str, str]] = field(default_factory=list)  # (pool, step key)
    freed_pending: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""


def _holdings(instance: dg.DagsterInstance) -> dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """run id -> (claimed slots, pending claims), each as (pool, step key), over every pool."""
    out: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return out
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        for slot in info.claimed_slots:
            out.setdefault(slot.run_id, ([], []))[0].append((pool, slot.step_key))
        claimed = {(slot.run_id, slot.step_key) for slot in info.claimed_slots}
        for step in info.pending_steps:  # a claimed step keeps its (assigned) row here: count it once
            if (step.run_id, step.step_key) not in claimed:
                out.setdefault(step.run_id, ([], []))[1].append((pool, step.step_key))
    return out


def _fmt(items: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{pool} ({step})" for pool, step in items) or "none"


def _local_worker(run: dg.DagsterRun) -> RunWorker | None:
    worker = RunWorker.from_tag(run.tags.get(TAG_RUN_WORKER))
    # A tag copied from a parent run (re-execution) names the parent's worker, not this run's.
    if worker is None or worker.run_id != run.run_id or not worker.is_local():
        return None
    return worker


def reap_dead_runs(
    instance: dg.DagsterInstance,
    *,
    seen_by: str = "asr_distill recovery",
    exclude_run_id: str | None = None,
    is_gone: Callable[[RunWorker], str | None] = why_gone,
) -> list[ReapedRun]:
    """Free what runs whose recorded worker ran here and is gone still hold; end those still in progress.

    Two cases: a run still in progress (nothing reported its end: ``dagster job execute`` killed, or the
    code server that launched it died too) is marked FAILED (CANCELED if canceling); a run that already
    ended (the code server that launched the worker reports a dead worker's run failed, but does not free
    its slots) keeps its status and gets an engine event. Both get their pool slots and pending claims freed.

    ``seen_by`` names who noticed (a run id, the sensor) in the messages. Safe to call from several
    processes at once: a run is re-read just before it is ended, and freeing twice frees nothing.
    """
    storage = instance.event_log_storage
    holdings = _holdings(instance)
    candidates: list[tuple[dg.DagsterRun, RunWorker, str]] = []
    in_progress = instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS))
    ended_holders = [
        run
        for run in (instance.get_runs(filters=dg.RunsFilter(run_ids=sorted(holdings))) if holdings else [])
        if run.is_finished
    ]
    for run in [*in_progress, *ended_holders]:
        if run.run_id == exclude_run_id:
            continue
        worker = _local_worker(run)
        cause = is_gone(worker) if worker is not None else None
        if worker is not None and cause is not None:
            candidates.append((run, worker, cause))

    reaped: list[ReapedRun] = []
    for run, worker, cause in candidates:
        current = instance.get_run_by_id(run.run_id)
        if current is None:
            continue
        was_ended = run.is_finished
        if not was_ended and current.status not in _IN_PROGRESS:
            continue  # ended meanwhile (it reported after all, or another reaper got there first)
        slots, pending = holdings.get(run.run_id, ([], []))
        if storage.supports_global_concurrency_limits:
            storage.free_concurrency_slots_for_run(run.run_id)
        freed = f"Freed its pool slots: {_fmt(slots)}; pending pool claims: {_fmt(pending)}."
        if was_ended:
            new_status = current.status.value
            message = (
                f"{worker.describe()} is gone ({cause}) and the run ended ({new_status}) without releasing "
                f"its pool slots; freed by {seen_by}: pool slots {_fmt(slots)}; pending pool claims "
                f"{_fmt(pending)}."
            )
            instance.report_engine_event(message, current)
        else:
            canceling = current.status == dg.DagsterRunStatus.CANCELING
            new_status = "CANCELED" if canceling else "FAILURE"
            message = (
                f"{worker.describe()} is gone ({cause}): the run was killed without reporting its end "
                f"(SIGKILL, out of memory or a lost machine) while {current.status.value}; marked "
                f"{'canceled' if canceling else 'failed'} by {seen_by}. {freed}"
            )
            if canceling:
                instance.report_run_canceled(current, message)
            else:
                instance.report_run_failed(
                    current,
                    message,
                    JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
                )
        reaped.append(
            ReapedRun(
                run_id=run.run_id,
                job_name=run.job_name,
                previous_status=current.status.value,
                new_status=new_status,
                worker=worker,
                cause=cause,
                freed_slots=list(slots),
                freed_pending=list(pending),
                message=message,
            )
        )
    return reaped


# ---------------------------------------------------------------------------------------------------------
# Hook 1: the executor records its worker and reaps before any step claims a slot


class RecoveringExecutor(Executor):
    """Delegates to ``inner``; first tags the run with its worker and reaps dead runs of this machine."""

    def __init__(self, inner: Executor):
        self._inner = inner

    @property
    def retries(self) -> RetryMode:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self._inner.step_dependency_config

    def __getattr__(self, name: str) -> Any:  # executor-specific attributes (e.g. marker_to_close)
        if name == "_inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        yield from _record_and_reap(plan_context)
        yield from self._inner.execute(plan_context, execution_plan)


def _record_and_reap(plan_context: PlanOrchestrationContext) -> Iterator[DagsterEvent]:
    instance, run_id = plan_context.instance, plan_context.dagster_run.run_id
    try:
        worker = RunWorker.this_process(run_id)
        instance.add_run_tags(run_id, {TAG_RUN_WORKER: worker.to_tag()})
        reaped = reap_dead_runs(instance, seen_by=f"asr_distill recovery at the start of run {run_id}")
    except Exception:  # recovery must never stop the run it runs in
        yield DagsterEvent.engine_event(
            plan_context,
            "asr_distill recovery could not check for dead runs (this run goes on)",
            EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
        )
        return
    for r in reaped:
        # A warning in this run's log (shown by `make demo` and the CLI), with the details as an engine event.
        plan_context.log.warning(f"recovered run {r.run_id} ({r.job_name}): {r.message}")
        yield DagsterEvent.engine_event(
            plan_context,
            f"Recovered run {r.run_id} ({r.job_name}): {r.message}",
            EngineEventData(
                metadata={
                    "dead_run_id": r.run_id,
                    "dead_worker_pid": r.worker.pid,
                    "freed_slots": dg.MetadataValue.json([list(x) for x in r.freed_slots]),
                    "freed_pending_claims": dg.MetadataValue.json([list(x) for x in r.freed_pending]),
                }
            ),
        )


def with_run_recovery(executor_def: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """``executor_def`` (same name, config and requirements) whose executor runs :class:`RecoveringExecutor`."""
    inner_fn = executor_def.executor_creation_fn
    if inner_fn is None:
        raise ValueError(f"executor {executor_def.name!r} has no creation function")
    wrapped = dg.ExecutorDefinition(
        name=executor_def.name,
        config_schema=executor_def.config_schema,
        requirements=executor_def.get_requirements,
        executor_creation_fn=lambda init_context: RecoveringExecutor(inner_fn(init_context)),
        description=executor_def.description,
    )
    wrapped._asr_distill_inner = executor_def  # type: ignore[attr-defined]
    return wrapped


def unwrap_executor(executor_def: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """The executor definition that :func:`with_run_recovery` wrapped (itself if not wrapped)."""
    return getattr(executor_def, "_asr_distill_inner", executor_def)


# ---------------------------------------------------------------------------------------------------------
# Hook 2: a sensor that reaps while a daemon runs (also for queued runs held back behind a dead run)


def build_run_reaper_sensor(interval_seconds: int = REAPER_INTERVAL_SECONDS) -> dg.SensorDefinition:
    @dg.sensor(
        name=REAPER_SENSOR_NAME,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Every {interval_seconds} s: marks failed the runs whose run worker on this machine was killed "
            "without reporting (SIGKILL, out of memory) and frees their pool slots and pending claims. "
            "Launches nothing."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        reaped = reap_dead_runs(context.instance, seen_by=f"asr_distill recovery ({REAPER_SENSOR_NAME})")
        for r in reaped:
            context.log.warning(f"run {r.run_id} ({r.job_name}): {r.message}")
        return dg.SkipReason(
            f"recovered {len(reaped)} dead run(s): {', '.join(r.run_id for r in reaped)}"
            if reaped
            else "no dead run on this machine"
        )

    return _sensor


run_reaper_sensor = build_run_reaper_sensor()


# ---------------------------------------------------------------------------------------------------------
# Operator commands: python -m asr_distill.recovery {slots,reap,free RUN_ID}


def _slots(instance: dg.DagsterInstance) -> int:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        print("this instance's storage has no pool slots")
        return 0
    pools = sorted(storage.get_concurrency_keys())
    if not pools:
        print("no pool has been used yet")
    for pool in pools:
        info = storage.get_concurrency_info(pool)
        print(f"pool {pool}: {len(info.claimed_slots)} of {info.slot_count} slots claimed")
        rows = [("holds", s.run_id, s.step_key) for s in info.claimed_slots]
        claimed = {(s.run_id, s.step_key) for s in info.claimed_slots}
        rows += [
            ("assigned" if p.assigned_timestamp else "waits", p.run_id, p.step_key)
            for p in info.pending_steps
            if (p.run_id, p.step_key) not in claimed  # a claimed step keeps its assigned row
        ]
        for what, run_id, step in rows:
            run = instance.get_run_by_id(run_id)
            status = run.status.value if run else "no such run"
            worker = RunWorker.from_tag(run.tags.get(TAG_RUN_WORKER)) if run else None
            if worker is None or worker.run_id != run_id:
                where = "worker unknown"
            elif not worker.is_local():
                where = f"{worker.describe()} (another machine: not checked)"
            else:
                gone = why_gone(worker)
                where = f"{worker.describe()}: " + ("alive" if gone is None else f"GONE ({gone})")
            print(f"  {what:<8} run {run_id} step {step} [{status}] {where}")
    return 0


def _reap(instance: dg.DagsterInstance) -> int:
    reaped = reap_dead_runs(instance, seen_by="asr_distill recovery (operator command)")
    for r in reaped:
        print(f"run {r.run_id} ({r.job_name}): {r.message}")
    print(f"{len(reaped)} dead run(s) recovered")
    return 0


def _free(instance: dg.DagsterInstance, run_id: str, mark_failed: bool) -> int:
    run = instance.get_run_by_id(run_id)
    if run is None:
        print(f"no run {run_id}", file=sys.stderr)
        return 1
    held = _holdings(instance).get(run_id, ([], []))
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    print(f"run {run_id} [{run.status.value}]: freed slots {_fmt(held[0])}; pending claims {_fmt(held[1])}")
    if mark_failed and run.status in _IN_PROGRESS:
        instance.report_run_failed(
            run,
            "marked failed by an operator (python -m asr_distill.recovery free --mark-failed); "
            f"its pool slots were freed: {_fmt(held[0])}",
            JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
        )
        print(f"run {run_id} marked failed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asr_distill.recovery",
        description="Pool slots and dead runs of the Dagster instance at $DAGSTER_HOME.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("slots", help="every pool: who holds or waits for a slot, and whether its worker lives")
    sub.add_parser("reap", help="fail the runs of this machine whose worker is gone and free their slots")
    free = sub.add_parser("free", help="free the slots and pending claims of one run (any machine)")
    free.add_argument("run_id")
    free.add_argument("--mark-failed", action="store_true", help="also mark the run failed if in progress")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        if args.command == "slots":
            return _slots(instance)
        if args.command == "reap":
            return _reap(instance)
        return _free(instance, args.run_id, args.mark_failed)


if __name__ == "__main__":
    raise SystemExit(main())
