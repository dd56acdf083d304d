"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

import dagster as dg

from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.jobs import (
    clean_job,
    cpu_stages_job,
    discover_partitions,
    distill_job,
    index_job,
    labels_job,
    manifests_job,
    segment_job,
    shards_job,
)
from asr_distill.recovery import run_reaper_sensor, with_run_recovery
from asr_distill.resources import make_ray_resource, make_storage_resource, make_teacher_resource
from asr_distill.sensors import ALL_SENSORS
from asr_distill.settings import executor_name, lake_uri, raw_uri


def _executor(name: str) -> dg.ExecutorDefinition:
    """``in_process`` (default: the lineage is linear and each stage parallelises internally),
    ``multiprocess``, or ``k8s`` (one Kubernetes Job per step, dagster-k8s)."""
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"ASR_DISTILL_EXECUTOR must be in_process, multiprocess or k8s, not {name!r}")


def build_definitions(raw: str | None = None, lake: str | None = None) -> dg.Definitions:
    """Definitions for a raw store and a lake (defaults: ``$ASR_DISTILL_RAW`` / ``$ASR_DISTILL_LAKE``)."""
    return dg.Definitions(
        # Recovery from killed runs (asr_distill.recovery): each run records its worker and frees what
        # dead runs of this machine hold before its steps claim pool slots; the sensor does it while a daemon runs.
        executor=with_run_recovery(_executor(executor_name())),
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[
            discover_partitions,
            distill_job,
            cpu_stages_job,
            index_job,
            clean_job,
            segment_job,
            shards_job,
            labels_job,
            manifests_job,
        ],
        sensors=[*ALL_SENSORS, run_reaper_sensor],
        resources={
            "raw": make_storage_resource(raw or raw_uri()),
            "lake": make_storage_resource(lake or lake_uri()),
            "ray_cluster": make_ray_resource(),
            "teacher": make_teacher_resource(),
        },
    )


defs = build_definitions()
