"""A minimal, byte-reproducible tar writer for shards (POSIX ustar, regular files only).

Every member gets the same metadata: mode 0644, uid/gid 0, empty user/group names, mtime 0, typeflag
'0'. Headers are byte-identical to what :mod:`tarfile` writes for such a member with
``format=tarfile.USTAR_FORMAT`` (checked by the tests), so GNU tar, bsdtar, :mod:`tarfile` and
WebDataset read the shards. Names must be ASCII and at most 100 bytes (sample keys guarantee it), so a
member is always one 512-byte header followed by its data padded to 512 bytes: the data offset is the
header offset + 512. The archive ends with two zero blocks, padded to a multiple of 10240 bytes (the
default record size of GNU tar and :mod:`tarfile`).

ustar rather than PAX or GNU: nothing here needs long names, big files or extended attributes, and
plain ustar headers are the most widely readable (PAX would only add headers that carry nothing).
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

BLOCK = 512
RECORD = 10240
MAX_NAME_BYTES = 100
MAX_MEMBER_BYTES = 8**11 - 1  # 11 octal digits in the size field


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _pad(n: int) -> int:
    return -n % BLOCK


def member_bytes(data_size: int) -> int:
    """Bytes one member takes in the archive: header plus padded data."""
    return BLOCK + data_size + _pad(data_size)


def archive_bytes(members_bytes: int) -> int:
    """Total archive size for ``members_bytes`` of members: end-of-archive blocks plus record padding."""
    end = members_bytes + 2 * BLOCK
    return end + (-end % RECORD)


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte header of a regular file ``name`` of ``size`` bytes with the fixed metadata."""
    raw = name.encode("ascii")
    if not raw or len(raw) > MAX_NAME_BYTES or b"\x00" in raw:
        raise ValueError(f"tar member name must be 1..{MAX_NAME_BYTES} ASCII bytes without NUL: {name!r}")
    if not 0 <= size <= MAX_MEMBER_BYTES:
        raise ValueError(f"tar member size out of range: {size}")
    h = bytearray(BLOCK)
    h[0 : len(raw)] = raw
    h[100:108] = b"0000644\x00"  # mode
    h[108:116] = b"0000000\x00"  # uid
    h[116:124] = b"0000000\x00"  # gid
    h[124:136] = b"%011o\x00" % size
    h[136:148] = b"00000000000\x00"  # mtime
    h[148:156] = b"        "  # checksum placeholder (spaces while summing)
    h[156] = 0x30  # typeflag '0': regular file
    h[257:263] = b"ustar\x00"
    h[263:265] = b"00"
    # uname (265:297), gname (297:329), devmajor/devminor (329:345, only meaningful for devices) and
    # prefix (345:500) stay NUL, as tarfile writes them for a regular file
    h[148:155] = b"%06o\x00" % sum(h)
    return bytes(h)


class TarWriter:
    """Append members to a binary file object; ``close()`` writes the end of the archive.

    Tracks offsets itself (the file object need not be seekable). ``hasher`` (e.g. ``asr_distill.hashing.new()``)
    sees every byte written, so the archive's digest costs no second read.
    """

    def __init__(self, fh: BinaryIO, hasher: _Hasher | None = None) -> None:
        self._fh = fh
        self._hasher = hasher
        self.offset = 0
        self.members = 0
        self.closed = False

    def _write(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        if self._hasher is not None:
            self._hasher.update(data)
        self.offset += len(data)

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        """Append one member; return ``(header_offset, data_offset)``."""
        if self.closed:
            raise ValueError("the archive is closed")
        header = ustar_header(name, len(data))
        start = self.offset
        self._write(header)
        self._write(data)
        pad = _pad(len(data))
        if pad:
            self._write(bytes(pad))
        self.members += 1
        return start, start + BLOCK

    def size_after(self, *data_sizes: int) -> int:
        """Archive size if members of these sizes were added and the archive then closed."""
        return archive_bytes(self.offset + sum(member_bytes(n) for n in data_sizes))

    def close(self) -> int:
        """Write the end-of-archive blocks and record padding; return the archive size."""
        if not self.closed:
            self._write(bytes(archive_bytes(self.offset) - self.offset))
            self.closed = True
        return self.offset
