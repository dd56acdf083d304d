"""Content hashes and whole-file checksums: the one owner, all BLAKE3 (``blake3``, the Rust implementation).

What the project hashes, and the column that carries it:

* ``pcm_blake3``: the decoded 16 kHz mono signal as little-endian int16 (:class:`PcmHasher`,
  :func:`pcm_hex`): the content identity the clean stage deduplicates on, which shards and segments
  are checked against.
* ``source_blake3``: the raw object's bytes, hashed from the same read the decoder makes
  (:class:`HashingReader`), never by a second read of the object.
* ``blake3`` / ``shard_blake3`` / ``*_blake3`` in records: whole-file checksums of the objects the
  project writes (:func:`bytes_hex`, :func:`file_hex`, :func:`path_hex`, :func:`object_hex`); the same
  64 hex digits ``b3sum FILE`` prints (``python -m asr_distill.checksum`` checks them).

BLAKE3 is cryptographic (safe for cross-partition deduplication of a shared lake) and its speed does not
depend on the CPU's SHA extensions. Non-content hashes (split salts, sample-key digests, plan order,
listing and config fingerprints, manifest version ids) stay sha256 where they are: changing them would
move splits, orders and keys, and they hash a few bytes each.

This module imports nothing of the project above it (storage objects are duck-typed), so every layer
may use it.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from blake3 import blake3

if TYPE_CHECKING:
    from asr_distill.storage import Storage

ALGORITHM = "blake3"
HEX_CHARS = 64  # 32-byte digest, as hex
CHUNK = 1 << 20  # bytes per read when hashing a whole file
# Buffer between a decoder and a HashingReader: libsndfile reads MP3 ~100 bytes at a time, so without it
# every small read would run HashingReader.readinto in Python (measured: ~20% more CPU in the clean stage).
DECODER_BUFFER = 1 << 16


def new() -> blake3:
    """A fresh incremental BLAKE3 hasher (``update(bytes-like)``, ``hexdigest()``)."""
    return blake3()


def bytes_hex(data: bytes | bytearray | memoryview) -> str:
    """BLAKE3 of ``data`` as 64 hex digits."""
    return blake3(data).hexdigest()


def file_hex(fh: BinaryIO) -> str:
    """BLAKE3 of what remains to be read from the binary file object ``fh`` (streamed)."""
    h = blake3()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    readinto = getattr(fh, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(view)
            if not n:
                break
            h.update(view[:n])
        else:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def path_hex(path: str | os.PathLike[str]) -> str:
    """BLAKE3 of a local file (streamed)."""
    with open(path, "rb", buffering=0) as fh:
        return file_hex(fh)


def object_hex(store: Storage, key: str) -> str:
    """BLAKE3 of an object of ``store`` (streamed through ``store.open_read``)."""
    with store.open_read(key) as fh:
        return file_hex(fh)


# -- decoded PCM ---------------------------------------------------------------------------------
class PcmHasher:
    """Incremental BLAKE3 over int16 blocks, as little-endian bytes: the ``pcm_blake3`` of a signal is
    the same however it is cut into blocks (:func:`pcm_hex` of the whole signal)."""

    __slots__ = ("_h", "samples")

    def __init__(self) -> None:
        self._h = blake3()
        self.samples = 0

    def update(self, block: np.ndarray) -> None:
        if block.dtype != np.dtype("<i2"):
            raise TypeError(f"PcmHasher takes little-endian int16 samples, got {block.dtype}")
        self._h.update(np.ascontiguousarray(block).view(np.uint8))  # blake3 takes byte buffers only
        self.samples += int(block.size)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def pcm_hex(samples: np.ndarray) -> str:
    """``pcm_blake3`` of a whole int16 signal."""
    h = PcmHasher()
    h.update(samples)
    return h.hexdigest()


# -- source bytes, from the decoder's own read -----------------------------------------------------
class HashingReader(io.RawIOBase):
    """A seekable binary reader over ``raw`` that hashes the bytes as the consumer (a decoder) reads them.

    The hash covers the prefix ``[0, hashed)`` of the file: a read that starts inside it extends it, a
    read past it (the decoder skipped ahead) and a re-read of hashed bytes (the decoder seeked back)
    leave the hash alone. :meth:`finish` reads only the bytes not hashed yet (none when the decoder read
    the file through in order) and returns the BLAKE3 of the whole file. ``raw_bytes`` counts every byte
    read from ``raw``, the consumer's reads and :meth:`finish`'s together; ``finish_bytes`` those of
    :meth:`finish` alone. ``raw`` stays the caller's to close.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._h = blake3()
        self._pos = raw.seek(0)
        self._hashed = 0
        self._digest: str | None = None
        self.raw_bytes = 0
        self.finish_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        n = self._raw.readinto(b) or 0
        if n:
            start, end = self._pos, self._pos + n
            if self._digest is None and start <= self._hashed < end:
                self._h.update(memoryview(b).cast("B")[self._hashed - start : n])
                self._hashed = end
            self._pos = end
            self.raw_bytes += n
        return n

    @property
    def hashed_bytes(self) -> int:
        """How many bytes from the start the hash covers (the file's size once :meth:`finish` ran)."""
        return self._hashed

    def buffered(self, size: int = DECODER_BUFFER) -> io.BufferedReader:
        """This reader behind a read buffer: what to hand a decoder that makes many small reads."""
        return io.BufferedReader(self, size)

    def finish(self) -> str:
        """BLAKE3 of the whole file: hashes the bytes the consumer did not read in order, then returns
        the digest (idempotent; the reader's position is left where the consumer had it)."""
        if self._digest is None:
            self._raw.seek(self._hashed)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := self._raw.readinto(view):
                self._h.update(view[:n])
                self._hashed += n
                self.finish_bytes += n
            self.raw_bytes += self.finish_bytes
            self._raw.seek(self._pos)
            self._digest = self._h.hexdigest()
        return self._digest
