"""A contract every :class:`~asr_distill.storage.Storage` backend must satisfy.

Subclass :class:`StorageContract` in a ``test_*.py`` module and provide a ``store`` fixture that
returns an empty store (and, optionally, ``big_listing_count``). The same tests then prove that
LocalStorage and remote backends behave alike.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from asr_distill.storage import InvalidKeyError, ObjectNotFoundError, Storage

# Sorted by code point (== UTF-8 byte order): ' ' < '-' < '.' < '/' < 'B' < 'a' < 'é' < '日'.
ODD_KEYS = [
    "B.wav",
    "a b.wav",
    "a-b.wav",
    "a.wav",
    "a/b.wav",
    "a/c d/e.flac",
    "cafe.wav",
    "café olé.wav",
    "plus+percent%20.wav",
    "é/1.wav",
    "日本語/クリップ 1.flac",
]


def put_many(store: Storage, items: dict[str, bytes], workers: int = 8) -> None:
    """Write many objects concurrently (both backends are thread-safe for distinct keys)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda kv: store.write_bytes(*kv), items.items()))


class StorageContract:
    """Behaviour shared by every backend. Subclasses provide the ``store`` fixture.

    ``seed`` fills a store with fixture data for the read- and list-heavy tests; a subclass may
    override it with a faster path (the writes themselves are tested by the other tests).
    """

    big_listing_count = 1050

    def seed(self, store: Storage, items: dict[str, bytes]) -> None:
        put_many(store, items)

    # -- round trips and metadata ------------------------------------------------------------
    def test_write_read_stat_roundtrip(self, store: Storage) -> None:
        data = bytes(range(256)) * 40
        info = store.write_bytes("dir/sub/obj.bin", data)
        assert info.key == "dir/sub/obj.bin" and info.size == len(data)
        assert store.read_bytes("dir/sub/obj.bin") == data
        st = store.stat("dir/sub/obj.bin")
        assert st.key == "dir/sub/obj.bin" and st.size == len(data)
        assert st.version_tag and st.version_tag == info.version_tag
        assert st.mtime is not None
        assert store.exists("dir/sub/obj.bin") and not store.exists("dir/sub/other.bin")
        listed = list(store.iter_objects())
        assert [(o.key, o.size, o.version_tag) for o in listed] == [(st.key, st.size, st.version_tag)]

    def test_empty_object(self, store: Storage) -> None:
        store.write_bytes("empty.txt", b"")
        assert store.read_bytes("empty.txt") == b""
        assert store.stat("empty.txt").size == 0
        with store.open_read("empty.txt") as fh:
            assert fh.read() == b""

    def test_overwrite_changes_content_and_version(self, store: Storage) -> None:
        first = store.write_bytes("k.bin", b"old content")
        second = store.write_bytes("k.bin", b"new content, longer")
        assert store.read_bytes("k.bin") == b"new content, longer"
        assert first.version_tag != second.version_tag
        assert store.stat("k.bin").version_tag == second.version_tag

    def test_missing_objects_raise_not_found_naming_the_key(self, store: Storage) -> None:
        store.write_bytes("present.bin", b"x")
        for op in (
            store.stat,
            store.read_bytes,
            lambda k: store.read_range(k, 0, 4),
            store.open_read,
        ):
            with pytest.raises(ObjectNotFoundError) as err:
                op("no/such key.bin")
            assert "no/such key.bin" in str(err.value)
        assert not store.exists("no/such key.bin")
        store.delete("no/such key.bin")  # deleting a missing object is fine

    def test_invalid_keys_are_rejected_before_any_io(self, store: Storage) -> None:
        for key in ("", "../escape.bin", "/abs.bin", "a//b.bin", "dir/", "a\\b.bin"):
            for op in (store.stat, store.read_bytes, lambda k: store.write_bytes(k, b"x"), store.delete):
                with pytest.raises(InvalidKeyError):
                    op(key)
        assert list(store.iter_objects()) == []

    def test_delete(self, store: Storage) -> None:
        store.write_bytes("a/1.bin", b"1")
        store.write_bytes("a/2.bin", b"2")
        store.delete("a/1.bin")
        assert [o.key for o in store.iter_objects()] == ["a/2.bin"]
        with pytest.raises(ObjectNotFoundError):
            store.read_bytes("a/1.bin")

    # -- listing -----------------------------------------------------------------------------
    def test_listing_is_sorted_by_code_point_with_odd_names(self, store: Storage) -> None:
        put_many(store, {k: k.encode() for k in reversed(ODD_KEYS)})
        keys = [o.key for o in store.iter_objects()]
        assert keys == sorted(ODD_KEYS) == ODD_KEYS
        for key in ODD_KEYS:
            assert store.read_bytes(key) == key.encode()
            assert store.stat(key).size == len(key.encode())

    def test_prefix_and_non_recursive_listing(self, store: Storage) -> None:
        put_many(store, {k: b"x" for k in ODD_KEYS})
        assert [o.key for o in store.iter_objects("a/")] == ["a/b.wav", "a/c d/e.flac"]
        assert [o.key for o in store.iter_objects("a")] == [
            "a b.wav",
            "a-b.wav",
            "a.wav",
            "a/b.wav",
            "a/c d/e.flac",
        ]
        assert [o.key for o in store.iter_objects("a", recursive=False)] == ["a b.wav", "a-b.wav", "a.wav"]
        assert [o.key for o in store.iter_objects("a/", recursive=False)] == ["a/b.wav"]
        assert [o.key for o in store.iter_objects("", recursive=False)] == [
            k for k in ODD_KEYS if "/" not in k
        ]
        assert [o.key for o in store.iter_objects("plus+")] == ["plus+percent%20.wav"]
        assert [o.key for o in store.iter_objects("café ")] == ["café olé.wav"]
        assert list(store.iter_objects("zzz/")) == []

    def test_list_prefixes(self, store: Storage) -> None:
        put_many(store, {k: b"x" for k in ODD_KEYS})
        assert list(store.list_prefixes()) == ["a/", "é/", "日本語/"]
        assert list(store.list_prefixes("a/")) == ["a/c d/"]
        assert list(store.list_prefixes("a/c ")) == ["a/c d/"]
        assert list(store.list_prefixes("é")) == ["é/"]
        assert list(store.list_prefixes("b")) == []

    def test_listing_more_than_a_thousand_objects(self, store: Storage) -> None:
        n = self.big_listing_count
        items = {f"many/{i % 7}/item-{i:05d}.txt": str(i).encode() for i in range(n)}
        self.seed(store, items)
        listed = list(store.iter_objects("many/"))
        assert [o.key for o in listed] == sorted(items)
        assert all(o.size == len(items[o.key]) for o in listed)
        assert list(store.list_prefixes("many/")) == [f"many/{d}/" for d in range(7)]
        # Streamed: the first object arrives without draining the listing.
        first = next(iter(store.iter_objects("many/")))
        assert first.key == min(items)

    # -- reads -------------------------------------------------------------------------------
    def test_range_reads(self, store: Storage) -> None:
        data = bytes(i % 251 for i in range(10_000))
        store.write_bytes("r.bin", data)
        assert store.read_range("r.bin", 0, 10) == data[:10]
        assert store.read_range("r.bin", 1234, 4000) == data[1234:5234]
        assert store.read_range("r.bin", 9990, 100) == data[9990:]
        assert store.read_range("r.bin", 10_000, 5) == b""
        assert store.read_range("r.bin", 20_000, 5) == b""
        assert store.read_range("r.bin", 5, 0) == b""

    def test_streaming_read_and_seek(self, store: Storage) -> None:
        data = bytes(i % 253 for i in range(300_000))
        store.write_bytes("s.bin", data)
        with store.open_read("s.bin") as fh:
            assert fh.read(1000) == data[:1000]
            out = io.BytesIO()
            while chunk := fh.read(65_536):
                out.write(chunk)
            assert data[:1000] + out.getvalue() == data
        with store.open_read("s.bin") as fh:
            assert fh.seekable()
            fh.seek(-100, io.SEEK_END)
            assert fh.read() == data[-100:]
            fh.seek(150_000)
            assert fh.read(10) == data[150_000:150_010]
            assert fh.tell() == 150_010

    def test_local_copy(self, store: Storage) -> None:
        store.write_bytes("c/clip.flac", b"fLaC" + bytes(5000))
        with store.local_copy("c/clip.flac", suffix=".flac") as path:
            assert path.read_bytes() == b"fLaC" + bytes(5000)

    def test_concurrent_reads_share_one_store(self, store: Storage) -> None:
        items = {f"t/{i:03d}.bin": bytes([i % 256]) * (1000 + i) for i in range(16)}
        self.seed(store, items)
        errors: list[BaseException] = []

        def worker(offset: int) -> None:
            try:
                keys = sorted(items)
                for key in keys[offset:] + keys[:offset]:
                    assert store.read_bytes(key) == items[key]
                    assert store.stat(key).size == len(items[key])
                assert [o.key for o in store.iter_objects("t/")] == keys
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i * 5,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]

    # -- atomic writes -----------------------------------------------------------------------
    def test_failed_open_write_leaves_nothing(self, store: Storage) -> None:
        with pytest.raises(RuntimeError), store.open_write("w/new.bin") as fh:
            fh.write(b"partial data" * 1000)
            raise RuntimeError("writer crashed")
        assert not store.exists("w/new.bin")
        assert list(store.iter_objects()) == []

    def test_failed_open_write_keeps_previous_version(self, store: Storage) -> None:
        store.write_bytes("w/k.bin", b"previous")
        with pytest.raises(RuntimeError), store.open_write("w/k.bin") as fh:
            fh.write(b"half of the new")
            raise RuntimeError("writer crashed")
        assert store.read_bytes("w/k.bin") == b"previous"
        assert [o.key for o in store.iter_objects()] == ["w/k.bin"]

    def test_open_write_and_staged_file_succeed(self, store: Storage) -> None:
        with store.open_write("w/a.bin") as fh:
            fh.write(b"alpha")
        with store.staged_file("w/b.parquet", suffix=".parquet") as path:
            Path(path).write_bytes(b"PAR1....PAR1")
        assert store.read_bytes("w/a.bin") == b"alpha"
        assert store.read_bytes("w/b.parquet") == b"PAR1....PAR1"

    def test_failed_staged_file_leaves_nothing(self, store: Storage) -> None:
        with pytest.raises(ValueError), store.staged_file("w/c.parquet") as path:
            Path(path).write_bytes(b"half")
            raise ValueError("writer crashed")
        assert not store.exists("w/c.parquet")

    def test_write_file(self, store: Storage, tmp_path: Path) -> None:
        src = tmp_path / "src.bin"
        src.write_bytes(b"0123456789" * 3000)
        info = store.write_file("f/src.bin", src)
        assert info.size == 30_000
        assert store.read_bytes("f/src.bin") == src.read_bytes()
