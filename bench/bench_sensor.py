"""Speed and memory of one ``raw_prefix_sensor`` tick over many raw prefixes; a script, not a test.

    .venv/bin/python bench/bench_sensor.py [--prefixes 10000] [--files 4] [--keep DIR]

Target: one tick over 10,000 prefixes in < 10 s, with memory that does not grow with the number of
objects (only with the number of prefix names, which the cursor holds anyway).

A real LocalStorage raw store is written to a temporary directory: ``--prefixes`` top-level prefixes,
each with ``--files`` small objects in a sub-folder plus a ``_SUCCESS`` marker. Each scenario runs in a
fresh process (so that peak RSS belongs to it) and reports the wall time of the tick, the process's RSS
before the tick and its peak RSS after it, and the Python heap peak of the same tick traced again
with ``tracemalloc`` (that second run is slower and not the reported time).

Scenarios (marker ``_SUCCESS`` unless said otherwise; defaults = 100 runs / 1,000 probes / 50 re-checks):

* ``cold``            empty cursor, default limits: launches 100, the rest on later ticks.
* ``cold_unbounded``  empty cursor, limits raised to 10,000: lists every prefix deeply, launches all
                      (the worst case: a lost cursor with raised limits).
* ``steady``          every prefix launched already (the cursor of ``cold_unbounded``): the usual tick.
* ``steady_rerun``    same, with re-runs of changed prefixes on.
* ``incomplete``      no prefix has its marker (marker name ``_NOPE``): 1,000 marker stats per tick.
* ``quiet``           quiet-period mode, no markers: 1,000 deep listings per tick.
* ``dagster_cold`` / ``dagster_steady``: the real Dagster sensor (``evaluate_tick`` on a SQLite instance,
                      run requests resolved against ``distill_job``), default limits.

The result is printed and written to ``bench/out/bench_sensor_P<prefixes>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

TARGET_S = 10.0
SCENARIOS = [
    "cold",
    "cold_unbounded",
    "steady",
    "steady_rerun",
    "incomplete",
    "quiet",
    "dagster_cold",
    "dagster_steady",
]


def make_store(root: Path, prefixes: int, files: int) -> float:
    """Write the raw store with plain file I/O (fast); returns seconds taken."""
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    for i in range(prefixes):
        folder = root / f"batch_{i:05d}" / "spk"
        folder.mkdir(parents=True)
        for j in range(files):
            (folder / f"utt_{j:04d}.wav").write_bytes(
                b"RIFF" + i.to_bytes(4, "little") + j.to_bytes(4, "little")
            )
        (folder.parent / "_SUCCESS").write_bytes(b"")
    return time.perf_counter() - t0


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(scenario: str, root: str, cursor_file: str) -> dict[str, Any]:
    """One scenario in this (fresh) process."""
    from asr_distill.partitions import is_valid_partition_name
    from asr_distill.stages.discovery import DiscoverySettings, plan_tick
    from asr_distill.storage import LocalStorage

    store = LocalStorage(root)
    cursor = None
    settings = DiscoverySettings()
    if scenario == "cold_unbounded":
        settings = DiscoverySettings(max_runs_per_tick=100_000, probes_per_tick=100_000)
    elif scenario in ("steady", "steady_rerun", "dagster_steady"):
        cursor = Path(cursor_file).read_text()
        settings = DiscoverySettings(rerun_changed=scenario == "steady_rerun")
    elif scenario == "incomplete":
        settings = DiscoverySettings(marker="_NOPE")
    elif scenario == "quiet":
        settings = DiscoverySettings(marker="_NOPE", quiet_seconds=300)

    if scenario.startswith("dagster_"):
        return _dagster_tick(store, cursor, settings)

    def tick() -> Any:
        return plan_tick(store, cursor, settings, now=time.time(), is_valid_name=is_valid_partition_name)

    rss_before = _rss_mb()
    t0 = time.perf_counter()
    plan = tick()
    elapsed = time.perf_counter() - t0
    peak = _peak_rss_mb()
    if scenario == "cold_unbounded":
        Path(cursor_file).write_text(plan.cursor)
    tracemalloc.start()
    tick()
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "scenario": scenario,
        "tick_s": round(elapsed, 3),
        "launched": len(plan.launches),
        "examined": plan.probed,
        "rechecked": plan.rechecked,
        "waiting": plan.waiting,
        "cursor_bytes": len(plan.cursor.encode()),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak, 1),
        "heap_peak_mb": round(heap_peak / 2**20, 2),
    }


def _dagster_tick(store: Any, cursor: str | None, settings: Any) -> dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    import dagster as dg
    from dagster._core.definitions.partitions.context import partition_loading_context

    from asr_distill.assets import ALL_ASSETS, ALL_CHECKS
    from asr_distill.jobs import distill_job
    from asr_distill.resources import StorageResource
    from asr_distill.sensors import build_raw_prefix_sensor

    logging.getLogger("dagster").setLevel(logging.WARNING)
    sensor = build_raw_prefix_sensor(settings)
    from asr_distill.resources import make_ray_resource, make_teacher_resource

    resources = {
        "raw": StorageResource(uri=store.uri),
        "lake": StorageResource(uri=store.uri + "-lake"),
        # Not used by a tick, but every asset's resources must be bound for the definitions to load.
        "ray_cluster": make_ray_resource(),
        "teacher": make_teacher_resource(),
    }
    defs = dg.Definitions(
        assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=[distill_job], sensors=[sensor], resources=resources
    )
    with dg.instance_for_test() as instance:
        if cursor is not None:
            from asr_distill.partitions import raw_prefix_partitions

            names = [p.rstrip("/") for p in store.list_prefixes("")]
            instance.add_dynamic_partitions(raw_prefix_partitions.name, names)

        def tick() -> Any:
            with (
                dg.build_sensor_context(
                    instance=instance,
                    instance_ref=instance.get_ref(),
                    cursor=cursor,
                    resources={"raw": resources["raw"]},
                    definitions=defs,
                ) as context,
                partition_loading_context(dynamic_partitions_store=instance),
            ):
                return sensor.evaluate_tick(context)

        tick()  # warm: first-use imports and caches of Dagster, not the sensor's cost
        rss_before = _rss_mb()
        t0 = time.perf_counter()
        data = tick()
        elapsed = time.perf_counter() - t0
        peak = _peak_rss_mb()
    return {
        "scenario": "dagster_steady" if cursor else "dagster_cold",
        "tick_s": round(elapsed, 3),
        "launched": len(data.run_requests or []),
        "cursor_bytes": len((data.cursor or "").encode()),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefixes", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=4, help="objects per prefix besides the marker")
    parser.add_argument("--keep", type=Path, help="write the store here and keep it (default: a temp dir)")
    parser.add_argument(
        "--quick", action="store_true", help="for `make bench`: 10,000 prefixes of one object each"
    )
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--cursor-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_child(args.child, args.root, args.cursor_file)))
        return 0

    from _result import machine, row, write_result

    machine_start = machine()
    if args.quick:
        args.files = 1
    tmp = Path(tempfile.mkdtemp(prefix="asrd-bench-sensor-"))
    root = (args.keep or tmp / "raw").resolve()
    try:
        if root.exists() and any(root.iterdir()):
            print(f"using the existing store {root}")
            write_s = 0.0
        else:
            write_s = make_store(root, args.prefixes, args.files)
            print(f"wrote {args.prefixes:,} prefixes x {args.files + 1} objects to {root} in {write_s:.1f} s")
        cursor_file = tmp / "cursor.json"
        results = []
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
        for scenario in SCENARIOS:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                scenario,
                "--root",
                str(root),
                "--cursor-file",
                str(cursor_file),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if out.returncode != 0:
                print(f"{scenario}: FAILED\n{out.stderr[-3000:]}")
                results.append({"scenario": scenario, "error": out.stderr[-3000:]})
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            extra = f", heap peak {result['heap_peak_mb']} MB" if "heap_peak_mb" in result else ""
            print(
                f"{scenario:15s} {result['tick_s']:7.3f} s  launched {result['launched']:6d}  "
                f"cursor {result['cursor_bytes'] / 1024:7.1f} KiB  RSS {result['rss_before_mb']:.0f} -> "
                f"peak {result['peak_rss_mb']:.0f} MB{extra}"
            )
        worst = max((r["tick_s"] for r in results if "tick_s" in r), default=float("inf"))
        ok = worst < TARGET_S and all("error" not in r for r in results)
        print(
            f"target: every tick < {TARGET_S:g} s over {args.prefixes:,} prefixes: {'PASS' if ok else 'FAIL'}"
            f" (slowest {worst:.2f} s)"
        )
        report = {
            "prefixes": args.prefixes,
            "objects_per_prefix": args.files + 1,
            "store_write_s": round(write_s, 1),
            "target_s": TARGET_S,
            "pass": ok,
            "results": results,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        }
        out_dir = REPO / "bench" / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        out_path = out_dir / f"bench_sensor_P{args.prefixes}.json"
        out_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written {out_path}")
        slowest = max((r for r in results if "tick_s" in r), key=lambda r: r["tick_s"], default=None)
        failed = [r["scenario"] for r in results if "error" in r]
        peak = max((r["peak_rss_mb"] for r in results if "peak_rss_mb" in r), default=0.0)
        detail = (
            f"seconds; {args.prefixes:,} prefixes x {args.files + 1} objects, {len(results)} scenarios, "
            f"slowest {slowest['scenario'] if slowest else '-'}; peak RSS {peak:.0f} MB"
        )
        if failed:
            detail += f"; FAILED: {', '.join(failed)}"
        write_result(
            "sensor",
            [
                row(
                    "sensor tick, slowest scenario (s)",
                    worst if slowest else None,
                    f"< {TARGET_S:g} s",
                    ok,
                    detail,
                )
            ],
            quick=args.quick,
            machine_start=machine_start,
            extra={"detail_file": str(out_path)},
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
