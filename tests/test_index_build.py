"""Index builder: sidecar grouping, accounting of every object, re-runs, bounded streaming."""

from __future__ import annotations

import json
import logging
import os

import pyarrow.parquet as pq
import pytest

from asr_distill import lake as layout
from asr_distill.stages import _procpool as procpool
from asr_distill.stages.index.build import IndexOptions, build_index, group_listing, read_sidecars
from asr_distill.storage import LocalStorage, ObjectInfo


def _objs(*keys: str) -> list[ObjectInfo]:
    return [ObjectInfo(k, 1) for k in sorted(keys)]


def test_grouping_matches_sidecars_to_their_audio_in_a_sorted_stream():
    keys = [
        "p/a.wav",
        "p/a.txt",
        "p/a-b.wav",
        "p/a.b.wav",
        "p/a.b.json",
        "p/b.flac",
        "p/b/c.wav",
        "p/b/c.json",
        "p/orphan.txt",
        "p/notes.md",
        "p/_SUCCESS",
        "p/x y é.mp3",
        "p/x y é.TXT",
    ]
    ignored: list[str] = []
    groups = {g.stem: g for g in group_listing(_objs(*keys), lambda o, _reason: ignored.append(o.key))}
    assert [o.key for o in groups["p/a"].audio] == ["p/a.wav"] and groups["p/a"].txt.key == "p/a.txt"
    assert groups["p/a.b"].json.key == "p/a.b.json" and groups["p/a.b"].txt is None
    assert groups["p/a-b"].txt is None and groups["p/b"].json is None
    assert groups["p/b/c"].json.key == "p/b/c.json"
    assert groups["p/orphan"].audio == []
    assert groups["p/x y é"].txt.key == "p/x y é.TXT"
    assert sorted(ignored) == ["p/_SUCCESS", "p/notes.md"]
    # Every listed object is in exactly one group or ignored.
    seen = [o.key for g in groups.values() for o in g.audio]
    seen += [s.key for g in groups.values() for s in (g.txt, g.json) if s]
    assert sorted(seen + ignored) == sorted(keys)


def test_grouping_window_stays_small():
    """Pending groups never pile up: the window only holds stems that share a prefix."""
    import asr_distill.stages.index.build as b

    keys = [f"p/{i:06d}.wav" for i in range(20_000)] + [f"p/{i:06d}.txt" for i in range(20_000)]
    max_pending = 0
    original = b.Group

    class Spy(original):  # type: ignore[misc,valid-type]
        live = 0

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            Spy.live += 1

    n = 0
    b.Group = Spy
    try:
        for _g in group_listing(_objs(*keys)):
            n += 1
            max_pending = max(max_pending, Spy.live - n)
    finally:
        b.Group = original
    assert n == 20_000
    assert max_pending <= 2


def test_sidecar_errors(tmp_path):
    store = LocalStorage(tmp_path)
    store.write_bytes("p/a.txt", "café".encode("latin-1"))
    store.write_bytes("p/b.json", b'{"text": "hi", "speaker": 3}')
    store.write_bytes("p/c.json", b'["not", "an", "object"]')
    store.write_bytes("p/d.json", b'{"text": "cut')
    store.write_bytes("p/e.txt", b"hello there")
    store.write_bytes("p/e.json", b'{"text": "hello  world", "language": "en", "speaker": "s1"}')
    store.write_bytes("p/f.json", '{"text": " 你好 ", "language": "zh"}'.encode())
    groups = {g.stem: g for g in group_listing(store.iter_objects("p/"))}
    got = {stem: read_sidecars(store, g) for stem, g in groups.items()}
    assert got["p/a"]["sidecar_error"] == "not_utf8" and got["p/a"]["text"] is None
    assert (
        got["p/b"]["sidecar_error"] == "bad_field"
        and got["p/b"]["text"] == "hi"
        and got["p/b"]["speaker"] is None
    )
    assert got["p/c"]["sidecar_error"] == "invalid_json"
    assert got["p/d"]["sidecar_error"] == "invalid_json"
    assert got["p/e"]["sidecar_error"] == "conflicting_sidecars" and got["p/e"]["text"] == "hello  world"
    assert got["p/e"]["speaker"] == "s1" and got["p/e"]["language"] == "en"
    assert got["p/f"] == {
        "text": "你好",
        "language": "zh",
        "speaker": None,
        "sidecar_key": "p/f.json",
        "sidecar_error": None,
    }


@pytest.mark.parametrize("prefix", ["en_read", "broken"])
def test_index_accounts_for_every_audio_object(demo_corpus, lake, prefix):
    store, report = demo_corpus
    partitions = {e.prefix for e in report.entries}
    assert prefix in partitions
    out = layout.audio_index_key(prefix)
    summary = build_index(
        store, lake, prefix, f"{prefix}/", out, IndexOptions(workers=4, max_in_flight=3, batch_rows=4)
    )
    table = pq.read_table(lake.local_path(out))
    audio = sorted(e.key for e in report.entries if e.prefix == prefix and e.kind == "audio")
    assert sorted(table.column("key").to_pylist()) == audio
    assert table.num_rows == summary.rows == len(audio)
    assert len(set(table.column("key").to_pylist())) == table.num_rows
    assert summary.ignored_objects >= 1  # the _SUCCESS marker
    rows = {r["key"]: r for r in table.to_pylist()}
    for e in report.entries:
        if e.prefix != prefix or e.kind != "audio":
            continue
        r = rows[e.key]
        assert r["partition"] == prefix
        if e.outcome == "ok" and e.sidecar_key:
            assert r["text"] == e.text, e.key
        if e.outcome == "ok" and e.sidecar_key and e.sidecar_key.endswith(".json"):
            doc = json.loads(store.read_bytes(e.sidecar_key))
            assert (r["speaker"], r["language"]) == (doc.get("speaker"), doc.get("language")), e.key
    if prefix == "broken":
        errors = {r["probe_error"] for r in rows.values()} - {None}
        assert {"empty_object", "unrecognised_format", "malformed_header", "zero_channels"} <= errors
        assert any(r["sidecar_error"] == "not_utf8" for r in rows.values())


def test_index_is_deterministic_and_not_redone(demo_corpus, tmp_path):
    store, _ = demo_corpus
    a, b = LocalStorage(tmp_path / "a"), LocalStorage(tmp_path / "b")
    key = layout.audio_index_key("en_mixed")
    s1 = build_index(store, a, "en_mixed", "en_mixed/", key, IndexOptions(workers=8))
    s2 = build_index(store, b, "en_mixed", "en_mixed/", key, IndexOptions(workers=1, max_in_flight=1))
    assert not s1.skipped and not s2.skipped
    assert a.read_bytes(key) == b.read_bytes(key)  # byte-identical whatever the concurrency
    before = a.stat(key)
    s3 = build_index(store, a, "en_mixed", "en_mixed/", key)
    assert s3.skipped and s3.rows == s1.rows and s3.seconds == pytest.approx(s1.seconds)
    assert a.stat(key).mtime == before.mtime  # not rewritten
    s4 = build_index(store, a, "en_mixed", "en_mixed/", key, force=True)
    assert not s4.skipped and a.read_bytes(key) == b.read_bytes(key)


def test_changed_prefix_is_reindexed(demo_corpus, tmp_path):
    src, report = demo_corpus
    raw, lake = LocalStorage(tmp_path / "raw"), LocalStorage(tmp_path / "lake")
    keys = [e.key for e in report.entries if e.prefix == "en_read"][:6]
    for k in keys:
        raw.write_bytes(k, src.read_bytes(k))
    out = layout.audio_index_key("en_read")
    first = build_index(raw, lake, "en_read", "en_read/", out)
    raw.delete(keys[0])
    second = build_index(raw, lake, "en_read", "en_read/", out)
    assert not second.skipped
    assert pq.read_metadata(lake.local_path(out)).num_rows <= first.rows


def test_empty_prefix_writes_an_empty_index(tmp_path):
    raw, lake = LocalStorage(tmp_path / "raw"), LocalStorage(tmp_path / "lake")
    raw.write_bytes("p/readme.md", b"nothing to see")
    out = layout.audio_index_key("p")
    s = build_index(raw, lake, "p", "p/", out)
    assert s.rows == 0 and s.ignored_objects == 1
    assert pq.read_table(lake.local_path(out)).num_rows == 0


# -- executors: the process pool, the thread pool and inline probing give the same file -------------


class CrashingStore(LocalStorage):
    """Kills the probing process on one key (a stand-in for a crash inside a native decoder)."""

    def local_path(self, key):
        if key.endswith("crash.wav"):
            os._exit(13)
        return super().local_path(key)


@pytest.mark.parametrize("prefix", ["en_mixed", "broken"])
def test_pooled_index_is_byte_identical_to_serial(demo_corpus, tmp_path, prefix):
    store, _ = demo_corpus
    key = layout.audio_index_key(prefix)
    variants = {
        "inline": IndexOptions(executor="inline"),
        "process": IndexOptions(executor="process", workers=2, chunk_objects=3, max_in_flight=4),
        "auto_pool": IndexOptions(pool_min_objects=0, chunk_objects=2),
        "thread": IndexOptions(executor="thread", workers=3),
    }
    out = {}
    for name, opts in variants.items():
        lake = LocalStorage(tmp_path / name)
        summary = build_index(store, lake, prefix, f"{prefix}/", key, opts)
        out[name] = (
            lake.read_bytes(key),
            summary.rows,
            summary.ok_rows,
            summary.fingerprint,
            summary.ignored_objects,
        )
    assert out["inline"][1] > 3
    for name in variants:
        assert out[name] == out["inline"], name


def test_small_listings_are_probed_without_a_pool(demo_corpus, tmp_path, monkeypatch):
    store, _ = demo_corpus
    key = layout.audio_index_key("en_read")
    expected = LocalStorage(tmp_path / "a")
    build_index(store, expected, "en_read", "en_read/", key, IndexOptions(executor="inline"))

    def no_pool(self):
        raise AssertionError("a pool was started for a small listing")

    monkeypatch.setattr(procpool.OrderedPool, "_new_pool", no_pool)
    lake = LocalStorage(tmp_path / "b")
    build_index(store, lake, "en_read", "en_read/", key, IndexOptions(pool_min_objects=10_000))
    assert lake.read_bytes(key) == expected.read_bytes(key)


def test_auto_falls_back_to_inline_when_workers_cannot_start(demo_corpus, tmp_path, monkeypatch, caplog):
    store, _ = demo_corpus
    key = layout.audio_index_key("en_read")
    expected = LocalStorage(tmp_path / "a")
    build_index(store, expected, "en_read", "en_read/", key, IndexOptions(executor="inline"))

    def broken(self):
        raise procpool.PoolStartError("the index worker processes could not start")

    monkeypatch.setattr(procpool.OrderedPool, "_new_pool", broken)
    lake = LocalStorage(tmp_path / "b")
    with caplog.at_level(logging.WARNING):
        build_index(store, lake, "en_read", "en_read/", key, IndexOptions(pool_min_objects=0))
    assert lake.read_bytes(key) == expected.read_bytes(key)
    assert "probing inline" in caplog.text
    with pytest.raises(procpool.PoolStartError):  # asked for explicitly: no silent fallback
        build_index(store, lake, "en_read", "en_read/", key, IndexOptions(executor="process"), force=True)


def test_a_crashing_probe_costs_one_row_not_the_run(demo_corpus, tmp_path):
    src, report = demo_corpus
    keys = sorted(e.key for e in report.entries if e.prefix == "en_read" and e.kind == "audio")[:6]
    raw = CrashingStore(tmp_path / "raw")
    for k in keys:
        raw.write_bytes(k, src.read_bytes(k))
    crash_key = keys[2].rsplit("/", 1)[0] + "/k_crash.wav"
    raw.write_bytes(crash_key, src.read_bytes(keys[0]))
    raw.write_bytes(crash_key[:-4] + ".txt", b"crash text")
    lake = LocalStorage(tmp_path / "lake")
    opts = IndexOptions(executor="process", workers=2, chunk_objects=2)
    summary = build_index(raw, lake, "en_read", "en_read/", "idx.parquet", opts)
    rows = pq.read_table(lake.local_path("idx.parquet")).to_pylist()
    assert [r["key"] for r in rows] == sorted([*keys, crash_key]) and summary.rows == len(rows)
    crashed = [r for r in rows if r["probe_error"]]
    assert [r["key"] for r in crashed] == [crash_key]
    assert crashed[0]["probe_error"] == "decode_error" and "process died" in crashed[0]["probe_detail"]
    assert crashed[0]["text"] == "crash text"  # sidecars are still read
    # Every other row is what a plain LocalStorage index holds.
    plain = LocalStorage(tmp_path / "plain")
    build_index(
        LocalStorage(tmp_path / "raw"),
        plain,
        "en_read",
        "en_read/",
        "idx.parquet",
        IndexOptions(executor="inline"),
    )
    ref = {r["key"]: r for r in pq.read_table(plain.local_path("idx.parquet")).to_pylist()}
    assert all(r == ref[r["key"]] for r in rows if r["key"] != crash_key)


def test_row_fields_follow_the_schema():
    """Pool workers send rows as tuples in schema order: make_row must build its dict in that order."""
    from asr_distill.stages.index.build import ROW_FIELDS, make_row
    from asr_distill.stages.index.probe import Probe
    from asr_distill.stages.index.schema import AUDIO_INDEX_SCHEMA

    side = {"text": None, "language": None, "speaker": None, "sidecar_key": None, "sidecar_error": None}
    row = make_row("p", ObjectInfo("p/a.wav", 3), Probe(), side)
    assert tuple(row) == ROW_FIELDS == tuple(AUDIO_INDEX_SCHEMA.names)


def test_a_sidecar_read_at_its_listed_size_still_sees_what_changed_since_the_listing(tmp_path) -> None:
    """Sidecars are read at their listed size + 1 byte; one that grew (or shrank) is read whole anyway."""
    from asr_distill.stages.index.build import Group

    raw = LocalStorage(tmp_path / "raw")
    (raw.root / "p").mkdir(parents=True)
    (raw.root / "p/a.txt").write_text("hello there, a longer text than listed\n")
    (raw.root / "p/b.txt").write_text("short\n")
    grew = read_sidecars(raw, Group("p/a", txt=ObjectInfo("p/a.txt", size=5)))
    shrank = read_sidecars(raw, Group("p/b", txt=ObjectInfo("p/b.txt", size=500)))
    assert grew["text"] == "hello there, a longer text than listed" and grew["sidecar_error"] is None
    assert shrank["text"] == "short" and shrank["sidecar_error"] is None
