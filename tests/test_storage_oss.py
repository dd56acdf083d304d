"""The OSS backend against the OSS-protocol test server (moto + OSS layer) on 127.0.0.1.

The storage contract (tests/storage_contract.py) runs here against LocalStorage, OSS with V4
signing under a prefix and OSS with V1 signing at the bucket root, so both backends are held to
the same behaviour; the rest are OSS specifics (pagination, multipart, CRC64, signing, errors,
retries under injected faults, secrets, the Dagster resource).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle
import random
import re
import socket
import time
import traceback

import dagster as dg
import oss2
import pytest
import requests
from oss_server import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    STS_ACCESS_KEY_ID,
    STS_ACCESS_KEY_SECRET,
    STS_TOKEN,
    store_options,
)
from storage_contract import StorageContract

from asr_distill.resources.storage import StorageResource, make_storage_resource
from asr_distill.storage import (
    LocalStorage,
    ObjectNotFoundError,
    StorageAccessDeniedError,
    StorageError,
    open_storage,
)
from asr_distill.storage.oss import (
    BucketNotFoundError,
    OSSStorage,
    RetryPolicy,
    StorageIntegrityError,
    parse_oss_uri,
    region_from_endpoint,
    resolve_options,
)

pytest_plugins = ["oss_server.fixtures"]

# Generous attempts where faults are random: a run of failures must not end a test by chance.
PATIENT_RETRY = RetryPolicy(max_attempts=30, base_delay_s=0.001, max_delay_s=0.005)
FAST_RETRY = RetryPolicy(max_attempts=8, base_delay_s=0.001, max_delay_s=0.01)


class TestLocalStorageContract(StorageContract):
    @pytest.fixture()
    def store(self, tmp_path):
        (tmp_path / "root").mkdir()
        return LocalStorage(tmp_path / "root")


class _OSSContract(StorageContract):
    signature_version = "v4"
    uri_prefix = "/data/set"

    @pytest.fixture()
    def store(self, oss_server, oss_bucket):
        self.server = oss_server
        options = store_options(oss_server, signature_version=self.signature_version, retry=FAST_RETRY)
        return open_storage(f"oss://{oss_bucket}{self.uri_prefix}", **options)

    def seed(self, store, items):
        root = f"{store.root}/" if store.root else ""
        self.server.seed_objects(store.bucket_name, {root + k: v for k, v in items.items()})


class TestOSSContractV4(_OSSContract):
    pass


class TestOSSContractV1(_OSSContract):
    signature_version = "v1"
    uri_prefix = ""


# -- helpers ------------------------------------------------------------------------------------
def make_store(server, bucket, prefix="root", **overrides):
    overrides.setdefault("retry", FAST_RETRY)
    uri = f"oss://{bucket}/{prefix}" if prefix else f"oss://{bucket}"
    return open_storage(uri, **store_options(server, **overrides))


def calls_since(server, start):
    return server.calls_since(start)


def pattern(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- pagination and listing details -------------------------------------------------------------
def test_listing_walks_every_page_with_continuation_tokens(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket, list_page_size=100)
    items = {f"p/{i:04d}.wav": b"x" * (i % 5) for i in range(1005)}
    oss_server.seed_objects(oss_bucket, {f"root/{k}": v for k, v in items.items()})
    oss_server.seed_objects(oss_bucket, {"rootless.wav": b"outside the prefix", "root2/x.wav": b"sibling"})
    start = oss_server.mark()
    listed = list(store.iter_objects())
    pages = [
        c for c in calls_since(oss_server, start) if c.method == "GET" and c.query.get("list-type") == "2"
    ]
    assert len(pages) == 11
    assert all(c.query["max-keys"] == "100" for c in pages)
    assert [c.query.get("continuation-token", "") for c in pages].count("") == 1
    assert [o.key for o in listed] == sorted(items)
    assert [o.size for o in listed] == [len(items[k]) for k in sorted(items)]
    assert all(o.etag and o.mtime for o in listed)


def test_directory_markers_are_not_objects(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    oss_server.seed_objects(oss_bucket, {"root/d/": b"", "root/d/a.wav": b"a", "root/e//x.wav": b"bad"})
    assert [o.key for o in store.iter_objects()] == ["d/a.wav"]
    assert list(store.list_prefixes()) == ["d/", "e/"]


def test_stat_reports_etag_size_and_mtime(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    before = time.time()
    info = store.write_bytes("a.bin", b"hello world")
    st = store.stat("a.bin")
    assert info.etag == st.etag == hashlib.md5(b"hello world").hexdigest().upper()
    assert st.size == 11 and abs(st.mtime - before) < 120
    assert store.local_path("a.bin") is None
    assert store.url("a.bin") == f"oss://{oss_bucket}/root/a.bin"


# -- multipart ----------------------------------------------------------------------------------
def test_multipart_above_threshold(oss_server, oss_bucket, tmp_path):
    store = make_store(oss_server, oss_bucket, multipart_threshold=300 * 1024, part_size=100 * 1024)
    data = pattern(1024 * 1024 + 17)
    start = oss_server.mark()
    info = store.write_bytes("big/a.bin", data)
    calls = calls_since(oss_server, start)
    parts = [c for c in calls if c.method == "PUT" and "partNumber" in c.query]
    assert sorted(int(c.query["partNumber"]) for c in parts) == list(range(1, 12))
    assert any(c.method == "POST" and "uploads" in c.query for c in calls)
    assert any(c.method == "POST" and "uploadId" in c.query and c.status == 200 for c in calls)
    assert info.size == len(data) and info.etag and info.etag.endswith("-11")
    assert store.read_bytes("big/a.bin") == data
    assert store.stat("big/a.bin").etag == info.etag

    src = tmp_path / "src.bin"
    src.write_bytes(data[:400_000])
    assert store.write_file("big/b.bin", src).size == 400_000
    assert store.read_bytes("big/b.bin") == data[:400_000]
    # Below the threshold: one PUT.
    start = oss_server.mark()
    store.write_bytes("small.bin", data[:1000])
    assert [(c.method, c.query) for c in calls_since(oss_server, start)] == [("PUT", {})]


def test_failed_multipart_is_aborted_and_leaves_nothing(oss_server, oss_bucket):
    store = make_store(
        oss_server,
        oss_bucket,
        multipart_threshold=200 * 1024,
        part_size=100 * 1024,
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.001),
    )
    store.write_bytes("big.bin", b"previous version")
    start = oss_server.mark()
    with (
        oss_server.injected(error_rate=1.0, only_methods=frozenset({"PUT"})),
        pytest.raises(StorageError) as err,
    ):
        store.write_bytes("big.bin", pattern(500 * 1024))
    assert "503" in str(err.value) and f"oss://{oss_bucket}/root/big.bin" in str(err.value)
    calls = calls_since(oss_server, start)
    aborts = [c for c in calls if c.method == "DELETE" and "uploadId" in c.query]
    assert len(aborts) == 1 and aborts[0].status == 204
    assert not any(c.method == "POST" and "uploadId" in c.query for c in calls)  # never completed
    assert store.read_bytes("big.bin") == b"previous version"
    raw = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, ACCESS_KEY_SECRET), oss_server.endpoint, oss_bucket)
    assert raw.list_multipart_uploads(prefix="root/").upload_list == []  # nothing left behind


def test_failed_open_write_above_threshold_leaves_nothing(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket, multipart_threshold=200 * 1024, part_size=100 * 1024)
    start = oss_server.mark()
    with pytest.raises(RuntimeError), store.open_write("w.bin") as fh:
        fh.write(pattern(600 * 1024))
        raise RuntimeError("writer crashed")
    assert calls_since(oss_server, start) == []  # nothing was even sent
    assert not store.exists("w.bin")


# -- integrity ----------------------------------------------------------------------------------
def test_corrupted_download_is_detected(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket, retry=RetryPolicy(max_attempts=3, base_delay_s=0.001))
    data = pattern(200_000, seed=1)
    store.write_bytes("c.bin", data)
    with oss_server.injected(corrupt_read_rate=1.0), pytest.raises(StorageIntegrityError) as err:
        store.read_bytes("c.bin")
    assert "CRC64" in str(err.value) and f"oss://{oss_bucket}/root/c.bin" in str(err.value)
    assert oss_server.stats["corrupt_read"] >= 3
    with oss_server.injected(corrupt_read_rate=1.0):
        with store.open_read("c.bin") as fh, pytest.raises(StorageIntegrityError):
            while fh.read(50_000):
                pass
        # A range read cannot be CRC-checked as a whole object: it is returned as served.
        assert len(store.read_range("c.bin", 10, 100)) == 100


def test_corrupted_download_is_retried(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    data = pattern(100_000, seed=2)
    store.write_bytes("c.bin", data)
    with oss_server.injected(seed=3, corrupt_read_rate=0.5):
        assert all(store.read_bytes("c.bin") == data for _ in range(6))
    assert oss_server.stats["corrupt_read"] > 0


def test_upload_corrupted_in_transit_is_rejected_by_content_md5(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket, retry=RetryPolicy(max_attempts=2, base_delay_s=0.001))
    store.write_bytes("u.bin", b"previous")
    with oss_server.injected(corrupt_write_rate=1.0), pytest.raises(StorageIntegrityError) as err:
        store.write_bytes("u.bin", pattern(50_000))
    assert "InvalidDigest" in str(err.value)
    assert store.read_bytes("u.bin") == b"previous"  # the server stored nothing


def test_upload_stored_with_wrong_crc_is_detected_and_removed(oss_server, oss_bucket):
    store = make_store(
        oss_server, oss_bucket, content_md5=False, retry=RetryPolicy(max_attempts=2, base_delay_s=0.001)
    )
    with oss_server.injected(corrupt_write_rate=1.0), pytest.raises(StorageIntegrityError) as err:
        store.write_bytes("u.bin", pattern(50_000))
    assert "CRC64" in str(err.value) and f"oss://{oss_bucket}/root/u.bin" in str(err.value)
    assert not store.exists("u.bin")  # no corrupt object left under the final key


def test_corrupted_uploads_are_retried(oss_server, oss_bucket):
    data = pattern(700 * 1024, seed=4)
    for md5 in (True, False):
        store = make_store(
            oss_server, oss_bucket, content_md5=md5, multipart_threshold=300 * 1024, part_size=100 * 1024
        )
        with oss_server.injected(seed=5, corrupt_write_rate=0.4):
            store.write_bytes(f"m-{md5}.bin", data)  # multipart: parts are retried
            store.write_bytes(f"s-{md5}.bin", data[:1000])
        assert store.read_bytes(f"m-{md5}.bin") == data
        assert store.read_bytes(f"s-{md5}.bin") == data[:1000]
    assert oss_server.stats["corrupt_write"] > 0


# -- signing and credentials --------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v4"])
def test_sts_credentials_sign_with_security_token(oss_server, oss_bucket, version):
    store = make_store(oss_server, oss_bucket, sts=True, signature_version=version)
    store.write_bytes("sts.bin", b"temporary")
    assert store.read_bytes("sts.bin") == b"temporary"
    assert [o.key for o in store.iter_objects()] == ["sts.bin"]


@pytest.mark.parametrize("version", ["v1", "v4"])
@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"access_key_secret": "wrong-secret-value"}, "SignatureDoesNotMatch"),
        ({"access_key_id": "LTAIunknownKey"}, "InvalidAccessKeyId"),
        ({"sts": True, "security_token": "forged-token"}, "InvalidSecurityToken"),
    ],
)
def test_bad_credentials_fail_fast_with_403(oss_server, oss_bucket, version, override, code):
    store = make_store(oss_server, oss_bucket, signature_version=version, **override)
    start = oss_server.mark()
    with pytest.raises(StorageAccessDeniedError) as err:
        store.read_bytes("some/key.wav")
    assert len(calls_since(oss_server, start)) == 1  # no retry
    message = str(err.value)
    assert code in message and oss_bucket in message and "root/some/key.wav" in message
    assert "wrong-secret-value" not in message and ACCESS_KEY_SECRET not in message


def test_v4_wrong_region_and_clock_skew_are_refused(oss_server, oss_bucket):
    with pytest.raises(StorageAccessDeniedError, match="region"):
        make_store(oss_server, oss_bucket, region="cn-elsewhere").stat("k")
    store = make_store(oss_server, oss_bucket)
    oss_server.layer.clock_offset_s = 3600
    for version in ("v1", "v4"):
        with pytest.raises(StorageAccessDeniedError, match="RequestTimeTooSkewed.*clock"):
            make_store(oss_server, oss_bucket, signature_version=version).stat("k")
    oss_server.layer.clock_offset_s = 0
    with pytest.raises(ObjectNotFoundError):
        store.stat("k")


def test_server_refuses_unsigned_requests(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    store.write_bytes("a.bin", b"x")
    resp = requests.get(f"{oss_server.endpoint}/{oss_bucket}/root/a.bin", timeout=10)
    assert resp.status_code == 403 and b"<Code>AccessDenied</Code>" in resp.content


# -- errors -------------------------------------------------------------------------------------
def test_not_found_and_missing_bucket_errors_name_bucket_and_key(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    for op in (store.stat, store.read_bytes, store.open_read, lambda k: store.read_range(k, 5, 5)):
        with pytest.raises(ObjectNotFoundError) as err:
            op("missing/clip.wav")
        assert f"oss://{oss_bucket}/root/missing/clip.wav" in str(err.value)
    ghost = make_store(oss_server, "no-such-bucket-here")
    start = oss_server.mark()
    for op in (
        lambda: ghost.stat("a/b.wav"),
        lambda: ghost.read_bytes("a/b.wav"),
        lambda: ghost.write_bytes("a/b.wav", b"x"),
        lambda: list(ghost.iter_objects()),
    ):
        with pytest.raises(BucketNotFoundError) as err:
            op()
        assert "no-such-bucket-here" in str(err.value) and "does not exist" in str(err.value)
    assert err.value.__class__.__mro__[1] is StorageError
    assert len(calls_since(oss_server, start)) == 4  # no retries


def test_permanent_403_fails_fast_and_clearly(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket, retry=RetryPolicy(max_attempts=6, base_delay_s=0.5))
    store.write_bytes("k.wav", b"x")
    with oss_server.injected(deny_all=True):
        start = oss_server.mark()
        for op in (
            lambda: store.stat("k.wav"),
            lambda: store.read_bytes("k.wav"),
            lambda: store.write_bytes("k.wav", b"y"),
            lambda: list(store.iter_objects()),
            lambda: store.delete("k.wav"),
        ):
            with pytest.raises(StorageAccessDeniedError) as err:
                op()
            assert "AccessDenied" in str(err.value) and f"oss://{oss_bucket}/root/" in str(err.value)
            assert "403" in str(err.value)
        assert len(calls_since(oss_server, start)) == 5  # one request each: no retries
    assert store.read_bytes("k.wav") == b"x"


# -- retries ------------------------------------------------------------------------------------
def _workload(store):
    """Writes, lists and reads; returns everything observable."""
    items = {f"r/{i:03d}.bin": pattern(3000 + 700 * i, seed=i) for i in range(30)}
    for key, value in items.items():
        store.write_bytes(key, value)
    big = pattern(450 * 1024, seed=99)
    store.write_bytes("r/big.bin", big)
    listing = [(o.key, o.size, o.etag) for o in store.iter_objects("r/")]
    contents = {k: store.read_bytes(k) for k in items}
    with store.open_read("r/big.bin") as fh:
        streamed = fh.read()
    ranges = [store.read_range("r/big.bin", s, 10_000) for s in (0, 123_456, 460_000)]
    prefixes = list(store.list_prefixes())
    return listing, contents, streamed, ranges, prefixes, items, big


def test_retries_survive_injected_503s_and_resets_with_identical_results(oss_server):
    opts = {"multipart_threshold": 300 * 1024, "part_size": 100 * 1024, "list_page_size": 7}
    clean = _workload(make_store(oss_server, oss_server.create_bucket(), **opts))
    faulty_store = make_store(oss_server, oss_server.create_bucket(), retry=PATIENT_RETRY, **opts)
    with oss_server.injected(seed=11, error_rate=0.15, reset_rate=0.15, reset_mid_body_rate=0.3):
        faulty = _workload(faulty_store)
    # The faults really happened (counts vary a little: a reset can drop bytes already sent).
    assert min(oss_server.stats["503"], oss_server.stats["reset"], oss_server.stats["reset_mid_body"]) >= 1
    listing, contents, streamed, ranges, prefixes, items, big = faulty
    assert contents == items and streamed == big
    assert ranges == [big[0:10_000], big[123_456:133_456], big[460_000:]]
    assert faulty[:5] == clean[:5]


def test_lost_responses_are_handled_idempotently(oss_server, oss_bucket):
    store = make_store(
        oss_server, oss_bucket, multipart_threshold=200 * 1024, part_size=100 * 1024, retry=PATIENT_RETRY
    )
    data = pattern(450 * 1024, seed=8)
    start = oss_server.mark()
    # seed 8, rate 0.5 on POST: the first init's answer is lost, then the first complete's answer.
    with oss_server.injected(seed=8, lost_response_rate=0.5, only_methods=frozenset({"POST"})):
        info = store.write_bytes("lost/mp.bin", data)
    completes = [c for c in calls_since(oss_server, start) if c.method == "POST" and "uploadId" in c.query]
    assert [(c.status, c.fault) for c in completes] == [(200, "lost_response"), (404, "")]
    assert store.read_bytes("lost/mp.bin") == data
    assert info.etag == store.stat("lost/mp.bin").etag and info.size == len(data)
    with oss_server.injected(seed=3, lost_response_rate=0.5, only_methods=frozenset({"PUT", "DELETE"})):
        for i in range(4):
            store.write_bytes(f"lost/{i}.bin", b"v%d" % i)
        store.delete("lost/mp.bin")
    assert oss_server.stats["lost_response"] >= 3
    assert [o.key for o in store.iter_objects("lost/")] == [f"lost/{i}.bin" for i in range(4)]
    assert [store.read_bytes(f"lost/{i}.bin") for i in range(4)] == [b"v%d" % i for i in range(4)]


def test_timeouts_are_retried(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket, timeout_s=0.3, retry=PATIENT_RETRY)
    with oss_server.injected(seed=2, delay_rate=0.25, delay_s=0.8):
        for i in range(3):
            store.write_bytes(f"t/{i}.bin", pattern(1000, seed=i))
        assert [store.read_bytes(f"t/{i}.bin") for i in range(3)] == [pattern(1000, seed=i) for i in range(3)]
    assert oss_server.stats["delay"] >= 1


def test_stream_resumes_after_resets_and_still_verifies_crc(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket, retry=PATIENT_RETRY)
    data = pattern(3 * 1024 * 1024, seed=7)
    store.write_bytes("s.bin", data)
    start = oss_server.mark()
    with oss_server.injected(seed=1, reset_mid_body_rate=0.6, only_methods=frozenset({"GET"})):
        with store.open_read("s.bin") as fh:
            out = b"".join(iter(lambda: fh.read(256 * 1024), b""))
    assert out == data
    gets = [c for c in calls_since(oss_server, start) if c.method == "GET"]
    assert sum(c.fault == "reset_mid_body" for c in gets) >= 1
    assert any(c.status == 206 for c in gets)  # resumed with a range request
    # Corruption after a resume is still caught: the CRC is combined over resumed segments.
    with oss_server.injected(seed=2, reset_mid_body_rate=0.5, corrupt_read_rate=1.0):
        with store.open_read("s.bin") as fh, pytest.raises(StorageIntegrityError):
            while fh.read(256 * 1024):
                pass


def test_object_replaced_during_a_resumed_read_is_an_error(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    store.write_bytes("v.bin", pattern(3_000_000, seed=1))
    with store.open_read("v.bin") as fh:
        fh.read(10)  # buffers the first MiB
        store.write_bytes("v.bin", pattern(3_000_000, seed=2))
        fh.seek(2_500_000)
        with pytest.raises(StorageError, match="changed while it was being read"):
            fh.read(10)


def test_retry_policy_backoff_is_bounded_and_jittered():
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.25, max_delay_s=2.0)
    rng = random.Random(0)
    delays = [[policy.delay(a, rng) for a in range(1, 7)] for _ in range(50)]
    for row in delays:
        for attempt, d in enumerate(row, start=1):
            cap = min(2.0, 0.25 * 2 ** (attempt - 1))
            assert cap / 2 <= d <= cap
    assert len({round(row[2], 6) for row in delays}) > 10  # jitter


# -- secrets ------------------------------------------------------------------------------------
def test_secrets_never_reach_logs_messages_repr_or_urls(oss_server, oss_bucket, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = (ACCESS_KEY_SECRET, STS_ACCESS_KEY_SECRET, STS_TOKEN)
    texts = []
    for version in ("v1", "v4"):
        store = make_store(oss_server, oss_bucket, sts=True, signature_version=version)
        store.write_bytes("k.bin", b"x")
        store.read_bytes("k.bin")
        list(store.iter_objects())
        texts += [repr(store), store.url("k.bin"), store.uri]
        flaky = make_store(
            oss_server, oss_bucket, sts=True, signature_version=version, retry=RetryPolicy(2, 0.001, 0.001)
        )
        with oss_server.injected(error_rate=1.0), pytest.raises(StorageError) as err:
            flaky.read_bytes("k.bin")  # the retry is logged
        texts += [str(err.value), "".join(traceback.format_exception(err.value))]
        for bad in (
            make_store(
                oss_server, oss_bucket, signature_version=version, access_key_secret="wrong-secret-xyz"
            ),
            make_store(oss_server, oss_bucket, sts=True, signature_version=version),
        ):
            for op in (lambda s=bad: s.stat("missing.bin"), lambda s=bad: s.read_bytes("missing.bin")):
                try:
                    op()
                except StorageError as exc:
                    texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
        plain = make_store(oss_server, oss_bucket, signature_version=version)
        plain.read_bytes("k.bin")
    with pytest.raises(StorageError) as err:
        open_storage(f"oss://AKID:{ACCESS_KEY_SECRET}@{oss_bucket}/x", **store_options(oss_server))
    texts.append(str(err.value))
    log_text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "Send request" in log_text and "x-oss-security-token" in log_text  # oss2 debug logs were captured
    assert "retrying" in log_text
    for secret in secrets:
        assert secret not in log_text
        for text in texts:
            assert secret not in text


# -- concurrency, pickling, configuration -------------------------------------------------------
def test_read_many_in_order_with_threads(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    items = {f"m/{i:03d}.bin": pattern(500 + i, seed=i) for i in range(40)}
    oss_server.seed_objects(oss_bucket, {f"root/{k}": v for k, v in items.items()})
    keys = sorted(items, reverse=True)
    assert list(store.read_many(keys, max_workers=6)) == [(k, items[k]) for k in keys]


def test_store_survives_pickling(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    store.write_bytes("p.bin", b"pickled")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read_bytes("p.bin") == b"pickled" and repr(clone) == repr(store)


def test_uri_and_configuration_errors():
    for uri, fragment in [
        ("oss://Bad_Bucket/x", "invalid OSS bucket name"),
        ("oss://b/x", "invalid OSS bucket name"),
        ("oss://bucket/a/../b", "'..'"),
    ]:
        with pytest.raises(StorageError, match=re.escape(fragment)):
            parse_oss_uri(uri)
    assert parse_oss_uri("oss://my-bucket/a/b/") == ("my-bucket", "a/b")
    assert parse_oss_uri("oss://my-bucket") == ("my-bucket", "")
    assert region_from_endpoint("oss-cn-hangzhou.aliyuncs.com") == "cn-hangzhou"
    assert region_from_endpoint("https://oss-cn-hangzhou-internal.aliyuncs.com") == "cn-hangzhou"
    assert region_from_endpoint("http://127.0.0.1:9000") is None
    with pytest.raises(StorageError, match="OSS_ACCESS_KEY_ID"):
        OSSStorage(
            "oss://my-bucket/x",
            endpoint="oss-cn-hangzhou.aliyuncs.com",
            access_key_id="",
            access_key_secret="",
        )
    with pytest.raises(StorageError, match="OSS_REGION"):
        OSSStorage(
            "oss://my-bucket/x", endpoint="http://127.0.0.1:1", access_key_id="a", access_key_secret="b"
        )
    store = OSSStorage(
        "oss://my-bucket/x/",
        endpoint="oss-cn-beijing.aliyuncs.com",
        access_key_id="a",
        access_key_secret="bsecret",
    )
    assert store.region == "cn-beijing" and store.uri == "oss://my-bucket/x" and "bsecret" not in repr(store)


def test_open_storage_reads_oss_environment(oss_server, oss_bucket, monkeypatch):
    monkeypatch.setenv("OSS_ENDPOINT", oss_server.endpoint)
    monkeypatch.setenv("OSS_REGION", oss_server.region)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", STS_ACCESS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", STS_ACCESS_KEY_SECRET)
    monkeypatch.setenv("OSS_SECURITY_TOKEN", STS_TOKEN)
    store = open_storage(f"oss://{oss_bucket}/env")
    store.write_bytes("e.bin", b"env")
    assert store.read_bytes("e.bin") == b"env"


# -- the one credential rule (storage.oss.credentials), for the resource and for oss:// URIs ------
OSS_VARS = ("OSS_ENDPOINT", "OSS_REGION", "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SECURITY_TOKEN")
STS_ENV = {
    "OSS_ENDPOINT": "env-endpoint",
    "OSS_REGION": "env-region",
    "OSS_ACCESS_KEY_ID": STS_ACCESS_KEY_ID,
    "OSS_ACCESS_KEY_SECRET": STS_ACCESS_KEY_SECRET,
    "OSS_SECURITY_TOKEN": STS_TOKEN,
}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # nothing given: everything from the environment, the token with its own key pair
        ({}, ("env-endpoint", "env-region", STS_ACCESS_KEY_ID, STS_ACCESS_KEY_SECRET, STS_TOKEN)),
        # the environment's key pair given explicitly (what the resource's EnvVars resolve to): same
        (
            {"access_key_id": STS_ACCESS_KEY_ID, "access_key_secret": STS_ACCESS_KEY_SECRET},
            ("env-endpoint", "env-region", STS_ACCESS_KEY_ID, STS_ACCESS_KEY_SECRET, STS_TOKEN),
        ),
        # another key pair never picks up the environment's token
        (
            {"access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET},
            ("env-endpoint", "env-region", ACCESS_KEY_ID, ACCESS_KEY_SECRET, None),
        ),
        # ... nor does the environment's key id with another secret
        (
            {"access_key_id": STS_ACCESS_KEY_ID, "access_key_secret": "other-secret"},
            ("env-endpoint", "env-region", STS_ACCESS_KEY_ID, "other-secret", None),
        ),
        # half a key pair is not completed from the environment (the store then refuses it)
        ({"access_key_id": ACCESS_KEY_ID}, ("env-endpoint", "env-region", ACCESS_KEY_ID, None, None)),
        # explicit values win, an explicit token is kept as given
        (
            {"endpoint": "e", "region": "r", "security_token": "given-token"},
            ("e", "r", STS_ACCESS_KEY_ID, STS_ACCESS_KEY_SECRET, "given-token"),
        ),
    ],
)
def test_credential_rule(given, expected):
    fields = ("endpoint", "region", "access_key_id", "access_key_secret", "security_token")
    once = resolve_options(given, STS_ENV)
    assert tuple(once[f] for f in fields) == expected
    assert resolve_options(once, STS_ENV) == once  # the resource resolves, then open_storage again
    empty = resolve_options({}, {"OSS_SECURITY_TOKEN": STS_TOKEN, "OSS_ENDPOINT": ""})
    assert all(empty[f] is None for f in fields)  # empty variables count as unset; no token without keys


@pytest.mark.parametrize("path", ["resource", "uri"])
@pytest.mark.parametrize("explicit_pair", [False, True], ids=["environment-pair", "explicit-permanent-pair"])
def test_credential_rule_holds_for_the_resource_and_oss_uris(
    oss_server, oss_bucket, monkeypatch, path, explicit_pair
):
    """STS pair and token in the environment: they sign together; an explicit other key pair is used
    without the environment's token (the server refuses a token sent with a permanent key)."""
    for var in OSS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OSS_ENDPOINT", oss_server.endpoint)
    monkeypatch.setenv("OSS_REGION", oss_server.region)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", STS_ACCESS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", STS_ACCESS_KEY_SECRET)
    monkeypatch.setenv("OSS_SECURITY_TOKEN", STS_TOKEN)
    pair = {"access_key_id": ACCESS_KEY_ID, "access_key_secret": ACCESS_KEY_SECRET} if explicit_pair else {}
    uri = f"oss://{oss_bucket}/rule-{path}-{explicit_pair}"
    if path == "resource":
        resource = StorageResource(uri=uri, **pair)
        assert resource.backend_options()["security_token"] == (None if explicit_pair else STS_TOKEN)
        store = resource.get()
    else:
        store = open_storage(uri, **pair)
    store.write_bytes("k.bin", b"signed")
    assert store.read_bytes("k.bin") == b"signed"


def test_open_storage_without_credentials_names_the_variables(monkeypatch):
    for var in OSS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OSS_SECURITY_TOKEN", STS_TOKEN)
    with pytest.raises(StorageError, match="OSS_ENDPOINT"):
        open_storage("oss://my-bucket/x")
    monkeypatch.setenv("OSS_ENDPOINT", "oss-cn-hangzhou.aliyuncs.com")
    with pytest.raises(StorageError, match="OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET") as err:
        open_storage("oss://my-bucket/x", access_key_id="LTAIonlyTheId")
    assert STS_TOKEN not in str(err.value)


# -- Dagster resource ---------------------------------------------------------------------------


@dg.asset
def oss_probe_asset(context, lake: StorageResource) -> dg.MaterializeResult:
    store = lake.get()
    info = store.write_bytes("probe/hello.txt", b"hello from dagster")
    context.log.info(f"wrote {store.url('probe/hello.txt')} via {lake!r} / {store!r}")
    return dg.MaterializeResult(metadata={"url": store.url("probe/hello.txt"), "etag": info.version_tag})


def test_make_storage_resource_local_needs_no_oss_variables(tmp_path, monkeypatch):
    for var in OSS_VARS:
        monkeypatch.delenv(var, raising=False)
    resource = make_storage_resource(str(tmp_path / "lake"))
    assert resource.backend_options() == {} and resource.access_key_secret is None
    result = dg.materialize([oss_probe_asset], resources={"lake": resource})
    assert result.success
    assert (tmp_path / "lake" / "probe" / "hello.txt").read_bytes() == b"hello from dagster"


def test_make_storage_resource_oss_reads_env_vars_at_run_time(oss_server, oss_bucket, monkeypatch):
    for var in OSS_VARS:
        monkeypatch.delenv(var, raising=False)
    resource = make_storage_resource(f"oss://{oss_bucket}/lake")
    dg.Definitions(assets=[oss_probe_asset], resources={"lake": resource})  # loads without the variables
    with pytest.raises(dg.DagsterInvalidConfigError, match="OSS_"):
        dg.materialize([oss_probe_asset], resources={"lake": resource})

    monkeypatch.setenv("OSS_ENDPOINT", oss_server.endpoint)
    monkeypatch.setenv("OSS_REGION", oss_server.region)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", STS_ACCESS_KEY_ID)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", STS_ACCESS_KEY_SECRET)
    monkeypatch.setenv("OSS_SECURITY_TOKEN", STS_TOKEN)
    with dg.instance_for_test() as instance:
        result = dg.materialize([oss_probe_asset], resources={"lake": resource}, instance=instance)
        assert result.success
        events = [str(e) for e in instance.all_logs(result.run_id)]
        run_config = str(instance.get_run_by_id(result.run_id).run_config)
    check = make_store(oss_server, oss_bucket, prefix="lake")
    assert check.read_bytes("probe/hello.txt") == b"hello from dagster"
    mat = result.asset_materializations_for_node("oss_probe_asset")[0]
    assert mat.metadata["url"].value == f"oss://{oss_bucket}/lake/probe/hello.txt"
    assert any("wrote oss://" in e for e in events)
    for secret in (STS_ACCESS_KEY_SECRET, STS_TOKEN):
        assert all(secret not in e for e in events)
        assert secret not in run_config and secret not in repr(resource)


# -- per-request cost: connections, CRC64, environment -------------------------------------------
def test_sequential_requests_reuse_one_connection(oss_server, oss_bucket):
    """Every kind of request leaves its connection in the pool: N requests, one TCP connection."""
    oss_server.stats.clear()
    store = make_store(oss_server, oss_bucket)
    store.write_bytes("a.bin", pattern(70_000))
    store.write_bytes("b.txt", b"tiny")
    for _ in range(3):
        assert store.read_bytes("a.bin") == pattern(70_000)
        assert store.read_bytes("b.txt") == b"tiny"
        assert store.read_range("a.bin", 100, 10) == pattern(70_000)[100:110]
        assert store.stat("a.bin").size == 70_000
        with store.open_read("a.bin") as fh:
            assert fh.read() == pattern(70_000)
        assert [o.key for o in store.iter_objects("")][:2] == ["a.bin", "b.txt"]
        store.write_bytes("c.bin", b"x" * 1000)
        with pytest.raises(ObjectNotFoundError):
            store.read_bytes("missing.bin")
    assert oss_server.stats["requests"] == 26
    assert oss_server.stats["connections"] == 1


def test_stream_closed_early_still_leaves_a_usable_store(oss_server, oss_bucket):
    store = make_store(oss_server, oss_bucket)
    data = pattern(3 << 20)
    store.write_bytes("big.bin", data)
    for _ in range(3):
        with store.open_read("big.bin") as fh:
            assert fh.read(10) == data[:10]  # the rest is never read: that connection is dropped
    assert store.read_bytes("big.bin") == data


def test_crc64_matches_oss2_and_continues_across_chunks():
    from oss2.utils import Crc64

    from asr_distill.storage.oss import CRC64_IN_C, crc64

    assert crc64(b"123456789") == 0x995DC9BBDF1939FA  # CRC-64/XZ check value
    data = pattern(100_003, seed=3)
    ref = Crc64()
    ref.update(data)
    assert crc64(data) == ref.crc
    running = 0
    for start in range(0, len(data), 4096):
        running = crc64(memoryview(data)[start : start + 4096], running)
    assert running == ref.crc
    assert crc64(b"") == 0
    assert CRC64_IN_C  # crcmod's C extension is built here (else every transfer is checked slowly)


def test_read_and_write_check_crc64_without_oss2s_crc(oss_server, oss_bucket):
    """oss2's own CRC is off (it rebuilds a table per response); the backend's check still catches both ways."""
    store = make_store(oss_server, oss_bucket, retry=RetryPolicy(max_attempts=2, base_delay_s=0.001))
    assert store._bucket.enable_crc is False
    store.write_bytes("r.bin", pattern(50_000))
    with oss_server.injected(corrupt_read_rate=1.0):
        with pytest.raises(StorageIntegrityError, match="CRC64"):
            store.read_bytes("r.bin")
        with pytest.raises(StorageIntegrityError, match="CRC64"), store.open_read("r.bin") as fh:
            while fh.read(7919):  # small reads: the CRC runs over many chunks
                pass
    store2 = make_store(oss_server, oss_bucket, content_md5=False, retry=RetryPolicy(2, 0.001, 0.001))
    with oss_server.injected(corrupt_write_rate=1.0), pytest.raises(StorageIntegrityError, match="CRC64"):
        store2.write_bytes("w.bin", pattern(1000))
    assert not store.exists("w.bin")  # removed, not left corrupt under the key


def test_environment_proxies_are_resolved_once_and_still_honoured(oss_server, oss_bucket, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "no_proxy"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    with socket_listening_nowhere() as dead_port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port}")
        proxied = make_store(oss_server, oss_bucket, retry=RetryPolicy(max_attempts=1))
        assert proxied._bucket.session.session.trust_env is False  # no per-request environment scan
        with pytest.raises(StorageError, match="network error"):
            proxied.stat("x")  # the proxy from the environment is used (and is not there)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        bypass = make_store(oss_server, oss_bucket, retry=RetryPolicy(max_attempts=1))
        bypass.write_bytes("x", b"1")
        assert bypass.read_bytes("x") == b"1"
        monkeypatch.delenv("NO_PROXY")
        # Settled at construction: a later change of the environment does not reach a built store.
        assert bypass.read_bytes("x") == b"1"


@contextlib.contextmanager
def socket_listening_nowhere():
    """A loopback port nobody listens on (bound, never listening: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_threads_up_to_the_pool_size_keep_their_connections(oss_server, oss_bucket):
    from concurrent.futures import ThreadPoolExecutor

    store = make_store(oss_server, oss_bucket, pool_size=6)
    assert store.pool_size == 6
    store.write_bytes("t.bin", pattern(20_000))
    oss_server.stats.clear()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: store.read_bytes("t.bin"), range(120)))
    assert all(r == pattern(20_000) for r in results)
    assert oss_server.stats["requests"] == 120
    assert oss_server.stats["connections"] <= 6  # none discarded and reopened
    assert make_store(oss_server, oss_bucket).pool_size >= 16
