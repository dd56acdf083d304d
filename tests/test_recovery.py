"""Recovery from run workers killed without reporting (issue 17, part 1): ``asr_distill.recovery``.

The end-to-end test kills a real ``dagster job execute`` process (process group, SIGKILL) while its step
holds the only slot of the ``gpu`` pool, then runs the job again: without recovery the second run waits
for the slot forever. The unit tests drive the reaper on a real SQLite instance with real (dead, zombie,
live, reused) processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.utils import make_new_run_id

from asr_distill.recovery import (
    REAPER_SENSOR_NAME,
    TAG_RUN_WORKER,
    RunWorker,
    _node,
    _proc_stat,
    reap_dead_runs,
    run_reaper_sensor,
    unwrap_executor,
    with_run_recovery,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
POOL, STEP = "gpu", "teacher_labels"


@pytest.fixture()
def pool_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(
        temp_dir=str(home), overrides={"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}
    ) as inst:
        inst.event_log_storage.set_concurrency_slots(POOL, 1)
        yield inst


class Proc:
    """A real child process; its :class:`RunWorker` record as a run worker would write it."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen(["sleep", "600"])

    def worker(self, run_id: str) -> RunWorker:
        host, boot_id, pidns = _node()
        stat = _proc_stat(self.popen.pid)
        assert stat is not None
        return RunWorker(run_id, host, boot_id, pidns, self.popen.pid, stat[1])

    def kill(self, reap: bool = True) -> None:
        self.popen.kill()
        if reap:
            self.popen.wait()
        else:  # a zombie until its parent (this test) waits for it
            deadline = time.monotonic() + 30
            while (_proc_stat(self.popen.pid) or ("Z",))[0] != "Z" and time.monotonic() < deadline:
                time.sleep(0.05)


def _add_run(instance: dg.DagsterInstance, tag: str | None, status=dg.DagsterRunStatus.STARTED) -> str:
    run_id = make_new_run_id()
    instance.add_run(
        dg.DagsterRun(
            job_name="labels_job", run_id=run_id, status=status, tags={TAG_RUN_WORKER: tag} if tag else {}
        )
    )
    return run_id


def _claim(instance: dg.DagsterInstance, run_id: str) -> bool:
    return instance.event_log_storage.claim_concurrency_slot(POOL, run_id, STEP, 0).is_claimed


def _end_message(instance: dg.DagsterInstance, run_id: str, event: DagsterEventType) -> str:
    records = instance.get_records_for_run(run_id, of_type=event).records
    assert records, f"no {event} for {run_id}"
    return records[-1].event_log_entry.dagster_event.message or ""


def test_reaper_frees_slots_and_claims_of_dead_runs_only(pool_instance):
    inst = pool_instance
    dead, zombie, live = Proc(), Proc(), Proc()
    try:
        holder = make_new_run_id()
        waiter = make_new_run_id()
        inst.add_run(dg.DagsterRun(job_name="labels_job", run_id=holder, status=dg.DagsterRunStatus.STARTED,
                                   tags={TAG_RUN_WORKER: dead.worker(holder).to_tag()}))  # fmt: skip
        inst.add_run(dg.DagsterRun(job_name="labels_job", run_id=waiter, status=dg.DagsterRunStatus.STARTED,
                                   tags={TAG_RUN_WORKER: zombie.worker(waiter).to_tag()}))  # fmt: skip
        alive = make_new_run_id()
        inst.add_run(dg.DagsterRun(job_name="labels_job", run_id=alive, status=dg.DagsterRunStatus.STARTED,
                                   tags={TAG_RUN_WORKER: live.worker(alive).to_tag()}))  # fmt: skip
        assert _claim(inst, holder)
        assert not _claim(inst, waiter)  # a pending claim, queued first
        assert not _claim(inst, alive)
        dead.kill()
        zombie.kill(reap=False)

        # Never touched: a worker on another machine, a run without a record, a record copied from a parent
        # run (re-execution) that names the parent's dead worker.
        other = _add_run(inst, None)
        inst.add_run_tags(
            other, {TAG_RUN_WORKER: RunWorker(other, "other-host", "b", "1", dead.popen.pid, "1").to_tag()}
        )
        untagged = _add_run(inst, None)
        copied = _add_run(inst, RunWorker(holder, *_node(), dead.popen.pid, "1").to_tag())

        reaped = reap_dead_runs(inst, seen_by="the test")
        assert sorted(r.run_id for r in reaped) == sorted([holder, waiter])
        host = _node()[0]
        for run_id, proc, slots, pending in [
            (holder, dead, f"{POOL} ({STEP})", "none"),
            (waiter, zombie, "none", f"{POOL} ({STEP})"),
        ]:
            run = inst.get_run_by_id(run_id)
            assert run.status == dg.DagsterRunStatus.FAILURE
            assert run.tags["dagster/failure_reason"] == "UNEXPECTED_TERMINATION"
            msg = _end_message(inst, run_id, DagsterEventType.RUN_FAILURE)
            assert f"run worker pid {proc.popen.pid} on host {host} is gone" in msg
            assert "killed without reporting its end" in msg and "marked failed by the test" in msg
            assert f"Freed its pool slots: {slots}; pending pool claims: {pending}." in msg
        assert "zombie" in _end_message(inst, waiter, DagsterEventType.RUN_FAILURE)

        for run_id in (alive, other, untagged, copied):
            assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        info = inst.event_log_storage.get_concurrency_info(POOL)
        assert {s.run_id for s in info.claimed_slots} <= {alive}
        assert {p.run_id for p in info.pending_steps} <= {alive}
        assert _claim(inst, alive)  # the live run gets the slot the dead one held
        assert reap_dead_runs(inst) == []  # nothing left to do, and nothing done twice
    finally:
        for p in (dead, zombie, live):
            p.popen.kill()
            p.popen.wait()


def test_reused_pid_counts_as_gone_and_canceling_runs_end_canceled(pool_instance):
    inst = pool_instance
    host, boot_id, pidns = _node()
    me = RunWorker.this_process("x")
    run_id = _add_run(inst, None, status=dg.DagsterRunStatus.CANCELING)
    # This very process, but with another start time: the recorded worker died and its pid was reused.
    reused = RunWorker(run_id, host, boot_id, pidns, os.getpid(), str(int(me.start or 0) + 1))
    inst.add_run_tags(run_id, {TAG_RUN_WORKER: reused.to_tag()})
    assert _claim(inst, run_id)
    [r] = reap_dead_runs(inst)
    assert r.new_status == "CANCELED" and "another process" in r.cause
    assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
    assert "marked canceled" in _end_message(inst, run_id, DagsterEventType.RUN_CANCELED)
    assert inst.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
    # The same record with the right start time is this live process: left alone.
    alive = _add_run(inst, None)
    inst.add_run_tags(alive, {TAG_RUN_WORKER: RunWorker.this_process(alive).to_tag()})
    assert reap_dead_runs(inst) == []


def test_ended_run_of_a_dead_worker_gets_its_slots_freed(pool_instance):
    """What the code server does when a daemon-launched run worker dies: it marks the run failed at once but
    leaves its slots held (Dagster frees them only after ``free_slots_after_run_end_seconds``)."""
    inst = pool_instance
    dead, live = Proc(), Proc()
    try:
        gone = make_new_run_id()
        inst.add_run(dg.DagsterRun(job_name="labels_job", run_id=gone, status=dg.DagsterRunStatus.STARTED,
                                   tags={TAG_RUN_WORKER: dead.worker(gone).to_tag()}))  # fmt: skip
        assert _claim(inst, gone)
        dead.kill()
        inst.report_run_failed(inst.get_run_by_id(gone))  # what the code server reports
        ended_alive = make_new_run_id()
        inst.add_run(dg.DagsterRun(job_name="labels_job", run_id=ended_alive, status=dg.DagsterRunStatus.STARTED,
                                   tags={TAG_RUN_WORKER: live.worker(ended_alive).to_tag()}))  # fmt: skip
        assert not _claim(inst, ended_alive)  # waits behind `gone`
        inst.report_run_failed(inst.get_run_by_id(ended_alive))

        [r] = reap_dead_runs(inst, seen_by="the test")
        assert (r.run_id, r.previous_status, r.new_status) == (gone, "FAILURE", "FAILURE")
        assert r.freed_slots == [(POOL, STEP)]
        events = inst.get_records_for_run(gone, of_type=DagsterEventType.ENGINE_EVENT).records
        text = events[-1].event_log_entry.dagster_event.message
        assert "ended (FAILURE) without releasing its pool slots; freed by the test" in text
        info = inst.event_log_storage.get_concurrency_info(POOL)
        assert gone not in {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}
        # A run whose worker still lives keeps its claim: Dagster's free_slots_after_run_end_seconds covers it.
        assert ended_alive in {p.run_id for p in info.pending_steps}
    finally:
        for p in (dead, live):
            p.popen.kill()
            p.popen.wait()


def test_reaper_sensor_ends_dead_runs(pool_instance):
    inst = pool_instance
    proc = Proc()
    run_id = make_new_run_id()
    inst.add_run(dg.DagsterRun(job_name="manifests_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                               tags={TAG_RUN_WORKER: proc.worker(run_id).to_tag()}))  # fmt: skip
    assert _claim(inst, run_id)
    proc.kill()
    assert run_reaper_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    result = run_reaper_sensor(dg.build_sensor_context(instance=inst))
    assert isinstance(result, dg.SkipReason) and run_id in (result.skip_message or "")
    assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert REAPER_SENSOR_NAME in _end_message(inst, run_id, DagsterEventType.RUN_FAILURE)
    assert inst.event_log_storage.get_concurrency_info(POOL).claimed_slots == []


def test_operator_commands(tmp_path, monkeypatch, capsys):
    from asr_distill.recovery import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    dead = Proc()
    run_id = make_new_run_id()
    with dg.DagsterInstance.get() as inst:
        inst.add_run(dg.DagsterRun(job_name="labels_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                   tags={TAG_RUN_WORKER: dead.worker(run_id).to_tag()}))  # fmt: skip
        inst.event_log_storage.set_concurrency_slots(POOL, 1)
        assert _claim(inst, run_id)
    dead.kill()
    assert main(["slots"]) == 0
    out = capsys.readouterr().out
    assert f"pool {POOL}: 1 of 1 slots claimed" in out
    assert f"holds    run {run_id} step {STEP} [STARTED] run worker pid {dead.popen.pid}" in out
    assert "GONE (no such process)" in out
    assert main(["reap"]) == 0
    assert "1 dead run(s) recovered" in capsys.readouterr().out
    assert main(["slots"]) == 0
    assert f"pool {POOL}: 0 of 1 slots claimed" in capsys.readouterr().out

    # `free` works on any run, wherever its worker ran.
    other = make_new_run_id()
    with dg.DagsterInstance.get() as inst:
        inst.add_run(dg.DagsterRun(job_name="labels_job", run_id=other, status=dg.DagsterRunStatus.STARTED))
        assert _claim(inst, other)
    assert main(["free", other, "--mark-failed"]) == 0
    assert f"freed slots {POOL} ({STEP})" in capsys.readouterr().out
    with dg.DagsterInstance.get() as inst:
        assert inst.get_run_by_id(other).status == dg.DagsterRunStatus.FAILURE
        assert inst.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
    assert main(["free", "no-such-run"]) == 1


def test_wrapped_executor_keeps_the_executor():
    from asr_distill.definitions import build_definitions

    wrapped = with_run_recovery(dg.multiprocess_executor)
    assert unwrap_executor(wrapped) is dg.multiprocess_executor
    assert wrapped.name == dg.multiprocess_executor.name
    assert wrapped.config_schema is dg.multiprocess_executor.config_schema
    defs = build_definitions(raw="/nonexistent/raw", lake="/nonexistent/lake")
    assert unwrap_executor(defs.executor) is dg.in_process_executor
    assert defs.resolve_sensor_def(REAPER_SENSOR_NAME) is run_reaper_sensor


# ---------------------------------------------------------------------------------------------------------
# End to end: SIGKILL of `dagster job execute` inside a step of a pool with one slot, then a run that completes

LOCATION = '''
import os
import time
from pathlib import Path

import dagster as dg

from asr_distill.definitions import build_definitions


@dg.asset(pool="gpu")
def pooled_probe(context: dg.AssetExecutionContext) -> None:
    """Holds the gpu pool's only slot until the file `release` exists."""
    here = Path(os.environ["RECOVERY_TEST_DIR"])
    (here / f"started-{context.run_id}").write_text(str(os.getpid()))
    while not (here / "release").exists():
        time.sleep(0.1)


probe_job = dg.define_asset_job("probe_job", selection=[pooled_probe])
defs = dg.Definitions.merge(
    build_definitions(raw=os.environ["RECOVERY_TEST_RAW"], lake=os.environ["RECOVERY_TEST_LAKE"]),
    dg.Definitions(assets=[pooled_probe], jobs=[probe_job]),
)
'''


def _execute(location: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    dagster = str(Path(sys.executable).with_name("dagster"))
    with log.open("w") as out:
        return subprocess.Popen(
            [dagster, "job", "execute", "-f", str(location), "-j", "probe_job"],
            cwd=location.parent, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _killpg(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_for(what: str, done, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 240
    while not done():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what}: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_sigkilled_cli_runs_free_their_pool_slot_and_claim_for_the_next_run(tmp_path):
    """Run 1 holds the gpu pool's only slot, run 2 waits for it; both are killed (SIGKILL to the process
    group, as the OOM killer or `kill -9` would), so neither reports its end. Run 3 must complete."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")  # pools: default_limit 1
    location = tmp_path / "location.py"
    location.write_text(LOCATION)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_DISTILL_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "RECOVERY_TEST_DIR": str(work),
        "RECOVERY_TEST_RAW": str(tmp_path / "raw"),
        "RECOVERY_TEST_LAKE": str(tmp_path / "lake"),
        "PYTHONWARNINGS": "ignore",
    }
    logs = [tmp_path / f"run{i}.log" for i in (1, 2, 3)]

    first = _execute(location, env, logs[0])
    second = None
    try:
        _wait_for("run 1 never started its step", lambda: list(work.glob("started-*")), first, logs[0])
        second = _execute(location, env, logs[1])
        _wait_for(
            "run 2 never waited for the pool",
            lambda: "Step blocked by limit for pool gpu" in logs[1].read_text(),
            second,
            logs[1],
        )
    finally:
        if second is not None:
            _killpg(second)  # killed while waiting: leaves a pending claim
        _killpg(first)  # killed inside the step: leaves its slot claimed
    holder = next(work.glob("started-*")).name.removeprefix("started-")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        runs = {r.run_id: r for r in inst.get_runs()}
        (waiter,) = set(runs) - {holder}
        assert {r.status for r in runs.values()} == {dg.DagsterRunStatus.STARTED}
        info = inst.event_log_storage.get_concurrency_info(POOL)
        assert [(s.run_id, s.step_key) for s in info.claimed_slots] == [(holder, "pooled_probe")]
        assert waiter in info.pending_run_ids

    (work / "release").touch()
    third = _execute(location, env, logs[2])
    try:
        rc = third.wait(timeout=180)  # without recovery: blocked on the pool for good
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        _killpg(third)
    log = logs[2].read_text()
    assert rc == 0, log[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as inst:
        runs = {r.run_id: r for r in inst.get_runs()}
        assert len(runs) == 3
        (last,) = set(runs) - {holder, waiter}
        assert runs[last].status == dg.DagsterRunStatus.SUCCESS
        host = _node()[0]
        for run_id, proc, slots, pending in [
            (holder, first, "gpu (pooled_probe)", "none"),
            (waiter, second, "none", "gpu (pooled_probe)"),
        ]:
            assert runs[run_id].status == dg.DagsterRunStatus.FAILURE
            msg = _end_message(inst, run_id, DagsterEventType.RUN_FAILURE)
            assert f"run worker pid {proc.pid} on host {host} is gone (no such process)" in msg
            assert f"marked failed by asr_distill recovery at the start of run {last}" in msg
            assert f"Freed its pool slots: {slots}; pending pool claims: {pending}." in msg
            assert f"Recovered run {run_id}" in log
        info = inst.event_log_storage.get_concurrency_info(POOL)
        assert info.claimed_slots == [] and info.pending_steps == []
