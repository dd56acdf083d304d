"""The README's commands, run for real: `make demo` in a fresh clone, and the CLI lines it documents."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO_ROOT


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_DISTILL_", "DAGSTER_", "PYTEST_"))}
    env.update(extra)
    return env


@pytest.mark.slow
def test_make_demo_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    proc = subprocess.run(
        ["make", "demo"],
        cwd=clone,
        env=_env(CI="true"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    out = proc.stdout
    lake = clone / "data" / "lake"
    assert f"lake      : {lake}" in out
    partitions = sorted(p.name for p in (clone / "data" / "raw").iterdir() if p.is_dir())
    # make demo writes a long-form partition and the multilingual ones: ja_read (Japanese, declared) and
    # mixed_lang (Japanese and English, no declared language)
    assert partitions == [
        "broken",
        "en_conversational",
        "en_mixed",
        "en_read",
        "ja_read",
        "longform",
        "mixed_lang",
    ]
    for p in partitions:
        index = lake / "audio_index" / p / "audio_index.parquet"
        assert str(index) in out
        assert pq.read_metadata(index).num_rows > 0
    # The long-form recordings were segmented (the other partitions have none: empty tables).
    recordings = pq.read_table(lake / "segmented_audio" / "longform" / "recordings.parquet").to_pylist()
    assert sorted(r["status"] for r in recordings) == ["no_speech", "ok", "ok", "ok"]
    assert pq.read_metadata(lake / "segmented_audio" / "en_read" / "recordings.parquet").num_rows == 0
    # One run over the range of all partitions, each partition worked through in turn.
    assert out.count("RUN_SUCCESS") == 1
    assert f"teacher_labels - partition {len(partitions)}/{len(partitions)}: {partitions[-1]}" in out
    assert out.count("connected to private local Ray") == 1  # one Ray start for the whole corpus
    # Every partition got its teacher labels (blocking checks, WER < 0.35 on references included, passed:
    # the runs succeeded), one labels file per shard.
    for p in partitions:
        current = json.loads((lake / "teacher_labels" / p / "current.json").read_text())
        shards = (
            pq.read_table(lake / "webdataset_shards" / p / "shards.parquet").column("shard_key").to_pylist()
        )
        assert sorted(current["shards"]) == sorted(shards)
        assert all((lake / key).exists() for key in current["labels"])

    # The default teacher (Whisper base) identified the languages: Japanese where declared, and each
    # clip of the undeclared mixed partition.
    def labels_of(p: str) -> pa.Table:
        files = json.loads((lake / "teacher_labels" / p / "current.json").read_text())["labels"]
        return pa.concat_tables([pq.read_table(lake / f) for f in files])

    assert set(labels_of("ja_read").column("detected_language").to_pylist()) == {"ja"}
    mixed = labels_of("mixed_lang")
    assert set(mixed.column("detected_language").to_pylist()) == {"ja", "en"}
    assert set(mixed.column("expected_language").to_pylist()) == {None}
    # ... and the manifest of the last run covers every partition, in all three formats.
    latest = json.loads((lake / "training_manifests" / "latest.json").read_text())
    version_dir = lake / "training_manifests" / latest["version"]
    manifest = pq.read_table(version_dir / "manifest.parquet")
    assert manifest.num_rows > 0 and set(manifest.column("partition").to_pylist()) <= set(partitions)
    assert (version_dir / "_MANIFEST.json").exists()
    assert (version_dir / "nemo" / "train" / "tarred_audio_manifest.jsonl").exists()
    assert (version_dir / "lhotse" / "train" / "cuts.jsonl.gz").exists()
    assert f"parquet : {version_dir / 'manifest.parquet'}" in out
    assert (clone / ".dagster_home" / "dagster.yaml").exists()

    # The CLI lines of the README work in that checkout, against the instance make demo set up.
    dagster = str(clone / ".venv" / "bin" / "dagster")
    env = _env(DAGSTER_HOME=str(clone / ".dagster_home"))
    run = subprocess.run(
        [
            dagster,
            "asset",
            "materialize",
            "-m",
            "asr_distill.definitions",
            "--select",
            "audio_index",
            "--partition",
            "en_read",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    tags = json.dumps({"dagster/partition": "broken"})
    run = subprocess.run(
        [dagster, "job", "execute", "-m", "asr_distill.definitions", "-j", "distill_job", "--tags", tags],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "RUN_SUCCESS" in log and "listing unchanged" in log  # the index was current: not re-probed
    assert "no actors started" in log and "Started a local Ray instance" not in log  # labels current
    # The CPU stages of a range of partitions in one run:
    tags = json.dumps(
        {"dagster/asset_partition_range_start": "broken", "dagster/asset_partition_range_end": "en_mixed"}
    )
    run = subprocess.run(
        [dagster, "job", "execute", "-m", "asr_distill.definitions", "-j", "cpu_stages_job", "--tags", tags],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "RUN_SUCCESS" in log and "partition 3/3: en_mixed" in log
    # The indexes were up to date, so the run reused them instead of re-probing.
    assert log.count("listing unchanged") == 3

    # `dagster dev -w workspace.yaml` serves the UI with every asset of the lineage.
    _check_dagster_dev_shows_assets(clone, env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_dagster_dev_shows_assets(clone: Path, env: dict[str, str]) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(clone / ".venv" / "bin" / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=clone,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        keys: set[str] = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "training_manifests" not in keys:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=10) as resp:
                    nodes = json.load(resp)["data"]["assetNodes"]
                keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
            except (OSError, KeyError, ValueError):
                time.sleep(2)
        assert {
            "raw_audio",
            "audio_index",
            "cleaned_audio",
            "segmented_audio",
            "webdataset_shards",
            "teacher_labels",
            "training_manifests",
        } <= keys, keys
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
