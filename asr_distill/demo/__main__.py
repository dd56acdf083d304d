"""``python -m asr_distill.demo --out DIR_OR_URI``: write the synthetic demo corpus into a store."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

from asr_distill.demo.corpus import MAX_PREFIXES, SIZES, Synthesizer, generate_corpus, prefix_names
from asr_distill.demo.longform import LONGFORM_PREFIX, write_longform_prefix
from asr_distill.storage import Storage, StorageError, open_storage


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m asr_distill.demo",
        description="Synthesise an English speech corpus with known text (espeak-ng, flite) into a store.",
    )
    p.add_argument("--out", required=True, help="local directory or storage URI (e.g. oss://bucket/raw)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical objects (default 0)")
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="clips per prefix (default small)")
    p.add_argument(
        "--prefixes",
        type=int,
        default=3,
        help=f"number of good top-level prefixes, 1-{MAX_PREFIXES} (default 3)",
    )
    p.add_argument("--no-broken", action="store_true", help="leave out the broken/ prefix")
    p.add_argument(
        "--no-longform",
        action="store_true",
        help="leave out the longform/ prefix (recordings over 30 s for the segmentation stage)",
    )
    p.add_argument(
        "--no-marker", action="store_true", help="write no _SUCCESS marker at the end of each prefix"
    )
    p.add_argument("--no-flite", action="store_true", help="use espeak-ng voices only")
    p.add_argument(
        "--multilingual",
        action="store_true",
        help="also write ja_read/ (Japanese, Kokoro TTS extra) and mixed_lang/ (ja + en, no declared language)",
    )
    p.add_argument("--workers", type=int, default=None, help="synthesis threads (default: CPU count, max 8)")
    p.add_argument(
        "--report", default=None, help="also write the JSON ground-truth report to this local file"
    )
    return p


def _write_report(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".report-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not 1 <= args.prefixes <= MAX_PREFIXES:
        print(f"error: --prefixes must be between 1 and {MAX_PREFIXES}", file=sys.stderr)
        return 2
    try:
        store = open_storage(args.out)
        names = prefix_names(args.prefixes) + ([] if args.no_broken else ["broken"])
        names += ["ja_read", "mixed_lang"] if args.multilingual else []
        names += [] if args.no_longform else [LONGFORM_PREFIX]
        existing = [p for p in names if _holds_objects(store, p + "/")]
        started = time.perf_counter()
        report = generate_corpus(
            store,
            seed=args.seed,
            size=args.size,
            prefixes=args.prefixes,
            broken=not args.no_broken,
            marker=not args.no_marker,
            workers=args.workers,
            use_flite=not args.no_flite,
            multilingual=args.multilingual,
        )
        longform = []
        if not args.no_longform:
            synth = Synthesizer(use_flite=not args.no_flite)
            longform = write_longform_prefix(store, args.seed, marker=not args.no_marker, synth=synth)
    except (StorageError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    if longform:
        total = sum(t.duration_s for t in longform)
        kinds = ", ".join(f"{t.name} {t.duration_s:.0f} s" for t in longform)
        print(
            f"  {LONGFORM_PREFIX}/: {len(longform)} long recordings ({total:.0f} s: {kinds}) + 1 short clip"
        )
    if existing:
        print(
            f"  note: {', '.join(existing)} already held objects; corpus keys were overwritten, others kept"
        )
    print(f"  took {time.perf_counter() - started:.1f} s")
    if args.report:
        _write_report(args.report, report.to_json())
        print(f"  report: {os.path.abspath(args.report)}")
    return 0


def _holds_objects(store: Storage, prefix: str) -> bool:
    try:
        return next(iter(store.iter_objects(prefix)), None) is not None
    except StorageError:  # e.g. the root does not exist yet
        return False


if __name__ == "__main__":
    sys.exit(main())
