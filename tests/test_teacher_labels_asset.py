"""The teacher_labels asset on a real private Ray cluster with the real CPU teacher, on demo speech."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_distill import lake as layout
from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.assets.audio_index import audio_index
from asr_distill.assets.cleaned_audio import cleaned_audio
from asr_distill.assets.teacher_labels import teacher_labels
from asr_distill.assets.webdataset_shards import webdataset_shards
from asr_distill.resources import PrivateLocalRay, RemoteRay, TeacherResource, make_ray_resource
from asr_distill.resources.teacher import make_teacher_resource
from asr_distill.stages.labels import LabelsRecord
from asr_distill.storage import LocalStorage
from tests.helpers import REPO_ROOT, register_partitions, stage_resources

PART = "en_read"
CHECKS = ("labels_cover_samples", "labels_flag_rates", "labels_teacher_wer")


def _run(instance, raw_uri, lake, selection, config=None, ray_address=None, **teacher):
    resources = stage_resources(raw_uri, lake.uri, **teacher)
    if ray_address:  # an existing cluster reached by address, as in production
        resources["ray_cluster"] = RemoteRay(address=ray_address)
    return dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=selection,
        partition_key=PART,
        instance=instance,
        resources=resources,
        run_config={"ops": {"teacher_labels": {"config": config}}} if config else None,
        raise_on_error=False,
    )


def _labels_md(result) -> dict:
    return result.asset_materializations_for_node("teacher_labels")[0].metadata


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.check_name in CHECKS}


def _snapshot(lake: LocalStorage) -> dict[str, bytes]:
    return {o.key: lake.read_bytes(o.key) for o in lake.iter_objects(layout.LABELS + "/")}


@pytest.fixture(scope="module")
def labelled(demo_corpus, tmp_path_factory, monkeypatch_module):
    """en_read through shards, then labels (first run), in one Dagster instance for the module."""
    raw, _ = demo_corpus
    lake = LocalStorage(tmp_path_factory.mktemp("lake"))
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # A cluster address in the environment must not be picked up: the local resource starts its own.
    monkeypatch_module.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        register_partitions(instance, [PART])
        up = _run(
            instance, raw.uri, lake, dg.AssetSelection.assets(audio_index, cleaned_audio, webdataset_shards)
        )
        assert up.success
        first = _run(instance, raw.uri, lake, dg.AssetSelection.assets(teacher_labels))
        yield instance, raw, lake, first


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_every_shard_sample_is_labelled_and_checks_pass(labelled):
    _, _, lake, first = labelled
    assert first.success
    checks = _checks(first)
    assert set(checks) == set(CHECKS)
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items()}
    # The demo teacher WER bar of the issue: corpus WER of tiny.en on espeak-ng speech < 0.35.
    wer = checks["labels_teacher_wer"].metadata["corpus_wer"].value
    assert 0.0 <= wer < 0.35
    assert checks["labels_teacher_wer"].metadata["samples_with_reference"].value > 0

    current = LabelsRecord.read_current(lake, PART)
    assert current is not None
    index = pq.read_table(lake.local_path(layout.shard_layout(PART).index_key))
    shards = sorted(set(index.column("shard_key").to_pylist()))
    assert sorted(current.shards) == shards
    assert current.labels == [layout.labels_key(PART, current.version, s) for s in shards]
    rows = 0
    for shard, key in zip(shards, current.labels, strict=True):
        table = pq.read_table(lake.local_path(key))
        expected = [r["sample_key"] for r in index.to_pylist() if r["shard_key"] == shard]
        assert sorted(table.column("sample_key").to_pylist()) == sorted(expected)
        assert set(table.column("teacher_fingerprint").to_pylist()) == {current.fingerprint}
        rows += table.num_rows
    assert rows == index.num_rows
    md = _labels_md(first)
    assert md["samples"].value == index.num_rows
    assert md["shards_labelled"].value == len(shards) and md["shards_skipped"].value == 0
    assert md["labels_version"].value == current.version
    assert "flag" in md["flags"].value or md["flags"].value == "_none_"


def test_rerun_is_a_noop_and_a_lost_shard_is_relabelled_alone(labelled, ray_head):
    instance, raw, lake, _ = labelled
    before = _snapshot(lake)
    again = _run(instance, raw.uri, lake, dg.AssetSelection.assets(teacher_labels))
    assert again.success
    md = _labels_md(again)
    assert md["shards_labelled"].value == 0 and md["shards"].value == md["shards_skipped"].value
    assert _snapshot(lake) == before  # nothing rewritten

    current = LabelsRecord.read_current(lake, PART)
    lost = current.labels[0]
    lake.delete(lost)
    third = _run(instance, raw.uri, lake, dg.AssetSelection.assets(teacher_labels), ray_address=ray_head)
    assert third.success
    md = _labels_md(third)
    assert md["shards_labelled"].value == 1
    assert md["shards_skipped"].value == len(current.labels) - 1
    assert lake.read_bytes(lost) == before[lost]  # deterministic teacher: byte-identical labels again


def test_new_teacher_config_writes_a_new_version_and_a_failing_check_blocks(labelled, ray_head):
    instance, raw, lake, _ = labelled
    old = LabelsRecord.read_current(lake, PART)
    old_files = {k: v for k, v in _snapshot(lake).items() if f"/{old.version}/" in k}
    result = _run(
        instance,
        raw.uri,
        lake,
        dg.AssetSelection.assets(teacher_labels),
        config={"max_teacher_wer": 0.0, "min_reference_units": 0},
        ray_address=ray_head,
        options={"beam_size": 2},
    )
    new = LabelsRecord.read_current(lake, PART)
    assert new.version != old.version and new.fingerprint != old.fingerprint
    assert new.teacher_config["beam_size"] == 2
    # The old version is untouched.
    assert {k: v for k, v in _snapshot(lake).items() if f"/{old.version}/" in k} == old_files
    checks = _checks(result)
    assert checks["labels_teacher_wer"].passed is False
    assert checks["labels_cover_samples"].passed is True
    assert not result.success  # the blocking check failed the run


def test_ray_and_teacher_resources_from_the_environment(monkeypatch):
    assert isinstance(make_ray_resource(""), PrivateLocalRay)
    assert make_ray_resource("local").ray_address == "local"
    remote = make_ray_resource("ray://head.example:10001")
    assert isinstance(remote, RemoteRay) and remote.ray_address == "ray://head.example:10001"
    assert remote.host == "head.example"
    assert isinstance(make_ray_resource("auto"), RemoteRay)
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="ASR_DISTILL_RAY"):
        make_ray_resource("what")
    # KubeRay is built (the documented production config); nothing here runs a Kubernetes API.
    from dagster_ray.kuberay import KubeRayCluster

    monkeypatch.setenv("ASR_DISTILL_KUBERAY_IMAGE", "registry.example/asr-distill:1")
    monkeypatch.setenv("ASR_DISTILL_KUBERAY_CLUSTER", str(REPO_ROOT / "deploy" / "kuberay-cluster.yaml"))
    kuberay = make_ray_resource("kuberay")
    assert isinstance(kuberay, KubeRayCluster) and kuberay.image == "registry.example/asr-distill:1"
    gpu_group = kuberay.ray_cluster.spec.worker_group_specs[0]
    assert gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    monkeypatch.setenv("ASR_DISTILL_TEACHER", "vllm")
    monkeypatch.setenv("ASR_DISTILL_TEACHER_OPTIONS", '{"model": "Qwen/Qwen2-Audio-7B-Instruct"}')
    monkeypatch.setenv("ASR_DISTILL_TEACHER_GPUS", "0.5")
    t = make_teacher_resource()
    assert t.backend == "vllm" and t.num_gpus == 0.5 and t.pool_config().num_gpus == 0.5
    assert t.teacher_config().resolved_family == "qwen2_audio"  # no vllm import needed to configure it
    monkeypatch.setenv("ASR_DISTILL_TEACHER_OPTIONS", "[1]")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="JSON object"):
        make_teacher_resource()
    monkeypatch.setenv("ASR_DISTILL_TEACHER", "kaldi")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="faster_whisper"):
        make_teacher_resource()
    with pytest.raises(dg.DagsterInvalidConfigError, match="beam"):
        TeacherResource(options={"beams": 3}).teacher_config()


def test_ray_resources_do_not_connect_when_a_run_initialises_them(monkeypatch):
    """Dagster rebuilds resources from their config at run start; the lazy lifecycle must survive that,
    or every run (CPU stages and fast-path labelling included) would start a local Ray cluster."""
    monkeypatch.setenv("ASR_DISTILL_KUBERAY_IMAGE", "registry.example/asr-distill:1")
    monkeypatch.setenv("ASR_DISTILL_KUBERAY_CLUSTER", str(REPO_ROOT / "deploy" / "kuberay-cluster.yaml"))
    for resource in (make_ray_resource("local"), make_ray_resource("ray://head.example:10001")):
        with dg.build_resources({"ray_cluster": resource}) as built:
            assert built.ray_cluster.lifecycle.connect is False
            assert not built.ray_cluster.connected
    kuberay = make_ray_resource("kuberay")
    assert kuberay.lifecycle.connect is False  # set explicitly: kept in its config


def test_current_json_is_valid_json_with_thresholds(labelled):
    _, _, lake, _ = labelled
    blob = lake.read_bytes(layout.labels_current_key(PART))
    current = json.loads(blob)
    assert LabelsRecord.from_dict(current).to_json() == blob  # the typed record writes these exact bytes
    assert LabelsRecord.read_current(lake, PART) == LabelsRecord.from_dict(current)
    assert set(current["thresholds"]) == {
        "max_flag_rates", "max_error_row_rate", "max_teacher_wer", "min_reference_units"}  # fmt: skip
    assert lake.exists(layout.labels_summary_key(PART, current["version"]))
