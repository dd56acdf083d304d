"""Issue 17, parts 2-4: every listed object accounted for on both backends, bad sidecars as rows, one
object version per clean row, and leftovers of killed writes swept (never a live writer's).

The OSS half runs against the loopback OSS-protocol server (``tests/oss_server``); the local half on a
directory. Hostile names are real file names and real object keys, the audio is real WAV.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from oss_server import store_options

from asr_distill import lake as L
from asr_distill.stages.clean import CleanConfig, run_clean
from asr_distill.stages.index import IndexOptions, run_index
from asr_distill.stages.index.schema import SIDECAR_MAX_BYTES
from asr_distill.stages.index.validation import validate_index_object
from asr_distill.storage import LocalStorage, Storage, open_storage
from asr_distill.storage.local import TMP_MARK, tmp_name
from asr_distill.storage.oss import RetryPolicy

pytest_plugins = ["oss_server.fixtures"]

P = "p"
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.01)
# Names both backends can hold: good clips beside a newline, a tab and a backslash.
SHARED_NAMES = ["p/good.wav", "p/good.txt", "p/bad\nname.wav", "p/tab\tname.wav", "p/back\\slash.wav"]
# Keys only an object store can hold: '..', '.' and empty segments, and a console's folder marker.
OSS_ONLY = {"p/x/../up.wav": "dot_or_empty_segment", "p/x/./here.wav": "dot_or_empty_segment",
            "p/x//empty.wav": "dot_or_empty_segment"}  # fmt: skip
MARKER = "p/folder/"


def _wav(seconds: float = 2.0, freq: float = 440.0, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(
        buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16"
    )
    return buf.getvalue()


def _content(name: str) -> bytes:
    return b"the good clip" if name.endswith(".txt") else _wav()


def _put_local(root: Path, items: dict[str, bytes]) -> None:
    for key, data in items.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _oss(server: Any, bucket: str, prefix: str = "raw") -> Storage:
    return open_storage(f"oss://{bucket}/{prefix}", **store_options(server, retry=FAST_RETRY))


def _rows(lake: Storage) -> list[dict[str, Any]]:
    with lake.local_copy(L.audio_index_key(P), suffix=".parquet") as path:
        rows = pq.read_table(path).to_pylist()
    # A row records its object's version: an ETag on OSS, an mtime locally. Everything else must agree.
    return [{k: v for k, v in r.items() if k not in ("etag", "mtime")} for r in rows]


INLINE = IndexOptions(executor="inline")


# -- part 2: every listed object is accounted for --------------------------------------------------------
def test_hostile_names_give_the_same_rows_on_both_backends(tmp_path, oss_server, oss_bucket) -> None:
    items = {name: _content(name) for name in SHARED_NAMES}
    local_raw = LocalStorage(tmp_path / "raw")
    _put_local(local_raw.root, items)
    local_lake = LocalStorage(tmp_path / "lake-local")
    s_local = run_index(local_raw, local_lake, P, INLINE)

    oss_raw = _oss(oss_server, oss_bucket)
    oss_server.seed_objects(oss_bucket, {f"raw/{k}": v for k, v in items.items()})
    oss_lake = LocalStorage(tmp_path / "lake-oss")
    s_oss = run_index(oss_raw, oss_lake, P, INLINE)

    rows = _rows(local_lake)
    assert rows == _rows(oss_lake)
    assert s_local.rows == s_oss.rows == 4 and s_local.ok_rows == s_oss.ok_rows == 1
    by_key = {r["key"]: r for r in rows}
    assert by_key["p/good.wav"]["probe_error"] is None and by_key["p/good.wav"]["text"] == "the good clip"
    assert by_key["p/good.wav"]["duration_s"] == pytest.approx(2.0)
    for bad, problem in [("p/bad\nname.wav", "control_character"), ("p/tab\tname.wav", "control_character"),
                         ("p/back\\slash.wav", "backslash")]:  # fmt: skip
        assert by_key[bad]["probe_error"] == "unaddressable_key"
        assert by_key[bad]["probe_detail"].startswith(problem)
    # The rows pass the index's pandera schema (reason codes, types) on both backends.
    for lake in (local_lake, oss_lake):
        assert validate_index_object(lake, L.audio_index_key(P)) == (
            [],
            {"rows_validated": 4, "failure_cases": 0},
        )
    # The clean stage quarantines them (never reads them) and keeps the good clip.
    for raw, lake in [(local_raw, local_lake), (oss_raw, oss_lake)]:
        c = run_clean(raw, lake, P, CleanConfig(min_duration_s=0.1), executor="inline")
        assert (c.kept, c.quarantined) == (1, 3)
        q = pq.read_table(lake.local_path(L.cleaned_quarantine_key(P))).to_pylist()
        assert all(r["reasons"] == ["probe_failed"] for r in q)


def test_oss_keys_no_read_can_address_are_rows_or_ignored_with_a_reason(
    tmp_path, oss_server, oss_bucket
) -> None:
    items = {"p/good.wav": _wav(), **{k: _wav() for k in OSS_ONLY}, MARKER: b""}
    oss_server.seed_objects(oss_bucket, {f"raw/{k}": v for k, v in items.items()})
    raw = _oss(oss_server, oss_bucket)
    assert [o.key for o in raw.iter_objects("p/")] == ["p/good.wav"]  # plain listings still skip them
    listed = list(raw.iter_objects("p/", include_unaddressable=True))
    assert len(listed) == len(items)
    lake = LocalStorage(tmp_path / "lake")
    s = run_index(raw, lake, P, IndexOptions(executor="thread", workers=2))
    rows = {r["key"]: r for r in _rows(lake)}
    assert set(rows) == {"p/good.wav", *OSS_ONLY}
    for key, problem in OSS_ONLY.items():
        assert rows[key]["probe_error"] == "unaddressable_key" and rows[key]["probe_detail"].startswith(
            problem
        )
    # Every listed object: a row, or ignored with a reason and a sample.
    assert s.rows + s.ignored_objects == len(items)
    assert dict(s.ignored_reasons) == {"directory_marker": 1}
    assert s.ignored_sample == [f"directory_marker: {MARKER!r}"]


def test_a_name_that_is_not_utf8_is_a_row(tmp_path) -> None:
    raw = LocalStorage(tmp_path / "raw")
    _put_local(raw.root, {"p/ok.wav": _wav()})
    (raw.root / "p").joinpath(os.fsdecode(b"caf\xe9.wav")).write_bytes(_wav())
    lake = LocalStorage(tmp_path / "lake")
    s = run_index(raw, lake, P, INLINE)
    rows = {r["key"]: r for r in _rows(lake)}
    assert s.rows == 2 and rows["p/caf\\xe9.wav"]["probe_error"] == "unaddressable_key"
    assert rows["p/caf\\xe9.wav"]["probe_detail"].startswith("not_unicode")


class NoWholeReads(LocalStorage):
    """Fails any whole-object read: sidecars must be read with a bounded range."""

    def read_bytes(self, key: str) -> bytes:
        raise AssertionError(f"read_bytes({key!r}) reads without a bound")


def test_nested_and_oversized_sidecars_are_sidecar_errors_and_the_step_succeeds(tmp_path) -> None:
    raw = NoWholeReads(tmp_path / "raw")
    deep = ("[" * 1000 + "]" * 1000).encode()  # 2 KB, 1,000 levels
    deeper = ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    _put_local(
        raw.root,
        {
            "p/a.wav": _wav(), "p/a.json": deep,
            "p/b.wav": _wav(), "p/b.json": deeper,
            "p/c.wav": _wav(), "p/c.txt": b"x" * (SIDECAR_MAX_BYTES + 1),
            "p/d.wav": _wav(), "p/d.txt": b"y" * SIDECAR_MAX_BYTES,
            "p/e.wav": _wav(), "p/e.json": b'{"text": "fine"',
        },
    )  # fmt: skip
    lake = LocalStorage(tmp_path / "lake")
    s = run_index(raw, lake, P, INLINE)
    rows = {r["key"]: r for r in _rows(lake)}
    assert s.rows == s.ok_rows == 5
    assert {k: r["sidecar_error"] for k, r in rows.items()} == {
        "p/a.wav": "too_deep",
        "p/b.wav": "too_deep",
        "p/c.wav": "too_large",
        "p/d.wav": None,
        "p/e.wav": "invalid_json",
    }
    assert rows["p/c.wav"]["text"] is None and len(rows["p/d.wav"]["text"]) == SIDECAR_MAX_BYTES
    assert dict(s.sidecar_errors) == {"too_deep": 2, "too_large": 1, "invalid_json": 1}


def test_a_sidecar_that_grew_after_the_listing_is_not_read_past_the_cap(tmp_path) -> None:
    from asr_distill.stages.index.build import Group, read_sidecars
    from asr_distill.storage import ObjectInfo

    raw = LocalStorage(tmp_path / "raw")
    _put_local(raw.root, {"p/a.txt": b"z" * (3 * SIDECAR_MAX_BYTES)})
    listed_small = ObjectInfo("p/a.txt", size=10)
    side = read_sidecars(raw, Group("p/a", txt=listed_small))
    assert side["sidecar_error"] == "too_large" and side["text"] is None


# -- part 3: one object version per row ------------------------------------------------------------------
def _rewrite_same_size(path: Path) -> None:
    data = _wav(freq=880.0)
    assert len(data) == path.stat().st_size
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 5_000_000_000, before + 5_000_000_000))


def test_a_local_object_rewritten_between_index_and_clean_is_quarantined(tmp_path) -> None:
    raw = LocalStorage(tmp_path / "raw")
    _put_local(raw.root, {"p/a.wav": _wav(), "p/b.wav": _wav(freq=330.0)})
    lake = LocalStorage(tmp_path / "lake")
    run_index(raw, lake, P, INLINE)
    _rewrite_same_size(raw.root / "p/a.wav")  # same size: only the mtime tells
    c = run_clean(raw, lake, P, CleanConfig(min_duration_s=0.1), executor="inline")
    assert (c.kept, c.quarantined) == (1, 1) and c.reason_counts["changed_since_index"] == 1
    [q] = pq.read_table(lake.local_path(L.cleaned_quarantine_key(P))).to_pylist()
    assert q["key"] == "p/a.wav" and q["reasons"] == ["changed_since_index"]
    assert "mtime" in q["decode_detail"]
    # No measurement of the new bytes beside the index's facts about the old ones.
    assert q["pcm_blake3"] is None and q["source_blake3"] is None and q["decoded_duration_s"] is None
    # Re-indexing picks the new version up; the clean after it keeps it.
    run_index(raw, lake, P, INLINE)
    assert run_clean(raw, lake, P, CleanConfig(min_duration_s=0.1), executor="inline").kept == 2


def test_an_oss_object_rewritten_between_index_and_clean_is_quarantined(
    tmp_path, oss_server, oss_bucket
) -> None:
    oss_server.seed_objects(oss_bucket, {"raw/p/a.wav": _wav(), "raw/p/b.wav": _wav(freq=330.0)})
    raw = _oss(oss_server, oss_bucket)
    lake = LocalStorage(tmp_path / "lake")
    run_index(raw, lake, P, INLINE)
    oss_server.seed_objects(oss_bucket, {"raw/p/a.wav": _wav(freq=880.0)})  # same size, new ETag
    start = oss_server.mark()
    c = run_clean(raw, lake, P, CleanConfig(min_duration_s=0.1), executor="thread", workers=1)
    assert (c.kept, c.quarantined) == (1, 1) and c.reason_counts["changed_since_index"] == 1
    [q] = pq.read_table(lake.local_path(L.cleaned_quarantine_key(P))).to_pylist()
    assert q["key"] == "p/a.wav" and "etag" in q["decode_detail"]
    # The version comes from the read itself: one GET per clip, no HEAD.
    calls = [c for c in oss_server.calls_since(start) if c.key.startswith("raw/p/")]
    assert sorted(c.method for c in calls) == ["GET", "GET"]


# -- part 4: leftovers of killed writes ------------------------------------------------------------------
WRITER = """
import sys, time
from asr_distill.storage import LocalStorage
lake = LocalStorage(sys.argv[1])
with lake.open_write(sys.argv[2]) as fh:
    fh.write(b"partial tar bytes")
    fh.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


def _temporaries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(TMP_MARK)) if folder.is_dir() else []


def test_a_killed_writers_temporary_is_swept_and_a_live_ones_kept(tmp_path) -> None:
    lake = LocalStorage(tmp_path / "lake")
    folder = lake.root / "webdataset_shards/p/00"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(lake.root), "webdataset_shards/p/00/shard-000000.tar"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"writing\n"
        [live] = _temporaries(folder)
        assert f".{proc.pid}." in live  # the writer is named in the temporary
        # Live: kept even when older than the age limit.
        old = time.time() - 7200
        os.utime(folder / live, (old, old))
        r = lake.sweep_temporaries("webdataset_shards/p/", max_age_s=3600)
        assert (r.removed, r.kept) == (0, 1) and _temporaries(folder) == [live]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _temporaries(folder) == [live]  # what SIGKILL leaves behind
        assert [o.key for o in lake.iter_objects()] == []  # never listed
        r = lake.sweep_temporaries("webdataset_shards/p/", max_age_s=3600)
        assert (r.removed, r.kept) == (1, 0) and _temporaries(folder) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stages_sweep_stale_temporaries_of_their_folder_and_count_them(tmp_path, monkeypatch) -> None:
    raw = LocalStorage(tmp_path / "raw")
    _put_local(raw.root, {"p/a.wav": _wav()})
    lake = LocalStorage(tmp_path / "lake")
    folder = lake.root / "audio_index/p"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    old = time.time() - 7200
    mine = tmp_name("audio_index.parquet")  # this (live) process
    dead_name = mine.replace(f".{os.getpid()}.", f".{dead_pid}.", 1)
    other_host = TMP_MARK + "0123abcd.1.1.ffff-audio_index.parquet"
    legacy_recent = TMP_MARK + "9f8e7d6c5b4a-audio_index.parquet"
    for name in (mine, dead_name, other_host, legacy_recent):
        (folder / name).write_bytes(b"partial")
    for name in (mine, dead_name, other_host):
        os.utime(folder / name, (old, old))
    s = run_index(raw, lake, P, INLINE)
    assert s.swept_temporaries == 2  # the dead writer's and the old one of another host
    assert _temporaries(folder) == sorted([mine, legacy_recent])
    # The age is a setting.
    monkeypatch.setenv("ASR_DISTILL_TMP_MAX_AGE_S", "0")
    c = run_clean(raw, lake, P, CleanConfig(min_duration_s=0.1), executor="inline")
    assert c.swept_temporaries == 0  # its own folder holds none
    assert run_index(raw, lake, P, INLINE).swept_temporaries == 1  # the recent one of an unknown writer
    assert _temporaries(folder) == [mine]  # a live writer's: never
    monkeypatch.setenv("ASR_DISTILL_TMP_MAX_AGE_S", "soon")
    with pytest.raises(ValueError, match="ASR_DISTILL_TMP_MAX_AGE_S"):
        run_index(raw, lake, P, INLINE)


def test_scratch_folders_of_killed_processes_are_swept_and_live_ones_kept(tmp_path) -> None:
    """Copies of remote objects and staged uploads live in ``asrd-<kind>-<owner>.*`` folders of the
    temporary directory; a SIGKILLed process cannot remove its own, the next stage's sweep does."""
    from asr_distill.storage.scratch import scratch_prefix, sweep_scratch

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    mine = scratch_prefix("copy") + "abc"
    dead_name = mine.replace(f".{os.getpid()}.", f".{dead_pid}.", 1)
    other_host = "asrd-write-0123abcd.1.1.xyz"
    unrelated = "asrd-something-else"
    old = time.time() - 7200
    for name in (mine, dead_name, other_host, unrelated):
        (tmp_path / name).mkdir()
        (tmp_path / name / "object.wav").write_bytes(b"x" * 100)
        for p in (tmp_path / name / "object.wav", tmp_path / name):
            os.utime(p, (old, old))
    fresh_dead = scratch_prefix("stage").replace(f".{os.getpid()}.", f".{dead_pid}.", 1) + "new"
    (tmp_path / fresh_dead).mkdir()
    r = sweep_scratch(3600, root=tmp_path)
    assert (r.removed, r.removed_bytes) == (1, 100)
    assert sorted(os.listdir(tmp_path)) == sorted([mine, other_host, unrelated, fresh_dead])
    assert sweep_scratch(0, root=tmp_path).removed == 1  # the dead one modified just now, with no age
    assert sorted(os.listdir(tmp_path)) == sorted([mine, other_host, unrelated])


def test_copies_of_remote_objects_live_in_folders_named_for_their_process(
    tmp_path, oss_server, oss_bucket
) -> None:
    from oss_server import store_options

    from asr_distill.storage import open_storage

    store = open_storage(f"oss://{oss_bucket}/s", **store_options(oss_server))
    store.write_bytes("a.wav", b"RIFF")
    with store.versioned_copy("a.wav", suffix=".wav") as (path, _info):
        assert path.parent.name.startswith("asrd-copy-") and f".{os.getpid()}." in path.parent.name
    with store.local_copy("a.wav") as path:
        assert path.parent.name.startswith("asrd-copy-") and f".{os.getpid()}." in path.parent.name
    assert not path.exists()
