"""index, clean and shards as Ray tasks: the same lake bytes as the local pool, worker deaths isolated,
stores travelling without credentials, and the assets' selection rule.

One private local cluster (2 CPUs, kept) serves the module; lineage tests in the same session reuse it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys

import dagster as dg
import pytest
import ray.cloudpickle as ray_cloudpickle

from asr_distill import lake as layout
from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.resources.ray import (
    KEPT_CLUSTERS,
    PrivateLocalRay,
    RemoteRay,
    cpu_stage_executor,
    shares_filesystem,
)
from asr_distill.stages._procpool import OrderedPool
from asr_distill.stages._raypool import RayTasks, dumps_args
from asr_distill.stages.clean import run_clean
from asr_distill.stages.clean.core import clean_partition, read_index_rows
from asr_distill.stages.index.build import IndexOptions, run_index
from asr_distill.stages.shards import run_shards
from asr_distill.storage import LocalStorage
from tests.helpers import register_partitions, stage_resources

PARTS = ["broken", "en_read"]

# The cluster's workers cannot import this test module: its test-only functions and stores travel by
# value (what Ray's cloudpickle does for a driver script's own functions).
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    """The private local cluster the lineage helpers use (same settings: reused, not restarted)."""
    import ray

    resource = PrivateLocalRay(num_cpus=2, keep_alive=True)
    resource.connect(None)
    assert ray.is_initialized() and KEPT_CLUSTERS.reusable(resource._settings()) is not None
    # Left up for later modules of the session (kept clusters are shut down when the process exits).
    return resource


def _lake_bytes(lake: LocalStorage, prefixes: list[str]) -> dict[str, str]:
    return {
        o.key: hashlib.sha256(lake.read_bytes(o.key)).hexdigest()
        for prefix in prefixes
        for o in lake.iter_objects(prefix)
    }


def _stage_prefixes(partition: str) -> list[str]:
    return [
        layout.audio_index_key(partition).rpartition("/")[0] + "/",
        layout.cleaned_kept_key(partition).rpartition("/")[0] + "/",
        layout.shard_layout(partition).prefix,
    ]


def _run_stages(raw: LocalStorage, lake: LocalStorage, executor) -> None:
    for p in PARTS:
        index_executor = "process" if executor == "process" else executor
        run_index(raw, lake, p, IndexOptions(executor=index_executor, chunk_objects=4))
        run_clean(raw, lake, p, executor=executor)
        run_shards(raw, lake, p, executor=executor)


@pytest.fixture(scope="module")
def pool_lake(demo_corpus, tmp_path_factory) -> LocalStorage:
    raw, _ = demo_corpus
    lake = LocalStorage(tmp_path_factory.mktemp("pool-lake"))
    _run_stages(raw, lake, "process")
    return lake


def test_stages_write_the_same_lake_bytes_through_ray_as_through_the_local_pool(
    cluster, demo_corpus, pool_lake, tmp_path
) -> None:
    raw, _ = demo_corpus
    prefixes = [x for p in PARTS for x in _stage_prefixes(p)]
    expected = _lake_bytes(pool_lake, prefixes)
    assert any(k.endswith(".tar") for k in expected) and any("quarantine" in k for k in expected)
    # Stores reopened on the workers (a remote cluster's way), then shipped as opened (the local one's).
    for executor in ("ray", RayTasks(ship_stores=True)):
        lake = LocalStorage(tmp_path / str(executor))
        _run_stages(raw, lake, executor)
        assert _lake_bytes(lake, prefixes) == expected


# -- worker deaths ---------------------------------------------------------------------------------------
def _die_on_crash_key(key: str) -> None:
    if key.endswith("crash.wav"):
        os._exit(19)


class KillingStore(LocalStorage):
    """Reading a ``*crash.wav`` kills the process (a stand-in for a native decoder crash), whichever
    way the stage reads it."""

    def versioned_copy(self, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        _die_on_crash_key(key)
        return super().versioned_copy(key, *args, **kwargs)

    def open_read(self, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        _die_on_crash_key(key)
        return super().open_read(key, *args, **kwargs)

    def read_bytes(self, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        _die_on_crash_key(key)
        return super().read_bytes(key, *args, **kwargs)


def _double_or_die(chunk: list[int], factor: int) -> list[int]:
    out = []
    for x in chunk:
        if x == 5:
            os._exit(7)
        if x == 9:
            raise KeyError("nine")
        out.append(x * factor)
    return out


def test_a_dying_task_is_redone_one_item_per_task_and_only_its_culprit_fails(cluster) -> None:
    pool = OrderedPool(_double_or_die, (3,), on_crash=lambda x, d: -x, executor="ray", workers=2, name="t")
    chunks = [[1, 2], [3, 4, 5, 6], [7, 8]]
    assert [r for c in pool.map(chunks, in_flight=2) for r in c] == [3, 6, 9, 12, -5, 18, 21, 24]
    assert pool.restarts == 2  # the chunk, then the culprit alone
    # An exception raised by the function is raised here, as its own type (not a crash row).
    pool = OrderedPool(_double_or_die, (3,), on_crash=lambda x, d: -x, executor="ray", workers=2, name="t")
    with pytest.raises(KeyError, match="nine"):
        list(pool.map([[8], [9]], in_flight=2))


def test_a_clip_that_kills_its_ray_worker_costs_one_row(cluster, demo_corpus, pool_lake, tmp_path) -> None:
    raw, _ = demo_corpus
    store = KillingStore(raw.root)
    rows = list(read_index_rows(pool_lake, layout.audio_index_key("en_read")))[:5]
    crash = dict(rows[2], key=rows[2]["key"][:-4] + "-crash.wav")
    rows = sorted([*rows, crash], key=lambda r: r["key"])
    out = [r for batch in clean_partition(rows, store, executor="ray", chunk_size=3) for r in batch]
    assert [r["key"] for r in out] == [r["key"] for r in rows]
    crashed = [r for r in out if r["decode_error"] == "worker_crashed"]
    assert [r["key"] for r in crashed] == [crash["key"]]
    assert "worker process died" in crashed[0]["decode_detail"]
    assert all(r["decode_error"] is None for r in out if r is not crashed[0])


# -- what travels --------------------------------------------------------------------------------------
def test_an_oss_store_travels_without_credentials_and_reopens_with_the_workers_own(monkeypatch) -> None:
    from asr_distill.storage.oss import OSSStorage

    store = OSSStorage(
        "oss://bucket/lake",
        endpoint="oss-cn-hangzhou.aliyuncs.com",
        access_key_id="LTAIdriverid",
        access_key_secret="driver-secret-XYZ",
        security_token="driver-token-XYZ",
        part_size=1 << 20,
    )
    sent = dumps_args((store, "p"), ship_stores=False)
    for secret in (b"LTAIdriverid", b"driver-secret-XYZ", b"driver-token-XYZ"):
        assert secret not in sent
    assert secret in dumps_args((store, "p"), ship_stores=True)  # the private local cluster's way
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Exception, match="no OSS credentials on this Ray worker"):
        pickle.loads(sent)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "LTAIworkerid")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "worker-secret")
    reopened, partition = pickle.loads(sent)
    assert partition == "p" and reopened.uri == store.uri and reopened.endpoint == store.endpoint
    assert reopened.part_size == 1 << 20 and reopened._credentials == ("LTAIworkerid", "worker-secret", "")


# -- the selection rule ----------------------------------------------------------------------------------
def test_the_selection_rule(cluster, tmp_path, monkeypatch) -> None:
    context = dg.build_asset_context()
    local = {"raw": LocalStorage(tmp_path)}
    here = PrivateLocalRay(num_cpus=2, keep_alive=True)
    remote = RemoteRay(address="ray://head.example:10001")
    assert cpu_stage_executor("auto", here, local, context, "s") is None  # no cluster started by default
    assert cpu_stage_executor("local", remote, local, context, "s") is None
    with pytest.raises(dg.Failure, match="local directory"):
        cpu_stage_executor("auto", remote, local, context, "s")
    with pytest.raises(dg.Failure, match="executor must be one of"):
        cpu_stage_executor("cluster", here, local, context, "s")
    assert shares_filesystem(RemoteRay(address="ray://h:10001", shared_filesystem=True))
    monkeypatch.setenv("ASR_DISTILL_RAY_SHARED_FS", "1")
    assert shares_filesystem(remote)
    assert cpu_stage_executor("local", remote, local, context, "s") is None
    # Asked for explicitly: the private cluster (the kept one, reused), stores shipped as opened.
    assert cpu_stage_executor("ray", here, local, context, "s") == RayTasks(ship_stores=True)


def test_the_assets_run_their_chunks_on_the_cluster_when_asked(
    cluster, demo_corpus, pool_lake, tmp_path, instance
):
    raw, _ = demo_corpus
    lake = LocalStorage(tmp_path / "lake")
    register_partitions(instance, ["en_read"])
    selection = dg.AssetSelection.assets("audio_index", "cleaned_audio", "webdataset_shards")
    ray_config = {"config": {"executor": "ray"}}
    result = dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=selection,
        partition_key="en_read",
        instance=instance,
        resources=stage_resources(raw.uri, lake.uri),
        run_config={"ops": {n: ray_config for n in ("audio_index", "cleaned_audio", "webdataset_shards")}},
    )
    assert result.success
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    for asset in ("audio_index", "cleaned_audio", "webdataset_shards"):
        assert any(f"{asset}: per-file work as Ray tasks on private local Ray" in m for m in logs), asset
    prefixes = _stage_prefixes("en_read")
    assert _lake_bytes(lake, prefixes) == _lake_bytes(pool_lake, prefixes)


def test_segmentation_writes_the_same_lake_bytes_through_ray_as_through_the_local_pool(
    cluster, tmp_path
) -> None:
    """Long-form recordings: one recording per task, each task writing its segment tar to the lake."""
    from asr_distill.stages.segment import run_segment
    from asr_distill.stages.segment.config import SegmentStageConfig
    from tests.segments_fixtures import write_long_recordings

    raw = LocalStorage(tmp_path / "raw")
    part = "longform"
    write_long_recordings(raw.root, part, tmp_path)
    digests = []
    for executor in ("process", RayTasks(ship_stores=True)):
        lake = LocalStorage(tmp_path / ("pool" if executor == "process" else "ray"))
        run_index(raw, lake, part)
        run_clean(raw, lake, part)
        summary = run_segment(raw, lake, part, SegmentStageConfig(executor=executor))
        assert summary.segmented >= 2 and summary.kept_segments > 0
        digests.append(_lake_bytes(lake, [layout.segmented_prefix(part)]))
    assert any(k.endswith(".tar") for k in digests[0])
    assert digests[0] == digests[1]


def test_a_remote_cluster_runs_the_stages_by_default_with_stores_reopened_there(
    demo_corpus, pool_lake, tmp_path, instance, ray_head, monkeypatch
):
    """A separately started head reached by address (what a remote cluster is): executor "auto" runs
    the chunks there; the local stores are accepted because the filesystem is declared shared (the
    head's workers are processes of this machine), and they are reopened by path, not shipped.
    Last in the module: connecting to the head stops the private cluster kept above."""
    raw, _ = demo_corpus
    lake = LocalStorage(tmp_path / "lake")
    register_partitions(instance, ["en_read"])
    monkeypatch.setenv("ASR_DISTILL_RAY_SHARED_FS", "1")
    resources = {**stage_resources(raw.uri, lake.uri), "ray_cluster": RemoteRay(address=ray_head)}
    result = dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=dg.AssetSelection.assets("audio_index", "cleaned_audio", "webdataset_shards"),
        partition_key="en_read",
        instance=instance,
        resources=resources,
    )
    assert result.success
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    for asset in ("audio_index", "cleaned_audio", "webdataset_shards"):
        expected = f"{asset}: per-file work as Ray tasks on Ray cluster at {ray_head} (its workers' own"
        assert any(expected in m for m in logs), asset
    prefixes = _stage_prefixes("en_read")
    assert _lake_bytes(lake, prefixes) == _lake_bytes(pool_lake, prefixes)
