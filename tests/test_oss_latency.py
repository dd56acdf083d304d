"""Latency hiding on OSS (issue 18 part 2): the test server's injected latency and request counters, the
stores' ``io_concurrency`` setting, the read-ahead of the clean and shards stages, and what each stage
asks of the store: outputs byte-identical whatever the concurrency, and requests per object counted
by the server (index: one GET per audio object and per sidecar plus the listing; clean and shards: one
GET per object). Behaviour only: no timing is asserted (bench/bench_oss_latency.py measures throughput).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oss_server import server as server_module
from oss_server import store_options
from oss_server.upload import upload_tree

from asr_distill import lake as layout
from asr_distill.resources import StorageResource
from asr_distill.stages.clean.run import run_clean
from asr_distill.stages.index.build import Group, group_listing, run_index
from asr_distill.stages.readahead import Fetched, PrefetchedStore, ReadAhead, wants_read_ahead
from asr_distill.stages.shards.run import run_shards
from asr_distill.storage import LocalStorage, ObjectNotFoundError, Storage, StorageError, open_storage
from asr_distill.storage.oss import RetryPolicy

pytest_plugins = ["oss_server.fixtures"]

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
PARTITION = "en_conversational"


def store(server: Any, bucket: str, root: str, **overrides: Any) -> Storage:
    overrides.setdefault("retry", FAST_RETRY)
    return open_storage(f"oss://{bucket}/{root}", **store_options(server, **overrides))


# -- the test server ----------------------------------------------------------------------------
def test_server_counts_requests_per_method_and_bucket(oss_server, oss_bucket):
    other = oss_server.create_bucket()
    s = store(oss_server, oss_bucket, "r")
    t = store(oss_server, other, "r")
    oss_server.stats.clear()
    s.write_bytes("a.bin", b"x" * 1000)  # PUT
    s.write_bytes("big.bin", b"y" * (300 * 1024))  # below the multipart threshold: PUT
    assert s.read_bytes("a.bin") == b"x" * 1000  # GET
    assert s.read_range("a.bin", 10, 5) == b"x" * 5  # GET (ranged)
    assert s.stat("a.bin").size == 1000  # HEAD
    assert [o.key for o in s.iter_objects("")] == ["a.bin", "big.bin"]  # LIST
    s.delete("a.bin")  # DELETE
    t.write_bytes("b.bin", b"z")  # PUT, other bucket
    assert oss_server.request_counts(oss_bucket) == {
        "GET": 2,
        "HEAD": 1,
        "PUT": 2,
        "POST": 0,
        "DELETE": 1,
        "LIST": 1,
        "GET_RANGE": 1,
    }
    mp = store(oss_server, oss_bucket, "r", multipart_threshold=200 * 1024, part_size=100 * 1024)
    mp.write_bytes("mp.bin", b"m" * (250 * 1024))  # POST (start), 3 x PUT (parts), POST (complete)
    after = oss_server.request_counts(oss_bucket)
    assert (after["POST"], after["PUT"]) == (2, 2 + 3)
    assert oss_server.request_counts(other)["PUT"] == 1
    assert oss_server.request_counts()["PUT"] == 6
    assert oss_server.stats["requests"] == sum(oss_server.request_counts().values()) - after["GET_RANGE"]


def test_server_latency_is_waited_per_request_and_concurrently(oss_server, oss_bucket, monkeypatch):
    """Each request waits the injected latency before it is answered, in its own connection's thread:
    two requests on two connections are both waiting at once (a barrier both must reach)."""
    s = store(oss_server, oss_bucket, "lat")
    s.write_bytes("a.bin", b"a")
    barrier = threading.Barrier(2, timeout=20)
    waited: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if seconds == 0.25:  # the injected latency (the layer's other sleeps use other values)
            waited.append(seconds)
            barrier.wait()  # raises BrokenBarrierError if the other request is not waiting too
            return
        real_sleep(seconds)

    monkeypatch.setattr(server_module.time, "sleep", sleep)
    oss_server.latency_s = 0.25
    try:
        results: list[bytes] = []
        errors: list[BaseException] = []

        def get() -> None:
            try:
                results.append(s.read_bytes("a.bin"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=get) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
    finally:
        oss_server.latency_s = 0.0
    assert not errors and results == [b"a", b"a"]
    assert waited == [0.25, 0.25]
    with pytest.raises(ValueError):
        oss_server.latency_s = -1


def test_server_latency_delays_every_request(oss_server, oss_bucket, monkeypatch):
    """Every request waits the injected latency once (the waits are recorded, not timed)."""
    s = store(oss_server, oss_bucket, "lat2")
    s.write_bytes("a.bin", b"a")
    waited: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if seconds == 0.05:  # the injected latency (the layer's other sleeps use other values)
            waited.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(server_module.time, "sleep", sleep)
    oss_server.latency_s = 0.05
    try:
        for _ in range(3):
            s.read_bytes("a.bin")
    finally:
        oss_server.latency_s = 0.0
    assert waited == [0.05, 0.05, 0.05]


# -- configuration --------------------------------------------------------------------------------
def test_io_concurrency_is_validated_and_sizes_the_connection_pool(oss_server, oss_bucket):
    for bad in (0, -1, 257):
        with pytest.raises(StorageError, match="io_concurrency"):
            store(oss_server, oss_bucket, "c", io_concurrency=bad)
    s = store(oss_server, oss_bucket, "c", io_concurrency=100)
    assert s.io_concurrency == 100 and s.pool_size >= 150
    assert store(oss_server, oss_bucket, "c").io_concurrency == 64
    assert LocalStorage(Path("/tmp")).io_concurrency == 1
    res = StorageResource(uri=f"oss://{oss_bucket}/c", **store_options(oss_server), io_concurrency=8)
    assert res.get().io_concurrency == 8
    assert (
        StorageResource(uri=f"oss://{oss_bucket}/c", **store_options(oss_server)).get().io_concurrency == 64
    )
    with pytest.raises(StorageError, match="io_concurrency"):
        StorageResource(uri=f"oss://{oss_bucket}/c", **store_options(oss_server), io_concurrency=0).get()
    assert wants_read_ahead(s, "process") and wants_read_ahead(s, "thread")
    assert not wants_read_ahead(store(oss_server, oss_bucket, "c", io_concurrency=1), "process")
    assert not wants_read_ahead(LocalStorage(Path("/tmp")), "process")


# -- the read-ahead -------------------------------------------------------------------------------
def test_read_ahead_keeps_order_bounds_reads_and_removes_its_copies(oss_server, oss_bucket):
    s = store(oss_server, oss_bucket, "ra")
    keys = [f"k{i:03d}.bin" for i in range(40)]
    for i, k in enumerate(keys):
        s.write_bytes(k, bytes([i]) * 100)
    running = 0
    peak = 0
    lock = threading.Lock()

    def fetch(key: str, ra: ReadAhead[str]) -> Fetched:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return ra.copy(s, key, ".bin")
        finally:
            with lock:
                running -= 1

    with ReadAhead(4) as ra:
        got = []
        for key, fetched in ra.map([*keys, "missing.bin"], fetch):
            got.append(key)
            if key == "missing.bin":
                assert isinstance(fetched.error, ObjectNotFoundError) and fetched.path is None
                view = PrefetchedStore(s, fetched)
                with pytest.raises(ObjectNotFoundError), view.versioned_copy(key, ".bin"):
                    pass
                continue
            assert fetched.info is not None and fetched.info.size == 100
            with PrefetchedStore(s, fetched).versioned_copy(key, ".bin") as (path, info):
                assert path.read_bytes() == bytes([keys.index(key)]) * 100 and info == fetched.info
            assert ra.held <= 4 + 1
            ra.release(key)
            assert not Path(fetched.path or "").exists()
        tmp = ra._tmp
    assert got == [*keys, "missing.bin"] and peak <= 4
    assert not Path(tmp).exists()


def test_read_ahead_never_moves_a_local_file(tmp_path):
    local = LocalStorage(tmp_path)
    local.write_bytes("a.wav", b"data")
    with ReadAhead(2) as ra:
        [(_, fetched)] = list(ra.map(["a.wav"], lambda k, ra: ra.copy(local, k, ".wav")))
    assert fetched.path is None and (tmp_path / "a.wav").read_bytes() == b"data"


# -- the stages -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw_bucket(oss_server_session, demo_corpus) -> tuple[str, dict[str, int]]:
    source, _ = demo_corpus
    bucket = oss_server_session.create_bucket()
    copied = upload_tree(oss_server_session, bucket, source, prefixes=[PARTITION, "broken"], root="corpus")
    return bucket, copied


def expected_index_gets(raw: Storage, prefix: str) -> tuple[int, int]:
    """(audio objects, GETs the index makes: one per audio object and per sidecar of an audio group)."""
    audio = gets = 0
    groups: list[Group] = list(group_listing(raw.iter_objects(prefix)))
    for g in groups:
        if g.audio:
            audio += len(g.audio)
            gets += len(g.audio) + (g.txt is not None) + (g.json is not None)
    return audio, gets


def run_stages(
    server: Any, raw: Storage, lake: Storage, partition: str, executor: str, vanish: str | None = None
) -> dict[str, dict[str, dict[str, int]]]:
    """index, clean, shards of ``partition``; the requests each made, per bucket (raw, lake)."""
    raw_bucket, lake_bucket = raw.bucket_name, lake.bucket_name  # type: ignore[attr-defined]
    counts: dict[str, dict[str, dict[str, int]]] = {}

    def counted(stage: str, fn: Any) -> Any:
        server.stats.clear()
        out = fn()
        counts[stage] = {"raw": server.request_counts(raw_bucket), "lake": server.request_counts(lake_bucket)}
        faults = counts.setdefault("faults", {})
        for name in ("503", "reset"):
            faults[name] = faults.get(name, 0) + int(server.stats[name])
        return out

    counted("index", lambda: run_index(raw, lake, partition, force=True))
    if vanish is not None:
        raw.delete(vanish)  # removed between index and clean: one read_error row
    counted("clean", lambda: run_clean(raw, lake, partition, force=True, executor=executor, workers=2))
    counted("shards", lambda: run_shards(raw, lake, partition, force=True, executor=executor, workers=2))
    return counts


def lake_objects(lake: Storage) -> dict[str, bytes]:
    return {o.key: lake.read_bytes(o.key) for o in lake.iter_objects("")}


@pytest.fixture(scope="module")
def two_runs(oss_server_session, raw_bucket) -> Iterator[dict[str, Any]]:
    """The stages on OSS twice: ``io_concurrency=1`` (no read-ahead, one probe thread, thread pools)
    and ``io_concurrency=16`` (read-ahead, process pools)."""
    server = oss_server_session
    bucket, copied = raw_bucket
    lake_bucket = server.create_bucket()
    out: dict[str, Any] = {"copied": copied}
    for io, executor in ((1, "thread"), (16, "process")):
        raw = store(server, bucket, "corpus", io_concurrency=io)
        lake = store(server, lake_bucket, f"io{io}", io_concurrency=io)
        out[io] = {"counts": run_stages(server, raw, lake, PARTITION, executor), "lake": lake_objects(lake)}
        out[io]["raw"] = raw
        out[io]["lake_store"] = lake
    yield out


def test_outputs_are_byte_identical_whatever_the_concurrency(two_runs):
    a, b = two_runs[1]["lake"], two_runs[16]["lake"]
    assert a.keys() == b.keys() and len(a) > 5
    assert any(k.endswith(".tar") for k in a)
    assert [k for k in a if a[k] != b[k]] == []


def test_index_makes_one_request_per_audio_object_and_sidecar(two_runs):
    raw = two_runs[16]["raw"]
    audio, gets = expected_index_gets(raw, f"{PARTITION}/")
    for io in (1, 16):
        c = two_runs[io]["counts"]["index"]
        assert c["raw"] == {
            "GET": gets,
            "HEAD": 0,
            "PUT": 0,
            "POST": 0,
            "DELETE": 0,
            "LIST": 1,
            "GET_RANGE": gets - audio,
        }
        assert c["lake"]["PUT"] == 1 and c["lake"]["GET"] == 0


def test_clean_and_shards_read_each_object_once(two_runs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = two_runs[16]["lake"]
    index = pq.read_table(pa.BufferReader(lake[layout.audio_index_key(PARTITION)]))
    kept = pq.read_table(pa.BufferReader(lake[layout.cleaned_kept_key(PARTITION)]))
    for io in (1, 16):
        clean, shards = two_runs[io]["counts"]["clean"], two_runs[io]["counts"]["shards"]
        # One GET per indexed object, nothing else on the raw bucket.
        assert clean["raw"] == {
            "GET": index.num_rows,
            "HEAD": 0,
            "PUT": 0,
            "POST": 0,
            "DELETE": 0,
            "LIST": 0,
            "GET_RANGE": 0,
        }
        assert shards["raw"] == {
            "GET": kept.num_rows,
            "HEAD": 0,
            "PUT": 0,
            "POST": 0,
            "DELETE": 0,
            "LIST": 0,
            "GET_RANGE": 0,
        }
        assert kept.num_rows > 0
        assert clean["lake"]["GET"] == 1  # the index, once: its checksum and its rows from one read


def test_a_vanished_object_gives_the_same_row_with_and_without_read_ahead(oss_server_session, raw_bucket):
    """An object removed after indexing: the read-ahead's failed read reaches the worker as the same
    error the worker's own read would raise (a read_error row), with one GET either way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    server = oss_server_session
    bucket, copied = raw_bucket
    victim = sorted(k for k in copied if k.startswith("broken/") and k.endswith(".wav"))[0]
    lake_bucket = server.create_bucket()
    tables = {}
    for io, executor in ((1, "inline"), (16, "process")):
        raw_b = server.create_bucket()
        src = store(server, bucket, "corpus")
        dst = store(server, raw_b, "corpus", io_concurrency=io)
        for k in (k for k in copied if k.startswith("broken/")):
            dst.write_bytes(k, src.read_bytes(k))
        lake = store(server, lake_bucket, f"v{io}", io_concurrency=io)
        counts = run_stages(server, dst, lake, "broken", executor, vanish=victim)
        rows = pq.read_table(pa.BufferReader(lake.read_bytes(layout.cleaned_quarantine_key("broken"))))
        tables[io] = rows
        index_rows = pq.read_metadata(pa.BufferReader(lake.read_bytes(layout.audio_index_key("broken"))))
        assert counts["clean"]["raw"]["GET"] == index_rows.num_rows
    # Two raw buckets: the same objects (same ETags), uploaded at different times (mtime differs).
    a, b = (tables[io].drop_columns(["mtime"]).to_pylist() for io in (1, 16))
    # The vanished object's detail names its bucket and the request id: compared apart below.
    diff = [
        (k, x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x if x[k] != y[k] and k != "decode_detail"
    ]
    assert diff == []
    assert [
        r["key"]
        for r in a
        if r["decode_detail"] != next(y for y in b if y["key"] == r["key"])["decode_detail"]
    ] == [victim]
    [row] = [r for r in a if r["key"] == victim]
    assert row["decode_error"] == "read_error" and "ObjectNotFoundError" in row["decode_detail"]


def test_throttling_with_requests_in_flight_changes_nothing(oss_server_session, raw_bucket, two_runs):
    """503 ("Please reduce your request rate") and connection resets on a fifth of the requests, with 16
    requests in flight: every one is retried with backoff by its own thread; the outputs are those of
    the fault-free run."""
    server = oss_server_session
    bucket, _ = raw_bucket
    lake_bucket = server.create_bucket()
    raw = store(server, bucket, "corpus", io_concurrency=16, retry=RetryPolicy(10, 0.01, 0.05))
    lake = store(server, lake_bucket, "io16", io_concurrency=16, retry=RetryPolicy(10, 0.01, 0.05))
    with server.injected(seed=7, error_rate=0.15, reset_rate=0.05):
        counts = run_stages(server, raw, lake, PARTITION, "process")
    assert counts["faults"]["503"] > 0 and counts["faults"]["reset"] > 0
    assert lake_objects(lake) == two_runs[16]["lake"]


def test_an_index_chunk_on_a_store_with_latency_is_probed_by_threads(
    oss_server_session, raw_bucket, monkeypatch
):
    """A pool task (a Ray task on OSS) probes its chunk's groups with ``io_concurrency`` threads: the same
    rows, in the same order, as one after another."""
    from asr_distill.stages.index import build

    bucket, _ = raw_bucket
    real = build._group_rows
    out: dict[int, tuple[list[Any], int]] = {}
    oss_server_session.latency_s = 0.02  # requests overlap only if they are made concurrently
    try:
        for io in (1, 8):
            raw = store(oss_server_session, bucket, "corpus", io_concurrency=io)
            packed = [build._pack(g) for g in group_listing(raw.iter_objects(f"{PARTITION}/")) if g.audio]
            threads: set[int] = set()

            def spy(*args: Any, _seen: set[int] = threads) -> Any:
                _seen.add(threading.get_ident())
                return real(*args)

            monkeypatch.setattr(build, "_group_rows", spy)
            out[io] = (build._probe_packed(packed, raw, PARTITION), len(threads))
            monkeypatch.setattr(build, "_group_rows", real)
    finally:
        oss_server_session.latency_s = 0.0
    assert len(out[1][0]) > 5 and out[1][0] == out[8][0]
    assert out[1][1] == 1 and out[8][1] > 1
