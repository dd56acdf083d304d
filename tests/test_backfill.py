"""A backfill of ``audio_index`` over three partitions, launched the way the UI launches one.

The UI's "Materialize -> Launch backfill" sends the GraphQL mutation ``launchPartitionBackfill``; the
backfill daemon then submits one run per partition. Here the same mutation runs in-process against the
real code location, and the real backfill daemon iteration submits the runs; the instance uses Dagster's
synchronous run coordinator and launcher so that each run executes in this process instead of waiting
for a queue daemon and a run worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from dagster._config import process_config
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance.config import dagster_instance_config
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.config import pg_config
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.backfill import execute_backfill_iteration
from dagster_graphql.test.utils import execute_dagster_graphql

from asr_distill import lake as layout
from asr_distill.assets import audio_index, cleaned_audio, raw_audio, segmented_audio, webdataset_shards
from asr_distill.partitions import raw_prefix_partitions
from asr_distill.resources import PrivateLocalRay, StorageResource
from asr_distill.storage import LocalStorage

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""

PARTITIONS = ["broken", "en_conversational", "en_mixed"]  # contiguous in registration (sorted) order
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _location_file(tmp_path: Path, raw_uri: str, lake_uri: str) -> Path:
    """A code location file: the project's definitions on these stores."""
    location = tmp_path / "location.py"
    location.write_text(
        "from asr_distill.definitions import build_definitions\n"
        f"defs = build_definitions(raw={raw_uri!r}, lake={lake_uri!r})\n"
    )
    return location


def _location(tmp_path: Path, raw_uri: str, lake_uri: str) -> InProcessTestWorkspaceLoadTarget:
    location = _location_file(tmp_path, raw_uri, lake_uri)
    return InProcessTestWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                python_file=str(location), attribute="defs", working_directory=str(tmp_path)
            ),
            location_name="asr_distill",
        )
    )


def _launch_backfill(workspace, assets: list[str], partitions: list[str]) -> str:  # type: ignore[no-untyped-def]
    """What the UI's "Materialize -> Launch backfill" sends."""
    result = execute_dagster_graphql(
        workspace.create_request_context(),
        LAUNCH_BACKFILL,
        {"params": {"partitionNames": partitions, "assetSelection": [{"path": [a]} for a in assets]}},
    )
    assert result.errors is None
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def test_backfill_of_three_partitions(demo_corpus, tmp_path):
    """The CPU stages of three partitions run as one run (their backfill policy takes up to 8 partitions
    per run); every partition still gets its own materialization, metadata and checked outputs."""
    raw, report = demo_corpus
    lake = LocalStorage(tmp_path / "lake")
    home = tmp_path / "dagster_home"
    home.mkdir()
    with (
        dg.instance_for_test(
            temp_dir=str(home), synchronous_run_coordinator=True, synchronous_run_launcher=True
        ) as instance,
        create_test_daemon_workspace_context(_location(tmp_path, raw.uri, lake.uri), instance) as workspace,
    ):
        instance.add_dynamic_partitions(
            raw_prefix_partitions.name, sorted({e.prefix for e in report.entries})
        )
        cpu_assets = [audio_index, cleaned_audio, segmented_audio, webdataset_shards]
        backfill_id = _launch_backfill(workspace, [a.key.path[-1] for a in cpu_assets], PARTITIONS)
        logger = logging.getLogger("test_backfill")
        for _ in range(10):
            list(execute_backfill_iteration(workspace, logger))
            if instance.get_backfill(backfill_id).status != BulkActionStatus.REQUESTED:
                break
        assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS

        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert len(runs) == 1, [r.tags for r in runs]
        (run,) = runs
        assert (run.tags[RANGE_START], run.tags[RANGE_END]) == (PARTITIONS[0], PARTITIONS[-1])
        assert run.status == dg.DagsterRunStatus.SUCCESS

        for asset in cpu_assets:
            assert instance.get_materialized_partitions(asset.key) == set(PARTITIONS), asset.key
        n_audio = {
            p: sum(1 for e in report.entries if e.prefix == p and e.kind == "audio") for p in PARTITIONS
        }
        by_partition = {
            (r.asset_key.path[-1], r.partition_key): r.asset_materialization.metadata
            for a in cpu_assets
            for r in instance.fetch_materializations(a.key, limit=10).records
        }
        for partition in PARTITIONS:
            index_md = by_partition["audio_index", partition]
            assert index_md["rows"].value == n_audio[partition]
            assert (
                pq.read_metadata(lake.local_path(layout.audio_index_key(partition))).num_rows
                == n_audio[partition]
            )
            clean_md = by_partition["cleaned_audio", partition]
            assert clean_md["input_rows"].value == n_audio[partition]
            routed = clean_md["kept"].value + clean_md["long_form"].value + clean_md["quarantined"].value
            assert routed == n_audio[partition]
            assert (
                by_partition["segmented_audio", partition]["recordings"].value == clean_md["long_form"].value
            )
            # Kept short clips and the kept segments of long recordings both become samples.
            kept_segments = by_partition["segmented_audio", partition]["kept_segments"].value
            assert by_partition["webdataset_shards", partition]["kept_segments"].value == kept_segments
            assert by_partition["webdataset_shards", partition]["samples"].value == (
                clean_md["kept"].value + kept_segments
            )
        assert by_partition["cleaned_audio", "broken"]["quarantined"].value > 0
        assert not lake.exists(layout.audio_index_key("en_read"))  # not part of the backfill

        # Every check of the four assets ran once over the whole range, and passed.
        evaluations = [
            record.dagster_event.event_specific_data
            for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        assert {e.asset_key for e in evaluations} == {a.key for a in cpu_assets}
        failing = [(e.check_name, e.severity) for e in evaluations if not e.passed]
        # Only the warning on broken/'s probe errors (by design: blocked above 50 %, a warning above 0).
        assert failing == [("audio_index__probe_error_rate", dg.AssetCheckSeverity.WARN)], failing
        assert dg.AssetCheckKey(audio_index.key, "audio_index_schema") in {
            e.asset_check_key for e in evaluations
        }
        schema = next(e for e in evaluations if e.check_name == "audio_index_schema")
        assert schema.metadata["rows_validated"].value == sum(n_audio.values())


def test_labelling_backfill_runs_one_partition_per_run(tmp_path):
    """A labelling backfill asks for one run per partition (queued here, not executed: the queue
    daemon is not running), so the `gpu` pool and the run queue schedule the cluster per partition."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (tmp_path / "raw").mkdir()
    queued = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with (
        dg.instance_for_test(temp_dir=str(home), overrides=queued) as instance,
        create_test_daemon_workspace_context(
            _location(tmp_path, str(tmp_path / "raw"), str(tmp_path / "lake")), instance
        ) as workspace,
    ):
        instance.add_dynamic_partitions(raw_prefix_partitions.name, PARTITIONS)
        backfill_id = _launch_backfill(workspace, ["teacher_labels"], PARTITIONS)
        list(execute_backfill_iteration(workspace, logging.getLogger("test_backfill")))
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(PARTITIONS)
        assert all(RANGE_START not in r.tags for r in runs)
        assert all(r.status == dg.DagsterRunStatus.QUEUED for r in runs)


def _body(path: Path) -> str:
    text = path.read_text()
    return text[text.index("telemetry:") :]


def test_instance_templates(demo_corpus, tmp_path, monkeypatch):
    """deploy/dagster.yaml loads as documented and in-process runs (``make demo``) work on it."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert concurrency.run_queue_config.tag_concurrency_limits[0]["key"] == "dagster/partition"
        assert concurrency.pool_config.default_pool_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "op"

        raw, _ = demo_corpus
        instance.add_dynamic_partitions(raw_prefix_partitions.name, ["en_mixed"])
        lake = LocalStorage(tmp_path / "lake")
        resources = {
            "raw": StorageResource(uri=raw.uri),
            "lake": StorageResource(uri=lake.uri),
            "ray_cluster": PrivateLocalRay(),  # lazy: the index runs on its local pool (executor auto)
        }
        result = dg.materialize(
            [raw_audio, audio_index],
            selection=[audio_index],
            partition_key="en_mixed",
            instance=instance,
            resources=resources,
        )  # in-process, like `dagster job execute`: the queue is not involved
        assert result.success and lake.exists(layout.audio_index_key("en_mixed"))
        instance.event_log_storage.set_concurrency_slots("gpu", 2)  # `dagster instance concurrency set gpu 2`
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2

    # The PostgreSQL variant: same settings, storage from environment variables (schema-checked here; a
    # connection needs dagster-postgres and a server).
    assert _body(DEPLOY / "dagster-postgres.yaml") == _body(DEPLOY / "dagster.yaml")
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_PG_USERNAME": "dagster",
        "DAGSTER_PG_PASSWORD": "secret",
    }.items():
        monkeypatch.setenv(name, value)
    pg_home = tmp_path / "pg_home"
    pg_home.mkdir()
    shutil.copy(DEPLOY / "dagster-postgres.yaml", pg_home / "dagster.yaml")
    config, _ = dagster_instance_config(str(pg_home))  # validates the whole file
    resolved = process_config(pg_config(), config["storage"]["postgres"])  # what dagster-postgres receives
    assert resolved.success, resolved.errors
    db = resolved.value["postgres_db"]
    assert (db["hostname"], db["port"], db["password"], db["scheme"]) == (
        "127.0.0.1",
        5432,
        "secret",
        "postgresql+psycopg2",
    )


SYNC_INSTANCE = """\
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator.sync_in_memory_run_coordinator
  class: SyncInMemoryRunCoordinator
run_launcher:
  module: dagster._core.launcher.sync_in_memory_run_launcher
  class: SyncInMemoryRunLauncher
"""


def test_backfill_from_the_cli(demo_corpus, tmp_path):
    """`dagster job backfill` (the README's CLI line) over the demo partitions. The instance uses
    Dagster's synchronous coordinator and launcher, so the CLI process executes the runs itself instead
    of queueing them for a daemon."""
    raw, report = demo_corpus
    lake = LocalStorage(tmp_path / "lake")
    location = _location_file(tmp_path, raw.uri, lake.uri)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(SYNC_INSTANCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_DISTILL_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(home)
    partitions = sorted({e.prefix for e in report.entries})
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(raw_prefix_partitions.name, partitions)
    dagster = str(Path(sys.executable).with_name("dagster"))
    proc = subprocess.run(
        [dagster, "job", "backfill", "-f", str(location), "-j", "index_job", "--all", "all", "--noprompt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == partitions
        assert all(r.status == dg.DagsterRunStatus.SUCCESS and "dagster/backfill" in r.tags for r in runs)
        assert instance.get_materialized_partitions(audio_index.key) == set(partitions)
