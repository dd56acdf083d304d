"""LocalStorage: key safety, atomic writes, sorted streaming listing, reads."""

from __future__ import annotations

import os
import threading

import pytest

from asr_distill.storage import (
    InvalidKeyError,
    LocalStorage,
    ObjectNotFoundError,
    join_key,
    open_storage,
    validate_key,
)
from asr_distill.storage.local import TMP_MARK

BAD_KEYS = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("../outside.wav", "'..'"),
    ("a/../../outside.wav", "'..'"),
    ("a/./b.wav", "'.'"),
    ("a//b.wav", "empty"),
    ("a/b/", "ends with"),
    ("a\\..\\..\\b.wav", "backslash"),
    ("..\\outside.wav", "backslash"),
    ("a\x00.wav", "NUL"),
    ("a\nb.wav", "control"),
    ("x" * 1100, "longer"),
    ("bad\udc80.wav", "surrogate"),
]


@pytest.mark.parametrize(("key", "why"), BAD_KEYS)
def test_bad_keys_are_rejected_with_the_key_named(tmp_path, key, why):
    store = LocalStorage(tmp_path / "root")
    for op in (
        store.stat,
        store.read_bytes,
        lambda k: store.write_bytes(k, b"x"),
        store.delete,
        store.local_path,
    ):
        with pytest.raises(InvalidKeyError) as err:
            op(key)
        assert repr(key)[:60] in str(err.value) or repr(key)[:60].rstrip("'") in str(err.value)
        assert why.lower() in str(err.value).lower()
    assert not (tmp_path / "outside.wav").exists()
    assert not (tmp_path / "b.wav").exists()


@pytest.mark.parametrize(
    "key", ["a.wav", "dir/sub/b c.wav", "broken/café olé.wav", "日本語/クリップ 1.flac", "x.y.z"]
)
def test_good_keys_roundtrip(tmp_path, key):
    store = LocalStorage(tmp_path)
    assert validate_key(key) == key
    info = store.write_bytes(key, b"hello")
    assert info.key == key and info.size == 5
    assert store.read_bytes(key) == b"hello"
    assert [o.key for o in store.iter_objects()] == [key]


def test_symlink_escaping_the_root_is_rejected(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    root = tmp_path / "root"
    (root / "p").mkdir(parents=True)
    os.symlink(outside, root / "p" / "link.wav")
    os.symlink(tmp_path, root / "p" / "dirlink")
    store = LocalStorage(root)
    with pytest.raises(InvalidKeyError, match="outside the storage root"):
        store.read_bytes("p/link.wav")
    with pytest.raises(InvalidKeyError, match="outside the storage root"):
        store.read_bytes("p/dirlink/secret.txt")
    # Symlinks are not listed as objects either.
    assert list(store.iter_objects()) == []


def test_join_key_validates():
    assert join_key("a/", "/b", "c.wav") == "a/b/c.wav"
    with pytest.raises(InvalidKeyError):
        join_key("a", "..", "b")


def test_listing_is_sorted_like_a_flat_object_store(tmp_path):
    store = LocalStorage(tmp_path)
    keys = ["p/b/c.wav", "p/b.wav", "p/a b.wav", "p/a-b.wav", "p/ä.wav", "p/z.wav", "q/x.wav", "p/b.txt"]
    for k in keys:
        store.write_bytes(k, k.encode())
    listed = [o.key for o in store.iter_objects()]
    assert listed == sorted(keys)  # code-point order == UTF-8 byte order
    assert [o.key for o in store.iter_objects("p/b")] == ["p/b.txt", "p/b.wav", "p/b/c.wav"]
    assert [o.key for o in store.iter_objects("p/", recursive=False)] == sorted(
        k for k in keys if k.count("/") == 1 and k.startswith("p/")
    )
    assert list(store.list_prefixes()) == ["p/", "q/"]
    assert list(store.list_prefixes("p/")) == ["p/b/"]
    assert list(store.iter_objects("nope/")) == []


def test_listing_a_missing_root_is_a_clear_error(tmp_path):
    store = LocalStorage(tmp_path / "missing")
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        list(store.iter_objects())
    with pytest.raises(ObjectNotFoundError):
        store.stat("a.wav")


def test_reads_range_stream_and_stat(tmp_path):
    store = LocalStorage(tmp_path)
    data = bytes(range(256)) * 10
    store.write_bytes("o.bin", data)
    assert store.read_range("o.bin", 10, 5) == data[10:15]
    assert store.read_range("o.bin", len(data) - 3, 100) == data[-3:]
    with store.open_read("o.bin") as fh:
        assert fh.read() == data
    info = store.stat("o.bin")
    assert info.size == len(data) and info.mtime is not None and info.version_tag
    assert store.exists("o.bin") and not store.exists("nope.bin")
    store.delete("o.bin")
    store.delete("o.bin")  # idempotent
    assert not store.exists("o.bin")


def test_failed_write_leaves_no_object_and_no_temp_file(tmp_path):
    store = LocalStorage(tmp_path)
    store.write_bytes("p/final.parquet", b"old")
    with pytest.raises(RuntimeError), store.open_write("p/final.parquet") as fh:
        fh.write(b"partial new content")
        raise RuntimeError("crash mid-write")
    assert store.read_bytes("p/final.parquet") == b"old"
    with pytest.raises(RuntimeError), store.staged_file("p/other.parquet") as path:
        path.write_bytes(b"half")
        raise RuntimeError("crash")
    assert not store.exists("p/other.parquet")
    assert [o.key for o in store.iter_objects()] == ["p/final.parquet"]
    assert not [n for n in os.listdir(tmp_path / "p") if n.startswith(TMP_MARK)]


def test_reader_never_sees_a_partial_object(tmp_path):
    """Concurrent readers only ever see the old or the new content, never a prefix of it."""
    store = LocalStorage(tmp_path)
    old, new = b"A" * 1_000_000, b"B" * 2_000_000
    store.write_bytes("k.bin", old)
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(len(store.read_bytes("k.bin")))

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(20):
        with store.open_write("k.bin") as fh:
            for _ in range(20):
                fh.write(new[:100_000])
        store.write_bytes("k.bin", old)
    stop.set()
    t.join()
    assert seen <= {len(old), len(new)}


def test_open_storage_dispatch(tmp_path):
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    with pytest.raises(Exception, match="unsupported storage URI scheme"):
        open_storage("gopher://x/y")
