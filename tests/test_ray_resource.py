"""The private local Ray resource under dagster-ray's lifecycle: started by the step, stopped by cleanup."""

from __future__ import annotations

import os

import dagster as dg
import ray

from asr_distill.resources.ray import (
    KEPT_CLUSTERS,
    PrivateLocalRay,
    RemoteRay,
    ensure_connected,
    workers_on_this_machine,
)


def test_workers_on_this_machine_is_a_resource_property() -> None:
    assert workers_on_this_machine(PrivateLocalRay())
    assert not workers_on_this_machine(RemoteRay(address="ray://head.example:10001"))

    class Other:  # dagster-ray's own resources (KubeRay) do not declare it: remote
        pass

    assert not workers_on_this_machine(Other())  # type: ignore[arg-type]


def test_private_cluster_is_stopped_by_dagster_ray_cleanup() -> None:
    KEPT_CLUSTERS.shutdown()
    context = dg.build_init_resource_context()
    # Not kept: dagster-ray's cleanup (policy "always") calls delete, which stops it and removes its dir.
    with dg.build_resources({"ray_cluster": PrivateLocalRay(num_cpus=1)}) as res:
        resource = res.ray_cluster
        assert not resource.connected  # lazy: nothing starts until a step asks
        ensure_connected(resource, context)
        temp_dir = resource._temp_dir
        assert ray.is_initialized() and temp_dir and os.path.isdir(temp_dir)
    assert not ray.is_initialized() and not os.path.exists(temp_dir)
    # (Reuse of a kept cluster, keep_alive=True, is exercised by every in-process lineage test.)
