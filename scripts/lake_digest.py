#!/usr/bin/env python3
"""Digest every file of a lake, or compare two digests: the proof that a change altered no output.

    python scripts/lake_digest.py LAKE_DIR > before.b3      # one line per file: BLAKE3, two spaces, path
    ...change the code, run `make demo` again with the same ASR_DISTILL_RAW and ASR_DISTILL_LAKE...
    python scripts/lake_digest.py LAKE_DIR > after.b3
    python scripts/lake_digest.py --compare before.b3 after.b3

Lines are the project's file checksum (:mod:`asr_distill.hashing`, BLAKE3) in ``b3sum``'s format, so
``cd LAKE_DIR && b3sum --check before.b3`` checks a lake too. Compare digests made by the same version of
this script (before BLAKE3 it wrote sha256).

The listing is sorted by path, so two digests of identical lakes are identical files. The comparison
prints every added, removed and changed file and exits 1 when there is any. Manifests record absolute
lake paths, so compare lakes written at the same path (run both `make demo`s with the same
``ASR_DISTILL_LAKE``, moving the first lake away after digesting it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from asr_distill.hashing import path_hex


def digest(root: Path) -> list[tuple[str, str]]:
    """(relative path, BLAKE3) of every regular file below ``root``, sorted by path."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out.append((p.relative_to(root).as_posix(), path_hex(p)))
    return sorted(out)


def read_digest(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip():
            sha, rel = line.split("  ", 1)
            entries[rel] = sha
    return entries


def compare(a: dict[str, str], b: dict[str, str]) -> list[str]:
    problems = [f"removed  {k}" for k in sorted(a.keys() - b.keys())]
    problems += [f"added    {k}" for k in sorted(b.keys() - a.keys())]
    problems += [f"changed  {k}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="LAKE_DIR, or two digest files with --compare")
    ap.add_argument("--compare", action="store_true", help="compare two digest files")
    args = ap.parse_args(argv)
    if args.compare:
        if len(args.paths) != 2:
            ap.error("--compare takes two digest files")
        a, b = (read_digest(p) for p in args.paths)
        problems = compare(a, b)
        for line in problems:
            print(line)
        print(f"{len(a)} files before, {len(b)} after, {len(problems)} differences")
        return 1 if problems else 0
    if len(args.paths) != 1 or not args.paths[0].is_dir():
        ap.error("give one lake directory")
    for rel, sha in digest(args.paths[0]):
        sys.stdout.write(f"{sha}  {rel}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
