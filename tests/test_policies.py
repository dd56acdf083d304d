"""Retry and backfill policies: I/O steps retry transient failures, permanent ones and checks never."""

from __future__ import annotations

import dagster as dg

from asr_distill.assets import ALL_ASSETS, ALL_CHECKS, audio_index
from asr_distill.assets._policies import CPU_BACKFILL, IO_RETRY
from asr_distill.storage import LocalStorage
from tests.helpers import register_partitions, stage_resources


def test_stage_assets_retry_and_checks_do_not():
    stages = [a for a in ALL_ASSETS if isinstance(a, dg.AssetsDefinition) and a.is_executable]
    assert {a.key.to_user_string() for a in stages} >= {
        "audio_index",
        "cleaned_audio",
        "segmented_audio",
        "webdataset_shards",
    }
    for asset in stages:
        assert asset.op.retry_policy == IO_RETRY
        expected = {
            "audio_index": CPU_BACKFILL,
            "cleaned_audio": CPU_BACKFILL,
            "segmented_audio": CPU_BACKFILL,
            "webdataset_shards": CPU_BACKFILL,
            "teacher_labels": None,  # Dagster's default: one run per partition, tagged dagster/partition
            "training_manifests": None,  # not partitioned
        }
        assert asset.backfill_policy == expected[asset.key.to_user_string()], asset.key
    assert CPU_BACKFILL.max_partitions_per_run == 8
    assert IO_RETRY.backoff == dg.Backoff.EXPONENTIAL and IO_RETRY.jitter == dg.Jitter.PLUS_MINUS
    for check in ALL_CHECKS:
        assert check.op.retry_policy is None


def test_permanent_storage_error_fails_without_retry(tmp_path, instance):
    register_partitions(instance, ["p"])
    result = dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=[audio_index],
        partition_key="p",
        instance=instance,
        raise_on_error=False,
        resources=stage_resources(str(tmp_path / "missing"), str(tmp_path / "l")),
    )
    assert not result.success
    types = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in types
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "does not exist" in str(failure.event_specific_data.error)


def test_transient_error_is_retried(tmp_path, instance, monkeypatch):
    raw = LocalStorage(tmp_path / "raw")
    raw.write_bytes("p/a.txt", b"no audio here")
    register_partitions(instance, ["p"])
    calls = {"n": 0}
    original = LocalStorage.iter_objects

    def flaky(self, prefix="", **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionResetError("injected: connection reset by peer")
        return original(self, prefix, **kwargs)

    monkeypatch.setattr(LocalStorage, "iter_objects", flaky)
    result = dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=[audio_index],
        partition_key="p",
        instance=instance,
        resources=stage_resources(raw.uri, str(tmp_path / "l")),
    )
    assert result.success  # after one retry (IO_RETRY: ~10 s delay with jitter)
    types = [e.event_type_value for e in result.all_events]
    assert types.count("STEP_UP_FOR_RETRY") == 1
