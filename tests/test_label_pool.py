"""Labelling core: shard reading and ``label_shard`` in-process, then the Ray actor pool on a private
local cluster (2 CPUs): several shards on 2 actors, skipping, failures, and an actor killed mid-shard."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asr_distill.stages.labels import (
    LABELS_SCHEMA,
    LabelInput,
    LabelPool,
    PoolConfig,
    ShardError,
    ShardResult,
    WebDatasetShardReader,
    label_shard,
    labels_version,
    split_member,
    write_labels,
)
from asr_distill.stages.labels.schema import META_FINGERPRINT, META_QUALITY
from asr_distill.storage import LocalStorage
from asr_distill.teachers import FasterWhisperConfig, TeacherLoadError
from asr_distill.teachers.base import Teacher, TeacherResult
from tests.helpers import kill_processes_of
from tests.labels_material import SENTENCES, ShardSample, espeak, write_shard

SR = 16_000


# -- material ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def voices() -> list[tuple[str, np.ndarray]]:
    return [(text, espeak(text)) for text in SENTENCES]


@pytest.fixture(scope="module")
def shard_store(tmp_path_factory, voices) -> tuple[LocalStorage, dict[str, list[str]]]:
    """Six good shards of 2-3 clips each (unique keys), plus odd ones; returns (store, shard -> keys)."""
    store = LocalStorage(tmp_path_factory.mktemp("shards"))
    layout: dict[str, list[str]] = {}
    for s in range(6):
        picks = [(s + j) % len(voices) for j in range(3 if s % 2 == 0 else 2)]
        samples = [
            ShardSample.speech(f"s{s}c{j}", voices[v][1], {"text": voices[v][0], "language": "en"})
            for j, v in enumerate(picks)
        ]
        layout[write_shard(store, f"train/shard-{s:06d}.tar", samples)] = [x.key for x in samples]
    odd = [
        ShardSample.speech("ok", voices[0][1], {"text": voices[0][0]}),
        ShardSample("undecodable", {"flac": b"this is not audio", "json": b'{"text": "x"}'}),
        ShardSample.speech("nan", np.full(SR, np.nan, np.float32), fmt="wav"),
        ShardSample.speech("long", np.zeros(31 * SR, np.float32)),
        ShardSample("no_audio", {"json": b'{"text": "lost"}'}),
        ShardSample("bad_json", {"flac": b"", "json": b"{not json"}),
    ]
    layout[write_shard(store, "odd/shard-000000.tar", odd)] = [x.key for x in odd]
    errors_only = [ShardSample(f"broken{i}", {"flac": b"not audio either"}) for i in range(2)]
    layout[write_shard(store, "odd/errors-only.tar", errors_only)] = [x.key for x in errors_only]
    dup = [ShardSample.speech("a", voices[1][1]), ShardSample.speech("b", voices[2][1])]
    write_shard(store, "odd/dup.tar", [*dup, ShardSample.speech("a", voices[3][1])])
    return store, layout


class EchoTeacher(Teacher):
    """A fast stand-in teacher for core tests: the text is the clip's duration."""

    backend = "echo"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _transcribe(self, items: Sequence[tuple[str, np.ndarray]]) -> list[TeacherResult]:
        self.calls.append([k for k, _ in items])
        return [
            TeacherResult(
                k,
                f"clip of {len(a) / SR:.1f} seconds",
                language="en",
                avg_logprob=-0.1,
                num_tokens=4,
                compression_ratio=1.0,
            )
            for k, a in items
        ]

    def fingerprint_fields(self) -> dict:
        return {"backend": "echo"}


# -- reader and core (no Ray) --------------------------------------------------------------------------
def test_split_member_follows_webdataset() -> None:
    assert split_member("a/b/key.flac") == ("a/b/key", "flac")
    assert split_member("key.seg.json") == ("key", "seg.json")
    assert split_member("noext") == ("noext", "")


def test_reader_yields_every_sample_with_reasons(shard_store, voices) -> None:
    store, layout = shard_store
    items = list(WebDatasetShardReader(str(store.root))("odd/shard-000000.tar"))
    assert [i.key for i in items] == layout["odd/shard-000000.tar"]
    by = {i.key: i for i in items}
    ok = by["ok"]
    assert ok.error is None and ok.audio.dtype == np.float32 and ok.reference_text == voices[0][0]
    assert ok.expected_language is None and abs(len(ok.audio) - len(voices[0][1])) <= 1
    assert np.max(np.abs(ok.audio - voices[0][1][: len(ok.audio)])) < 1e-3  # FLAC PCM_16 round trip
    assert by["undecodable"].error == "decode_error" and by["undecodable"].reference_text == "x"
    assert by["nan"].error == "non_finite_audio" and by["nan"].audio is None
    assert by["long"].error is None and by["long"].duration_s == pytest.approx(31.0)  # the teacher refuses it
    assert by["no_audio"].error == "missing_audio"
    assert by["bad_json"].error == "bad_metadata"


def test_label_shard_one_row_per_sample_in_order(shard_store, tmp_path) -> None:
    store, layout = shard_store
    teacher = EchoTeacher()
    table = label_shard(
        teacher,
        "odd/shard-000000.tar",
        WebDatasetShardReader(str(store.root))("odd/shard-000000.tar"),
        batch_size=1,
    )
    assert table.schema.equals(LABELS_SCHEMA.with_metadata(table.schema.metadata))
    assert table.column("sample_key").to_pylist() == layout["odd/shard-000000.tar"]
    rows = {r["sample_key"]: r for r in table.to_pylist()}
    assert teacher.calls == [["ok"]]  # only the decodable, finite, in-window clip was sent
    assert rows["ok"]["status"] == "ok" and rows["ok"]["error_reason"] is None and rows["ok"]["has_reference"]
    assert {k: r["error_reason"] for k, r in rows.items() if r["status"] == "error"} == {
        "undecodable": "decode_error",
        "nan": "non_finite_audio",
        "long": "too_long",
        "no_audio": "missing_audio",
        "bad_json": "bad_metadata",
    }
    assert all(r["flagged"] for r in rows.values() if r["status"] == "error")
    assert table.schema.metadata[META_FINGERPRINT] == teacher.fingerprint().encode()
    assert b"max_compression_ratio" in table.schema.metadata[META_QUALITY]
    lake = LocalStorage(tmp_path / "lake")
    info = write_labels(lake, "labels/p/v1/odd-shard-000000.parquet", table)
    back = pq.read_table(lake.root / info.key)
    assert (
        back.equals(table)
        and back.schema.metadata[META_FINGERPRINT] == table.schema.metadata[META_FINGERPRINT]
    )


def test_label_shard_batches_and_refuses_duplicate_keys(shard_store) -> None:
    store, _ = shard_store
    teacher = EchoTeacher()
    items = [LabelInput(f"k{i}", np.zeros(SR * (i + 1), np.float32)) for i in range(5)]
    table = label_shard(teacher, "mem", items, batch_size=2)
    assert teacher.calls == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    assert table.column("text").to_pylist()[4] == "clip of 5.0 seconds"
    with pytest.raises(ShardError, match="'a' occurs twice"):
        label_shard(EchoTeacher(), "odd/dup.tar", WebDatasetShardReader(str(store.root))("odd/dup.tar"))


# -- Ray pool --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """A private local cluster: explicit address="local" and its own temp dir, never someone else's head."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # On a busy machine the dashboard agent can take more than the raylet's default 15 s to come up.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    temps = []
    for attempt in range(2):
        temps.append(tempfile.mkdtemp(prefix="ray-lbl-", dir="/tmp"))  # short: socket paths are limited
        try:
            ray.init(
                address="local", num_cpus=2, include_dashboard=False, _temp_dir=temps[-1], log_to_driver=False
            )
            break
        except Exception:
            ray.shutdown()
            kill_processes_of(temps[-1])  # a half-started cluster leaves its processes behind
            if attempt:
                raise
    yield ray
    ray.shutdown()
    for temp in temps:
        kill_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def pool(ray_cluster):
    # 2 x 0.75 CPU: leaves room on the 2-CPU cluster for the one-actor pool of the versioning test
    with LabelPool(FasterWhisperConfig(), PoolConfig(num_actors=2, num_cpus=0.75, batch_size=1)) as p:
        yield p


def _collect(results: dict[str, ShardResult]):
    def on_result(r: ShardResult) -> None:
        assert r.shard_id not in results, f"{r.shard_id} reported twice"
        results[r.shard_id] = r

    return on_result


def _good(layout: dict[str, list[str]]) -> list[str]:
    return sorted(k for k in layout if k.startswith("train/"))


def test_pool_labels_every_shard_once(pool, shard_store) -> None:
    store, layout = shard_store
    shards = _good(layout) + ["odd/shard-000000.tar"]
    results: dict[str, ShardResult] = {}
    summary = pool.run(shards + shards[:2], WebDatasetShardReader(str(store.root)), _collect(results))
    assert sorted(results) == sorted(shards)
    assert summary.shards_seen == len(shards) and summary.shards_labelled == len(shards)
    assert summary.shards_failed == 0 and summary.retries == 0
    assert len({r.actor_pid for r in results.values()}) == 2  # both actors worked
    total = 0
    for sid, r in results.items():
        assert r.table.column("sample_key").to_pylist() == layout[sid]
        assert set(r.table.column("teacher_fingerprint").to_pylist()) == {pool.fingerprint}
        assert r.fingerprint == pool.fingerprint and r.attempts == 1
        total += r.table.num_rows
    assert summary.rows == total == sum(len(layout[s]) for s in shards)
    good = pa.concat_tables([results[s].table for s in _good(layout)])
    assert set(good.column("status").to_pylist()) == {"ok"}
    assert all(t for t in good.column("text").to_pylist())
    assert summary.errors == 5 and summary.audio_s > 0 and summary.rtf and summary.rtf > 0
    # the labels are the teacher's own: the same clip labelled in-process gives the same text
    local = FasterWhisperConfig().build()
    sid = _good(layout)[0]
    in_process = label_shard(local, sid, WebDatasetShardReader(str(store.root))(sid))
    assert in_process.column("text").to_pylist() == results[sid].table.column("text").to_pylist()
    assert local.fingerprint() == pool.fingerprint


def test_pool_skips_done_shards_per_fingerprint(pool, shard_store, ray_cluster) -> None:
    store, layout = shard_store
    shards = _good(layout)
    written: dict[str, set[str]] = {labels_version(pool.fingerprint): set(shards[:4])}  # what the lake holds
    results: dict[str, ShardResult] = {}
    summary = pool.run(
        shards,
        WebDatasetShardReader(str(store.root)),
        _collect(results),
        done=written[labels_version(pool.fingerprint)],
    )
    assert sorted(results) == shards[4:] and summary.shards_skipped == 4
    results.clear()
    summary = pool.run(
        shards, WebDatasetShardReader(str(store.root)), _collect(results), done=lambda s: s != shards[0]
    )
    assert list(results) == [shards[0]] and summary.shards_skipped == len(shards) - 1
    # a new teacher fingerprint is a new labels version: nothing of it is done yet
    other_cfg = PoolConfig(num_actors=1, num_cpus=0.5, start_timeout_s=300)
    with LabelPool(FasterWhisperConfig(initial_prompt="Read speech."), other_cfg) as other:
        assert labels_version(other.fingerprint) != labels_version(pool.fingerprint)
        results.clear()
        other.run(
            shards[:1],
            WebDatasetShardReader(str(store.root)),
            _collect(results),
            done=written.get(labels_version(other.fingerprint), set()),
        )
        assert list(results) == shards[:1] and results[shards[0]].fingerprint == other.fingerprint


def test_pool_reports_failed_shards_and_goes_on(pool, shard_store) -> None:
    store, layout = shard_store
    failures = []
    results: dict[str, ShardResult] = {}
    shards = ["missing/shard.tar", "odd/dup.tar", _good(layout)[1]]
    summary = pool.run(
        shards, WebDatasetShardReader(str(store.root)), _collect(results), on_failure=failures.append
    )
    assert list(results) == [_good(layout)[1]]
    kinds = {f.shard_id: (f.kind, f.attempts) for f in failures}
    assert kinds == {"missing/shard.tar": ("task_error", 3), "odd/dup.tar": ("malformed_shard", 1)}
    assert summary.shards_failed == 2 and summary.retries == 2
    assert "occurs twice" in next(f.error for f in failures if f.shard_id == "odd/dup.tar")


class StuckOnce:
    """A shard reader that hangs the first time it reads ``stuck_shard`` (a marker file remembers)."""

    def __init__(self, root: str, marker_dir: str, stuck_shard: str) -> None:
        self.root, self.marker_dir, self.stuck_shard = root, marker_dir, stuck_shard

    def __call__(self, shard_id: str):
        marker = Path(self.marker_dir) / "stuck-once"
        if shard_id == self.stuck_shard and not marker.exists():
            marker.touch()
            time.sleep(600)
        yield from WebDatasetShardReader(self.root)(shard_id)


def test_pool_kills_an_actor_stuck_on_a_shard(pool, shard_store, tmp_path, monkeypatch) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    store, layout = shard_store
    monkeypatch.setattr(pool, "config", replace(pool.config, shard_timeout_s=3.0))
    results: dict[str, ShardResult] = {}
    shard = "odd/errors-only.tar"  # labelled in milliseconds once it is read
    summary = pool.run([shard], StuckOnce(str(store.root), str(tmp_path), shard), _collect(results))
    assert (tmp_path / "stuck-once").exists()
    assert list(results) == [shard] and results[shard].attempts == 2
    assert summary.actor_failures >= 1 and summary.shards_failed == 0
    assert results[shard].table.column("error_reason").to_pylist() == ["decode_error"] * 2


def test_pool_survives_an_actor_killed_mid_shard(pool, shard_store) -> None:
    store, layout = shard_store
    shards = _good(layout)[:4]
    killed: dict[str, object] = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for st in pool.actor_status():
                if (
                    st["state"] == "alive" and st["shard"] is not None and st["samples_done"] >= 1
                ):  # mid-shard
                    killed.update(st)
                    os.kill(st["pid"], signal.SIGKILL)
                    return
            time.sleep(0.02)

    results: dict[str, ShardResult] = {}
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = pool.run(shards, WebDatasetShardReader(str(store.root)), _collect(results))
    thread.join(timeout=5)
    assert killed, "no actor was caught mid-shard"
    victim = killed["shard"]
    assert sorted(results) == shards and summary.shards_failed == 0
    assert summary.retries >= 1 and summary.actor_failures >= 1
    assert results[victim].attempts >= 2 and results[victim].actor_pid != killed["pid"]
    keys = Counter(k for r in results.values() for k in r.table.column("sample_key").to_pylist())
    assert keys == Counter(k for s in shards for k in layout[s])  # every sample labelled exactly once
    assert all(s == "ok" for r in results.values() for s in r.table.column("status").to_pylist())
    pool.wait_ready(120)
    pids = pool.actor_pids()
    assert killed["pid"] not in pids and len(pids) == 2  # restarted by Ray


def test_pool_start_failure_is_clear(ray_cluster) -> None:
    pool = LabelPool(FasterWhisperConfig(expected_sha256="0" * 64), PoolConfig(num_actors=1, num_cpus=0.5))
    with pytest.raises(TeacherLoadError, match="ModelHashMismatchError: model file .* expected 0{64}"):
        pool.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = pool.fingerprint


def test_pool_requires_a_connected_cluster(monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="ray.init"):
        LabelPool(FasterWhisperConfig()).start()


def test_shard_layout_fixture_is_sane(shard_store) -> None:
    _, layout = shard_store
    keys = [k for s in _good(layout) for k in layout[s]]
    assert len(keys) == len(set(keys)) == 15
