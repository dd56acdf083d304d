"""Verify the lake's files: BLAKE3 checksums in the format of ``b3sum`` (the BLAKE3 team's command).

    python -m asr_distill.checksum FILE...             # one line per file: <64 hex>  <path>
    python -m asr_distill.checksum --check LIST...     # re-hash the files a LIST names: "<path>: OK"
    python -m asr_distill.checksum --shards LAKE PARTITION   # each shard of a partition against
                                                              # the blake3 column of its shards.parquet

Lines are what ``b3sum FILE...`` prints, so either tool checks the other's lists (``b3sum --check
LIST``); ``-`` hashes standard input. A path holding a backslash or a newline is escaped as b3sum does
(``\\\\``, ``\\n``, and the line starts with one backslash). Exit status: 0 when every file was hashed
(or checked OK), 1 otherwise. ``--shards`` reads the lake through its storage backend (a local path or
``oss://bucket/prefix``), streaming each shard once.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from asr_distill import hashing

_LINE = re.compile(r"^([0-9a-fA-F]{64})  (.*)$", re.DOTALL)


def _escaped(path: str) -> tuple[str, str]:
    """(line prefix, path) as b3sum prints them: a backslash or newline in the path is escaped and the
    line then starts with one backslash."""
    if "\\" in path or "\n" in path:
        return "\\", path.replace("\\", "\\\\").replace("\n", "\\n")
    return "", path


def format_line(digest: str, path: str) -> str:
    """One output line (without the newline) in b3sum's format."""
    prefix, shown = _escaped(path)
    return f"{prefix}{digest}  {shown}"


def _status_line(path: str, status: str) -> str:
    prefix, shown = _escaped(path)
    return f"{prefix}{shown}: {status}"


def parse_line(line: str) -> tuple[str, str]:
    """``(digest, path)`` of one line of a check list; ValueError when it is not one."""
    escaped = line.startswith("\\")
    body = line[1:] if escaped else line
    m = _LINE.match(body)
    if m is None:
        raise ValueError(f"not a checksum line: {line!r}")
    digest, path = m.group(1).lower(), m.group(2)
    if escaped:
        path = re.sub(r"\\(.?)", _unescape, path)
    if "\ufffd" in path or "\x00" in path:
        raise ValueError(f"unrepresentable path in checksum line: {line!r}")
    return digest, path


def _unescape(m: re.Match[str]) -> str:
    char = m.group(1)
    if char == "\\":
        return "\\"
    if char == "n":
        return "\n"
    raise ValueError(f"invalid escape sequence \\{char}")


def hash_path(path: str) -> str:
    """BLAKE3 of a file, or of standard input for ``-``."""
    if path == "-":
        return hashing.file_hex(sys.stdin.buffer)
    return hashing.path_hex(path)


def check_lines(lines: Iterator[str], out: TextIO, quiet: bool = False) -> int:
    """Check every ``<digest>  <path>`` line; print ``<path>: OK`` / ``<path>: FAILED [(why)]``.

    Returns the number of failures (malformed lines count as failures)."""
    failures = 0
    for raw in lines:
        line = raw.rstrip("\n")
        if not line:
            continue
        try:
            expected, path = parse_line(line)
        except ValueError as exc:
            print(f"checksum: {exc}", file=sys.stderr)
            failures += 1
            continue
        try:
            ok = hash_path(path) == expected
            status = "OK" if ok else "FAILED"
        except OSError as exc:
            ok, status = False, f"FAILED ({exc.strerror or exc})"
        failures += not ok
        if not (ok and quiet):
            print(_status_line(path, status), file=out)
    return failures


def check_shards(lake_uri: str, partition: str, out: TextIO, quiet: bool = False) -> int:
    """Re-hash every shard of ``partition`` and compare with ``shards.parquet``'s ``blake3`` column."""
    from asr_distill.lake import shard_layout
    from asr_distill.storage import StorageError, open_storage
    from asr_distill.tableio import read_table

    lake = open_storage(lake_uri)
    table = read_table(lake, shard_layout(partition).shards_key, ["shard_key", "blake3", "size"])
    failures = 0
    for row in table.to_pylist():
        key = row["shard_key"]
        try:
            got = hashing.object_hex(lake, key)
            ok = got == row["blake3"]
            status = "OK" if ok else "FAILED"
        except StorageError as exc:
            ok, status = False, f"FAILED ({exc})"
        failures += not ok
        if not (ok and quiet):
            print(f"{lake.url(key)}: {status}", file=out)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m asr_distill.checksum",
        description="BLAKE3 checksums in b3sum's format (the lake's one whole-file checksum).",
    )
    ap.add_argument("files", nargs="*", help="files to hash (- for standard input), or check lists with -c")
    ap.add_argument("-c", "--check", action="store_true", help="read <digest>  <path> lines and check them")
    ap.add_argument(
        "--shards",
        nargs=2,
        metavar=("LAKE", "PARTITION"),
        help="check a partition's shards against the blake3 column of its shards.parquet",
    )
    ap.add_argument("--quiet", action="store_true", help="with --check/--shards: print failures only")
    args = ap.parse_args(argv)
    out = sys.stdout
    if args.shards:
        if args.files or args.check:
            ap.error("--shards takes no files")
        failures = check_shards(args.shards[0], args.shards[1], out, args.quiet)
    elif args.check:
        failures = 0
        for name in args.files or ["-"]:
            if name == "-":
                failures += check_lines(iter(sys.stdin), out, args.quiet)
            else:
                with open(name, encoding="utf-8", newline="\n") as fh:
                    failures += check_lines(iter(fh), out, args.quiet)
    else:
        failures = 0
        for name in args.files or ["-"]:
            try:
                print(format_line(hash_path(name), name), file=out)
            except OSError as exc:
                print(f"checksum: {name}: {exc.strerror or exc}", file=sys.stderr)
                failures += 1
    if failures and (args.check or args.shards):
        print(f"checksum: WARNING: {failures} computed checksum(s) did NOT match", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
