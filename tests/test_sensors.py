"""``raw_prefix_sensor`` on a real LocalStorage raw store and a real (SQLite) Dagster instance."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.partitions.context import (
    partition_loading_context,
)  # what the daemon wraps ticks in

from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.definitions import build_definitions
from asr_distill.jobs import distill_job
from asr_distill.partitions import raw_prefix_partitions
from asr_distill.resources import StorageResource
from asr_distill.sensors import ALL_SENSORS, SENSOR_NAME, build_raw_prefix_sensor
from asr_distill.stages.discovery import (
    DiscoverySettings,
    list_prefix,
    plan_tick,
    run_key_for,
    settings_from_env,
)
from asr_distill.storage import LocalStorage
from tests.helpers import stage_resources

MARKER = "_SUCCESS"


def _upload(store: LocalStorage, prefix: str, n: int = 2, marker: bool = True, start: int = 0) -> None:
    for i in range(start, start + n):
        store.write_bytes(f"{prefix}/spk1/utt_{i:04d}.wav", f"audio {prefix} {i}".encode())
    if marker:
        store.write_bytes(f"{prefix}/{MARKER}", b"")


class Tick:
    """One evaluated tick, as the daemon sees it (run requests resolved against distill_job)."""

    def __init__(self, data) -> None:
        self.data = data
        self.cursor: str | None = data.cursor
        self.run_keys = [r.run_key for r in data.run_requests or []]
        self.partitions = [r.partition_key for r in data.run_requests or []]
        self.added = [k for req in data.dynamic_partitions_requests or [] for k in req.partition_keys]


def _definitions_with(sensor: dg.SensorDefinition, store: LocalStorage) -> dg.Definitions:
    """The project's definitions with ``sensor`` (built with test settings) in place of the default one."""
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[distill_job],
        sensors=[sensor],
        resources=stage_resources(store.uri, store.uri + "-lake"),
    )


def _tick(sensor: dg.SensorDefinition, instance, store: LocalStorage, cursor: str | None, defs=None) -> Tick:
    with (
        dg.build_sensor_context(
            instance=instance,
            instance_ref=instance.get_ref(),  # as in the daemon: run requests resolve against added partitions
            cursor=cursor,
            resources={"raw": StorageResource(uri=store.uri)},
            definitions=defs if defs is not None else _definitions_with(sensor, store),
        ) as context,
        partition_loading_context(dynamic_partitions_store=instance),
    ):
        tick = Tick(sensor.evaluate_tick(context))
    if tick.added:  # what the daemon does with the requests before launching the runs
        instance.add_dynamic_partitions(raw_prefix_partitions.name, tick.added)
    return tick


@pytest.fixture()
def raw(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "raw")
    (tmp_path / "raw").mkdir()
    return store


def sensor_with(**kwargs) -> dg.SensorDefinition:
    clock = kwargs.pop("clock", time.time)
    return build_raw_prefix_sensor(DiscoverySettings(**kwargs), clock=clock)


def test_new_complete_prefix_is_registered_and_launched(raw, instance):
    _upload(raw, "en_read", 3)
    tick = _tick(sensor_with(), instance, raw, None)
    assert tick.added == ["en_read"]
    assert tick.partitions == ["en_read"]
    fp = list_prefix(raw, "en_read/", MARKER).fingerprint
    assert tick.run_keys == [f"en_read@{fp}"] == [run_key_for("en_read", fp)]
    request = tick.data.run_requests[0]
    assert request.tags["dagster/partition"] == "en_read"
    assert request.tags["asr_distill/listing_fingerprint"] == fp
    assert request.tags["asr_distill/trigger"] == "new"
    assert request.job_name in (None, distill_job.name)
    assert json.loads(tick.cursor)["d"]["en_read"].startswith(fp + ".")


def test_prefix_without_marker_waits_until_the_marker_appears(raw, instance):
    sensor = sensor_with()
    _upload(raw, "uploading", 2, marker=False)
    first = _tick(sensor, instance, raw, None)
    assert first.run_keys == [] and first.added == []
    assert "nothing complete" in first.data.skip_message
    assert instance.get_dynamic_partitions(raw_prefix_partitions.name) == []  # never registered half-uploaded

    _upload(raw, "uploading", 2, marker=False, start=2)  # still uploading
    assert _tick(sensor, instance, raw, first.cursor).run_keys == []

    raw.write_bytes(f"uploading/{MARKER}", b"")
    done = _tick(sensor, instance, raw, first.cursor)
    assert done.partitions == ["uploading"] and done.added == ["uploading"]
    assert list_prefix(raw, "uploading/", MARKER).objects == 4


def test_restart_from_the_cursor_launches_nothing_twice(raw, instance):
    sensor = sensor_with()
    _upload(raw, "a")
    _upload(raw, "b")
    first = _tick(sensor, instance, raw, None)
    assert first.partitions == ["a", "b"]
    again = _tick(sensor, instance, raw, first.cursor)  # a restarted daemon resumes from the stored cursor
    assert again.run_keys == [] and again.added == []
    _upload(raw, "c")
    third = _tick(sensor, instance, raw, again.cursor)
    assert third.partitions == ["c"]


def test_a_lost_cursor_gives_the_same_run_keys(raw, instance):
    sensor = sensor_with()
    _upload(raw, "a")
    _upload(raw, "b")
    first = _tick(sensor, instance, raw, None)
    lost = _tick(sensor, instance, raw, None)  # Dagster refuses these keys: already used by this sensor
    assert lost.run_keys == first.run_keys
    assert lost.added == []  # the partitions exist already
    garbage = _tick(sensor, instance, raw, "{not json")
    assert garbage.run_keys == first.run_keys


def test_changed_prefix_is_reported_not_rerun_by_default(raw, instance, capfd):
    sensor = sensor_with(rechecks_per_tick=10)
    _upload(raw, "a")
    first = _tick(sensor, instance, raw, None)
    _upload(raw, "a", 1, start=10)  # a new object, and the producer rewrites the marker
    capfd.readouterr()
    second = _tick(sensor, instance, raw, first.cursor)
    assert second.run_keys == []
    assert "a/: changed since its last run" in capfd.readouterr().err
    assert json.loads(second.cursor)["c"]["a"] == list_prefix(raw, "a/", MARKER).fingerprint
    third = _tick(sensor, instance, raw, second.cursor)
    assert third.run_keys == [] and "changed since" not in capfd.readouterr().err  # reported once per change


def test_changed_prefix_is_rerun_with_a_new_run_key_when_enabled(raw, instance):
    sensor = sensor_with(rerun_changed=True, rechecks_per_tick=10)
    _upload(raw, "a")
    _upload(raw, "b")
    first = _tick(sensor, instance, raw, None)
    raw.write_bytes("a/spk1/utt_0009.wav", b"late object")  # uploaded after the run; marker untouched
    detected = _tick(sensor, instance, raw, first.cursor)
    assert detected.run_keys == []  # a re-upload is in progress until the marker is rewritten
    waiting = _tick(sensor, instance, raw, detected.cursor)
    assert waiting.run_keys == []
    time.sleep(0.01)
    raw.write_bytes(f"a/{MARKER}", b"")
    rerun = _tick(sensor, instance, raw, waiting.cursor)
    assert rerun.partitions == ["a"]
    assert rerun.run_keys[0] != first.run_keys[0]
    assert rerun.run_keys[0] == run_key_for("a", list_prefix(raw, "a/", MARKER).fingerprint)
    assert rerun.data.run_requests[0].tags["asr_distill/trigger"] == "changed"
    assert _tick(sensor, instance, raw, rerun.cursor).run_keys == []


def test_quiet_period_mode_with_an_injected_clock(raw, instance):
    now = [time.time()]
    sensor = sensor_with(quiet_seconds=300, clock=lambda: now[0])
    _upload(raw, "q", 2, marker=False)
    first = _tick(sensor, instance, raw, None)
    assert first.run_keys == []  # first sighting: not known to be quiet yet
    now[0] += 200
    assert _tick(sensor, instance, raw, first.cursor).run_keys == []
    raw.write_bytes("q/spk1/utt_0005.wav", b"one more")  # still uploading: the quiet period restarts
    now[0] += 150
    restarted = _tick(sensor, instance, raw, first.cursor)
    assert restarted.run_keys == []
    now[0] += 299
    assert _tick(sensor, instance, raw, restarted.cursor).run_keys == []
    now[0] += 2
    done = _tick(sensor, instance, raw, restarted.cursor)
    assert done.partitions == ["q"] and done.added == ["q"]
    # The marker still completes a prefix at once in quiet mode.
    _upload(raw, "m", 1, marker=True)
    assert _tick(sensor, instance, raw, done.cursor).partitions == ["m"]


def test_quiet_mode_never_trusts_old_mtimes_alone(raw, instance):
    """``rsync -a`` keeps old mtimes: a half-copied prefix looks old but must still be seen unchanged."""
    now = [time.time()]
    sensor = sensor_with(quiet_seconds=60, clock=lambda: now[0])
    _upload(raw, "old", 3, marker=False)
    for path in (Path(raw.uri) / "old").rglob("*.wav"):
        os.utime(path, (now[0] - 86400, now[0] - 86400))
    first = _tick(sensor, instance, raw, None)
    assert first.run_keys == []
    now[0] += 61
    assert _tick(sensor, instance, raw, first.cursor).partitions == ["old"]


def test_invalid_prefix_names_are_skipped_with_a_log_line(raw, instance, capfd):
    for name in ("good", "bad,name", "[x]", ".hidden"):
        _upload(raw, name)
    tick = _tick(sensor_with(), instance, raw, None)
    assert tick.partitions == ["good"]
    assert "skipped 3 prefixes that cannot be partition names" in capfd.readouterr().err
    assert instance.get_dynamic_partitions(raw_prefix_partitions.name) == ["good"]


def test_budget_per_tick_bounds_work_and_rotates(raw, instance):
    names = [f"p{i:02d}" for i in range(7)]
    for name in names:
        _upload(raw, name, 1)
    sensor = sensor_with(max_runs_per_tick=3, probes_per_tick=100)
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        tick = _tick(sensor, instance, raw, cursor)
        assert len(tick.partitions) <= 3
        seen += tick.partitions
        cursor = tick.cursor
    assert seen == names  # each exactly once, in order

    # Names whose backend order ("x y/" < "x-y/" < "x/") differs from their own order rotate correctly too.
    odd = LocalStorage(Path(raw.uri).parent / "raw_odd")
    for name in ("x", "x y", "x-y"):
        _upload(odd, name, 1)
    settings = DiscoverySettings(max_runs_per_tick=1)
    cursor, launched = None, []
    for _ in range(4):
        plan = plan_tick(odd, cursor, settings, now=time.time())
        launched += [x.partition for x in plan.launches]
        cursor = plan.cursor
    assert sorted(launched) == ["x", "x y", "x-y"] and len(launched) == 3

    # A small probe budget over prefixes that are not complete must still reach every prefix in turn.
    store = LocalStorage(Path(raw.uri).parent / "raw2")
    for name in names:
        _upload(store, name, 1, marker=False)
    settings = DiscoverySettings(probes_per_tick=2)
    cursor = None
    for _ in range(3):  # 6 of 7 examined, none complete
        cursor = plan_tick(store, cursor, settings, now=time.time()).cursor
    store.write_bytes(f"p06/{MARKER}", b"")
    plan = plan_tick(store, cursor, settings, now=time.time())
    assert [x.partition for x in plan.launches] == ["p06"] and plan.probed == 2


def test_prefix_removed_from_the_store_is_dropped_from_the_cursor(raw, instance):
    sensor = sensor_with()
    _upload(raw, "a")
    _upload(raw, "b")
    first = _tick(sensor, instance, raw, None)
    for obj in list(raw.iter_objects("b/")):
        raw.delete(obj.key)
    for d in sorted((Path(raw.uri) / "b").rglob("*"), reverse=True):
        d.rmdir()
    (Path(raw.uri) / "b").rmdir()
    second = _tick(sensor, instance, raw, first.cursor)
    assert set(json.loads(second.cursor)["d"]) == {"a"}


def test_sensor_in_the_real_definitions(raw, instance, tmp_path):
    _upload(raw, "en_read", 2)
    defs = build_definitions(raw=raw.uri, lake=str(tmp_path / "lake"))
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert [s.name for s in ALL_SENSORS] == [SENSOR_NAME]
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == distill_job.name
    tick = _tick(sensor, instance, raw, None, defs=defs)
    assert tick.partitions == ["en_read"]
    assert tick.data.run_requests[0].tags["dagster/partition"] == "en_read"


def test_settings_from_environment():
    assert settings_from_env({}) == DiscoverySettings()
    s = settings_from_env(
        {
            "ASR_DISTILL_SENSOR_MARKER": "DONE",
            "ASR_DISTILL_SENSOR_QUIET_SECONDS": "600",
            "ASR_DISTILL_SENSOR_RERUN_CHANGED": "yes",
            "ASR_DISTILL_SENSOR_INTERVAL_SECONDS": "15",
            "ASR_DISTILL_SENSOR_DEFAULT_STATUS": "running",
        }
    )
    assert (s.marker, s.quiet_seconds, s.rerun_changed, s.interval_seconds, s.default_running) == (
        "DONE",
        600.0,
        True,
        15,
        True,
    )
    assert build_raw_prefix_sensor(s).default_status == dg.DefaultSensorStatus.RUNNING
    for env, needle in [
        ({"ASR_DISTILL_SENSOR_QUIET_SECONDS": "ten"}, "ASR_DISTILL_SENSOR_QUIET_SECONDS"),
        ({"ASR_DISTILL_SENSOR_RERUN_CHANGED": "maybe"}, "ASR_DISTILL_SENSOR_RERUN_CHANGED"),
        ({"ASR_DISTILL_SENSOR_DEFAULT_STATUS": "ON"}, "ASR_DISTILL_SENSOR_DEFAULT_STATUS"),
        ({"ASR_DISTILL_SENSOR_MARKER": "a/b"}, "marker"),
        ({"ASR_DISTILL_SENSOR_MAX_RUNS_PER_TICK": "0"}, "max_runs_per_tick"),
    ]:
        with pytest.raises(ValueError, match=needle):
            settings_from_env(env)


def test_the_sensor_daemon_never_launches_the_same_content_twice(raw, instance, tmp_path):
    """The real sensor daemon over the real code location: a wiped cursor re-requests, Dagster dedups."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.scheduler.instigation import TickStatus
    from dagster._core.test_utils import (
        InProcessTestWorkspaceLoadTarget,
        create_test_daemon_workspace_context,
        freeze_time,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._daemon.sensor import execute_sensor_iteration

    _upload(raw, "a")
    _upload(raw, "b")
    _upload(raw, "c", marker=False)
    defs_file = tmp_path / "location.py"
    defs_file.write_text(
        "from asr_distill.definitions import build_definitions\n"
        f"defs = build_definitions(raw={raw.uri!r}, lake={str(tmp_path / 'lake')!r})\n"
    )
    target = InProcessTestWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                python_file=str(defs_file), attribute="defs", working_directory=str(tmp_path)
            ),
            location_name="asr_distill",
        )
    )
    logger = logging.getLogger("test_sensor_daemon")
    # The instance's default run coordinator queues runs: nothing executes here, runs are only counted.
    with create_test_daemon_workspace_context(target, instance) as workspace:
        location = next(iter(workspace.create_request_context().get_code_location_entries().values()))
        remote = location.code_location.get_repository("__repository__").get_sensor(SENSOR_NAME)
        t = time.time()

        def tick_at(at: float) -> None:
            with freeze_time(at):
                list(execute_sensor_iteration(workspace, logger, None, None))

        instance.start_sensor(remote)
        tick_at(t)
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["a", "b"]
        assert sorted(instance.get_dynamic_partitions(raw_prefix_partitions.name)) == ["a", "b"]
        first_keys = sorted(r.tags["dagster/run_key"] for r in runs)

        # Wipe the sensor's state (cursor lost), start it again: same run keys, no new run.
        instance.stop_sensor(remote.get_remote_origin_id(), remote.selector_id, remote)
        instance.delete_instigator_state(remote.get_remote_origin_id(), remote.selector_id)
        instance.start_sensor(remote)
        tick_at(t + 120)
        assert sorted(r.tags["dagster/run_key"] for r in instance.get_runs()) == first_keys
        ticks = instance.get_ticks(remote.get_remote_origin_id(), remote.selector_id)
        assert ticks[0].status == TickStatus.SKIPPED  # "already completed with run keys ..."

        raw.write_bytes(f"c/{MARKER}", b"")
        tick_at(t + 240)
        assert sorted(r.tags["dagster/partition"] for r in instance.get_runs()) == ["a", "b", "c"]
