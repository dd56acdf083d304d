"""Shared fixtures: one synthetic demo corpus per test session, isolated Dagster homes."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from asr_distill.demo.corpus import CorpusReport, generate_corpus
from asr_distill.storage import LocalStorage
from tests.helpers import kill_processes_of

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStorage, CorpusReport]:
    """The small demo corpus (3 speech prefixes + ``broken/``), generated once, read-only for tests."""
    root = tmp_path_factory.mktemp("raw")
    store = LocalStorage(root)
    report = generate_corpus(store, seed=0, size="small")
    return store, report


@pytest.fixture()
def lake(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "lake")


@pytest.fixture()
def instance(tmp_path: Path):
    """A real (SQLite) Dagster instance in a temporary DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head started with ``ray start`` in its own processes (what a remote cluster is).

    Yields its GCS address (``127.0.0.1:<port>``); runs connect to it by address and leave it running.
    Stopped by killing its own processes (``ray stop`` would stop every cluster on the machine).
    """
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile

    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_agent_register_timeout_ms": "120000",
        # A loaded 2-core CI box can take long to start the GCS. (Ray waits a fixed 30 s for the raylet
        # to register: a start that misses it is retried below.)
        "RAY_gcs_rpc_server_connect_timeout_s": "60",
    }
    env.pop("RAY_ADDRESS", None)
    errors: list[str] = []
    for _attempt in range(2):  # a start that fails on a loaded machine is tried once more, on a new port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        temp = tempfile.mkdtemp(prefix="ray-hd-", dir="/tmp")
        cmd = [
            ray_bin,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            break
        errors.append(f"ray start exited {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
        kill_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)
    else:
        pytest.fail("\n\n".join(errors))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        kill_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)
