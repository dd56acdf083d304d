"""Benchmark: index, clean and shards as Ray tasks vs on the local process pool (a script, not a test).

    .venv/bin/python bench/bench_ray_stages.py [--quick] [--n 1500] [--workers CPUS] [--repeat 3]
                                               [--root bench/out/ray_stages]

The same N raw clips (espeak-ng sentences or a synthetic speech-like signal, 1-12 s; WAV 16 kHz mono,
WAV 44.1 kHz stereo, FLAC 22.05 kHz, MP3 22.05 kHz: bench_shards' corpus) go through the real stage
entry points ``run_index`` -> ``run_clean`` -> ``run_shards`` into a fresh lake, once with the local
forkserver pool (``executor="process"``, ``workers`` processes) and once as Ray tasks on a private local
Ray cluster offering the same ``workers`` CPUs (``executor=RayTasks()``: stores reopened on the workers,
a remote cluster's way). The cluster is started, and each executor run once to warm up, before the
clock; each stage is then timed per repeat, the two executors alternating. Target for clean and
shards: ``pool seconds / Ray seconds >= 0.8`` (the index's ratio is reported: its runs take a fraction of
a second here, mostly fixed cost). Reported too: files (and audio seconds) per second per worker
through Ray, which is what one worker core of a cluster node sustains, and whether the two lakes are
byte-identical.

Results: ``<root>/results.json`` and ``bench/out/ray_stages.json`` (``bench/run_all.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from _result import machine, row, write_result  # noqa: E402
from bench_shards import PART, make_corpus  # noqa: E402

STAGES = ("index", "clean", "shards")
TARGET = 0.8


def _lake_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def run_chain(raw_root: Path, lake_root: Path, executor: object, workers: int) -> dict[str, float]:
    """The three stages of partition ``PART`` into a fresh lake; seconds per stage."""
    from asr_distill.stages.clean import run_clean
    from asr_distill.stages.index.build import IndexOptions, run_index
    from asr_distill.stages.shards import run_shards
    from asr_distill.storage import LocalStorage

    if lake_root.exists():
        shutil.rmtree(lake_root)
    raw, lake = LocalStorage(raw_root), LocalStorage(lake_root)
    index_executor = "process" if executor == "process" else executor
    out: dict[str, float] = {}
    t = time.perf_counter()
    run_index(raw, lake, PART, IndexOptions(executor=index_executor, workers=workers))  # type: ignore[arg-type]
    out["index"] = time.perf_counter() - t
    t = time.perf_counter()
    clean = run_clean(raw, lake, PART, workers=workers, executor=executor, cross_partition_dedup=False)  # type: ignore[arg-type]
    out["clean"] = time.perf_counter() - t
    t = time.perf_counter()
    shards = run_shards(raw, lake, PART, workers=workers, executor=executor)  # type: ignore[arg-type]
    out["shards"] = time.perf_counter() - t
    out["kept"] = float(clean.kept)
    out["samples"] = float(shards.samples)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="600 clips, 3 repeats (about 3 minutes on 2 cores)")
    ap.add_argument("--n", type=int, default=None, help="clips (default 1500, quick 600)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=None, help="timed repeats (default 3)")
    ap.add_argument("--root", type=Path, default=BENCH / "out" / "ray_stages")
    args = ap.parse_args()
    n = args.n or (600 if args.quick else 1500)
    repeat = args.repeat or 3
    workers = args.workers
    start_machine = machine()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")

    corpus = make_corpus(args.root / "corpus", n, workers)
    raw_root = args.root / "corpus" / "raw"
    files = n
    audio_s = float(corpus["audio_s"])
    print(f"corpus: {files} clips, {audio_s / 60:.1f} min of audio; {workers} workers", flush=True)

    import ray

    from asr_distill.stages._raypool import RayTasks

    temp = tempfile.mkdtemp(prefix="ray-bn-", dir="/tmp")
    t = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    ray_start_s = time.perf_counter() - t
    print(f"private local Ray cluster with {workers} CPUs started in {ray_start_s:.1f} s", flush=True)
    executors: dict[str, object] = {"pool": "process", "ray": RayTasks()}
    lakes = {name: args.root / f"lake_{name}" for name in executors}
    times: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STAGES} for name in executors}
    counts: dict[str, float] = {}
    try:
        for name, ex in executors.items():  # warm-up: forkserver imports, Ray workers and imports
            t = time.perf_counter()
            run_chain(raw_root, lakes[name], ex, workers)
            print(f"warm-up {name}: {time.perf_counter() - t:.1f} s", flush=True)
        for r in range(repeat):
            order = list(executors) if r % 2 == 0 else list(reversed(executors))
            for name in order:
                got = run_chain(raw_root, lakes[name], executors[name], workers)
                counts = {"kept": got["kept"], "samples": got["samples"]}
                for s in STAGES:
                    times[name][s].append(got[s])
                print(
                    f"repeat {r + 1} {name}: " + ", ".join(f"{s} {got[s]:.2f} s" for s in STAGES), flush=True
                )
        identical = _lake_digest(lakes["pool"]) == _lake_digest(lakes["ray"])
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    items = {"index": files, "clean": files, "shards": counts.get("samples", 0.0)}
    rows, summary = [], {}
    for s in STAGES:
        pool_s, ray_s = statistics.median(times["pool"][s]), statistics.median(times["ray"][s])
        ratio = statistics.median(p / q for p, q in zip(times["pool"][s], times["ray"][s], strict=True))
        per_worker = items[s] / ray_s / workers
        summary[s] = {
            "pool_s": times["pool"][s],
            "ray_s": times["ray"][s],
            "ratio": ratio,
            "items": items[s],
            "ray_files_per_s_per_worker": per_worker,
            "pool_files_per_s_per_worker": items[s] / pool_s / workers,
        }
        audio = audio_s if s != "shards" else None
        judged = s != "index"  # index: a fraction of a second per run here, mostly fixed cost: reported
        rows.append(
            row(
                f"ray tasks vs local pool: {s}",
                ratio,
                f">= {TARGET}" if judged else f"report (target {TARGET} is for clean and shards)",
                (ratio >= TARGET) if judged else None,
                f"{items[s]:.0f} files; pool {pool_s:.2f} s, Ray {ray_s:.2f} s (median of {repeat}); Ray "
                f"{per_worker:.1f} files/s per worker"
                + (f", {audio / ray_s / workers:.0f} audio s/s per worker" if audio else "")
                + f"; {workers} workers; lakes byte-identical: {identical}",
            )
        )
        print(rows[-1]["stage"], f"ratio {ratio:.2f} (target >= {TARGET})", rows[-1]["detail"], flush=True)
    rows.append(
        row(
            "ray tasks: lake bytes equal the local pool's",
            1.0 if identical else 0.0,
            "identical",
            identical,
            "index, clean and shards outputs compared file by file",
        )
    )
    doc = {
        "n": files,
        "audio_s": audio_s,
        "workers": workers,
        "ray_start_s": ray_start_s,
        "kept": counts.get("kept"),
        "stages": summary,
        "identical": identical,
    }
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "results.json").write_text(json.dumps({**doc, "machine": machine()}, indent=1))
    write_result("ray_stages", rows, quick=args.quick, machine_start=start_machine, extra=doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
