"""The training_manifests asset and its blocking checks, materialised against a real labelled lake."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_distill.assets.training_manifests import training_manifests, training_manifests_checks
from asr_distill.lake import manifest_layout
from asr_distill.resources import StorageResource
from asr_distill.stages.manifests import read_latest
from tests.manifests_fixtures import build_labelled_lake, copy_lake

CHECKS = (
    "manifests_splits_disjoint",
    "manifests_counts_reconcile",
    "manifests_rows_point_to_shard_members",
    "manifests_durations_in_bounds",
)
RUN_CONFIG = {
    "ops": {"training_manifests": {"config": {"manifest": {"dev_fraction": 0.2, "test_fraction": 0.2}}}}
}


@pytest.fixture(scope="module")
def base(demo_corpus, tmp_path_factory):
    raw, _ = demo_corpus
    return build_labelled_lake(raw, tmp_path_factory.getbasetemp() / "manifests_base")


def _run(lake, instance, **kw):
    return dg.materialize(
        [training_manifests, training_manifests_checks],
        instance=instance,
        resources={"lake": StorageResource(uri=lake.uri)},
        run_config=RUN_CONFIG,
        **kw,
    )


def test_asset_materialises_with_passing_checks_and_reuses_its_version(base, tmp_path, instance) -> None:
    lake = copy_lake(base, tmp_path / "lake")
    result = _run(lake, instance)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(CHECKS, True)
    md = result.asset_materializations_for_node("training_manifests")[0].metadata
    version = md["version"].value
    assert read_latest(lake)["version"] == version and md["reused"].value is False
    manifest = pq.read_table(lake.local_path(manifest_layout(version).manifest_key))
    assert md["samples"].value == manifest.num_rows == md["dagster/row_count"].value
    for name in (
        "per_split",
        "per_language",
        "per_split_language",
        "drops_by_rule",
        "buckets",
        "per_partition",
    ):
        assert "|" in md[name].value, name
    assert "high_wer" in md["drops_by_rule"].value and "no_label" in md["drops_by_rule"].value
    assert md["bucket_edges"].value == sorted(md["bucket_edges"].value)
    assert len(md["teacher_fingerprints"].value) == 2
    again = _run(lake, instance)
    md2 = again.asset_materializations_for_node("training_manifests")[0].metadata
    assert md2["version"].value == version and md2["reused"].value is True


def test_a_corrupted_shard_fails_the_blocking_member_check(base, tmp_path, instance) -> None:
    lake = copy_lake(base, tmp_path / "lake")
    assert _run(lake, instance).success
    version = read_latest(lake)["version"]
    row = pq.read_table(lake.local_path(manifest_layout(version).manifest_key)).to_pylist()[0]
    path = lake.local_path(row["shard_key"])
    data = bytearray(path.read_bytes())
    data[row["audio_offset"] - 512 : row["audio_offset"]] = bytes(512)  # the member's tar header
    path.write_bytes(bytes(data))  # bypasses the atomic writer on purpose
    result = _run(lake, instance, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["manifests_rows_point_to_shard_members"].passed is False
    assert checks["manifests_rows_point_to_shard_members"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["manifests_splits_disjoint"].passed is True


def test_bad_config_fails_clearly(base, tmp_path, instance) -> None:
    lake = copy_lake(base, tmp_path / "lake")
    bad = {"ops": {"training_manifests": {"config": {"manifest": {"drop_flags": ["nope"]}}}}}
    result = dg.materialize(
        [training_manifests], instance=instance, resources={"lake": StorageResource(uri=lake.uri)},
        run_config=bad, raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "drop_flags" in str(failure.step_failure_data.error.message)
