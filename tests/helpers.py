"""Plain helpers shared by tests (fixtures live in conftest.py): import them from here, never from conftest."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from asr_distill.partitions import raw_prefix_partitions

REPO_ROOT = Path(__file__).resolve().parent.parent


def register_partitions(instance: dg.DagsterInstance, names: list[str]) -> None:
    instance.add_dynamic_partitions(raw_prefix_partitions.name, names)


def stage_resources(raw_uri: str | None, lake_uri: str, **teacher: object) -> dict:
    """Resources of every asset: storage, a private local Ray cluster (2 CPUs) and the CPU teacher.

    Ray and the teacher are only initialised when a selected asset needs them.
    """
    from asr_distill.resources import PrivateLocalRay, StorageResource, TeacherResource

    res: dict = {
        "lake": StorageResource(uri=lake_uri),
        "ray_cluster": PrivateLocalRay(num_cpus=2, keep_alive=True),
        # tiny.en unless a test asks otherwise: these are English partitions and tiny.en costs half of the
        # default (Whisper base) in CI; the default itself is tested on the Japanese partition.
        "teacher": TeacherResource(**{"num_actors": 2, "options": {"model": "tiny.en"}, **teacher}),
    }
    if raw_uri is not None:
        res["raw"] = StorageResource(uri=raw_uri)
    return res


def kill_processes_of(temp_dir: str) -> None:
    """SIGKILL the processes of a Ray session started under ``temp_dir`` (found by command line)."""
    import contextlib
    import signal

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)
