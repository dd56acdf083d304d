"""Scale on one machine: Dagster with many partitions, and the index over a very large listing (a script).

    .venv/bin/python bench/bench_scale.py [--partitions 10000] [--objects 1000000] [--parts dagster,listing]
                                          [--quick]

1. ``dagster``: a real Dagster instance (SQLite storage, ``DAGSTER_HOME`` in a temporary directory,
   telemetry off) with the project's definitions (``asr_distill.definitions.defs``). Timed, in one fresh
   process: registering ``--partitions`` dynamic partitions of ``raw_prefix`` in one call (what the
   sensor's ``dynamic_partitions_requests`` and the ``discover_partitions`` job do), reading them back
   (every sensor tick does), creating an asset backfill over all of them for every partitioned asset
   (``PartitionBackfill.from_asset_partitions`` + ``instance.add_backfill``: what the UI's and the
   GraphQL ``launchPartitionBackfill`` do), and the backfill daemon's first planning iteration
   (``execute_asset_backfill_iteration_inner``, which has no side effects: it returns the run requests
   the daemon would submit, grouped by the assets' backfill policies). No run is launched. Peak RSS
   (VmHWM) after each step.
2. ``listing``: ``build_index`` (the index stage's real code: streamed listing, grouping of sidecars,
   fingerprint, probes, Parquet in batches) over a simulated object store that yields ``--objects``
   objects lazily in key order (50 % tiny 16 kHz WAVs served from one in-memory buffer, 30 % ``.txt``
   sidecars, 20 % ignored ``.lab`` files, 1,000 objects per folder), writing the index to a local lake.
   Each size runs in a fresh process; reported: wall and CPU time, objects/s, peak RSS (VmHWM) and the
   GET count. Target: peak RSS at the large size <= 1.2x peak RSS at a tenth of it (flat memory). The
   probes run inline (one thread): a real remote store would be probed by a thread pool of up to 64
   threads, whose memory is bounded by ``max_in_flight`` and does not depend on the listing size.

``--quick`` (``make bench``): 10,000 partitions, listings of 20,000 and 200,000 objects.
Writes ``bench/out/scale.json`` (rows for ``bench/run_all.py``) and ``bench/out/bench_scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MEMORY_TARGET = 1.2  # peak RSS(large listing) <= this x peak RSS(listing a tenth of its size)
OBJECTS_PER_DIR = 1000
PARTITION = "big"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


# -- 1. Dagster ----------------------------------------------------------------------------------
def dagster_child(n: int, home: str) -> dict[str, Any]:
    """One fresh process: register ``n`` partitions, create and plan a backfill over all of them."""
    os.environ["DAGSTER_HOME"] = home
    Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.setdefault("ASR_DISTILL_RAW", str(Path(home) / "raw"))
    os.environ.setdefault("ASR_DISTILL_LAKE", str(Path(home) / "lake"))
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    out: dict[str, Any] = {"partitions": n}
    t = time.perf_counter()
    import dagster as dg
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.execution.asset_backfill import execute_asset_backfill_iteration_inner
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.test_utils import in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._time import get_current_datetime

    # The stage code this benchmark depends on (re-point here if the project's names change).
    from asr_distill.definitions import defs
    from asr_distill.partitions import raw_prefix_partitions

    out["import_s"] = round(time.perf_counter() - t, 2)
    out["rss_after_import_mib"] = _mib(_status_kib("VmRSS"))
    assert defs is not None  # the code location below loads the same module attribute
    name = raw_prefix_partitions.name
    keys = [f"batch_{i:06d}" for i in range(n)]
    origin = LoadableTargetOrigin(
        executable_path=sys.executable,
        python_file=None,
        module_name="asr_distill.definitions",
        attribute="defs",
    )
    with dg.DagsterInstance.get() as instance, contextlib.ExitStack() as stack:
        # What the daemon and the UI plan with: the workspace's (remote) asset graph of the code location.
        t = time.perf_counter()
        workspace = stack.enter_context(in_process_test_workspace(instance, origin))
        asset_graph = workspace.asset_graph
        out["load_code_location_s"] = round(time.perf_counter() - t, 2)
        selection = sorted(
            (k for k in asset_graph.materializable_asset_keys if asset_graph.get(k).is_partitioned),
            key=lambda k: k.to_user_string(),
        )
        out["assets"] = [k.to_user_string() for k in selection]
        steps: dict[str, float] = {}

        def step(label: str, fn: Any) -> Any:
            t0 = time.perf_counter()
            value = fn()
            steps[label] = round(time.perf_counter() - t0, 3)
            out.setdefault("rss_after_mib", {})[label] = _mib(_status_kib("VmRSS"))
            return value

        step("add_dynamic_partitions", lambda: instance.add_dynamic_partitions(name, keys))
        got = step("get_dynamic_partitions", lambda: instance.get_dynamic_partitions(name))
        assert len(got) == n, len(got)
        step("has_dynamic_partition (one key)", lambda: instance.has_dynamic_partition(name, keys[-1]))

        def create() -> PartitionBackfill:
            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id=uuid.uuid4().hex[:8],
                asset_graph=asset_graph,
                partition_names=keys,
                asset_selection=selection,
                backfill_timestamp=time.time(),
                tags={},
                dynamic_partitions_store=instance,
                all_partitions=False,
                title=None,
                description=None,
                run_config=None,
            )
            instance.add_backfill(backfill)
            return backfill

        backfill = step("create backfill (from_asset_partitions + add_backfill)", create)
        stored = instance.get_backfill(backfill.backfill_id)
        assert stored is not None
        data = stored.get_asset_backfill_data(asset_graph)
        out["backfill_target_asset_partitions"] = data.target_subset.num_partitions_and_non_partitioned_assets
        out["backfill_serialized_kib"] = round(
            len(data.serialize(dynamic_partitions_store=instance, asset_graph=asset_graph)) / 1024, 1
        )

        def plan() -> Any:
            view = AssetGraphView(
                temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                instance=instance,
                asset_graph=asset_graph,
            )
            return execute_asset_backfill_iteration_inner(
                backfill_id=backfill.backfill_id,
                asset_backfill_data=data,
                asset_graph_view=view,
                backfill_start_timestamp=backfill.backfill_timestamp,
                logger=logging.getLogger("bench_scale"),
                run_config=None,
            )

        logging.getLogger("bench_scale").setLevel(logging.WARNING)
        result = step("plan the first backfill iteration (run requests)", plan)
        sizes = sorted(len(rr.asset_selection or []) for rr in result.run_requests)
        ranges = [rr for rr in result.run_requests if rr.partition_key_range is not None]
        out["first_iteration"] = {
            "run_requests": len(result.run_requests),
            "with_partition_range": len(ranges),
            "assets_per_run": sorted(set(sizes)),
            "root_assets": sorted(
                {k.to_user_string() for rr in result.run_requests for k in (rr.asset_selection or [])}
            ),
        }
        out["steps_s"] = steps
        out["sqlite_mib"] = round(sum(p.stat().st_size for p in Path(home).rglob("*.db")) / 2**20, 1)
    out["peak_rss_mib"] = _mib(_status_kib("VmHWM"))
    return out


# -- 2. listing ----------------------------------------------------------------------------------
def _tiny_wav() -> bytes:
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(1600) / 16_000  # 0.1 s
    sf.write(
        buf, (0.1 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 16_000, format="WAV", subtype="PCM_16"
    )
    return buf.getvalue()


def _make_store(n_objects: int) -> Any:
    """A Storage that lists ``n_objects`` objects under ``big/`` lazily, in key order, from nothing."""
    from asr_distill.storage import ObjectInfo, ObjectNotFoundError, Storage

    wav = _tiny_wav()
    text = b"a short transcript of the utterance\n"
    # per 10 stems: 10 .wav, 6 .txt, 4 .lab (ignored) = 20 objects; sorted as .lab < .txt < .wav
    has_txt = {0, 1, 3, 4, 6, 8}
    has_lab = {2, 5, 7, 9}

    class ListingOnlyStore(Storage):
        uri = "bench://listing"

        def __init__(self) -> None:
            self.gets = 0

        def _objects(self) -> Iterator[ObjectInfo]:
            emitted, stem = 0, 0
            while emitted < n_objects:
                d = f"{PARTITION}/d{emitted // OBJECTS_PER_DIR:05d}/u{stem:08d}"
                for ext, size, cond in (
                    ("lab", 12, stem % 10 in has_lab),
                    ("txt", len(text), stem % 10 in has_txt),
                    ("wav", len(wav), True),
                ):
                    if cond and emitted < n_objects:
                        yield ObjectInfo(f"{d}.{ext}", size, etag=f"e{stem}{ext}", mtime=1.7e9)
                        emitted += 1
                stem += 1

        def iter_objects(
            self, prefix: str = "", *, recursive: bool = True, include_unaddressable: bool = False
        ) -> Iterator[ObjectInfo]:
            for obj in self._objects():
                if obj.key.startswith(prefix):
                    yield obj

        def list_prefixes(self, prefix: str = "") -> Iterator[str]:
            yield f"{PARTITION}/"

        def stat(self, key: str) -> ObjectInfo:
            return ObjectInfo(key, len(self.read_bytes(key)))

        def read_bytes(self, key: str) -> bytes:
            self.gets += 1
            if key.endswith(".wav"):
                return wav
            if key.endswith(".txt"):
                return text
            raise ObjectNotFoundError(key)

        def read_range(self, key: str, start: int, length: int) -> bytes:
            return self.read_bytes(key)[start : start + length]

        def open_read(self, key: str) -> BinaryIO:
            return io.BytesIO(self.read_bytes(key))

        def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
            raise NotImplementedError("read-only")

        def write_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
            raise NotImplementedError("read-only")

        def delete(self, key: str) -> None:
            raise NotImplementedError("read-only")

    return ListingOnlyStore()


def listing_child(n_objects: int, lake_dir: str) -> dict[str, Any]:
    # The stage code this benchmark depends on (re-point here if the project's names change).
    from asr_distill.stages.index.build import IndexOptions, build_index
    from asr_distill.storage import LocalStorage

    raw = _make_store(n_objects)
    lake = LocalStorage(lake_dir)
    rss0 = _status_kib("VmRSS")
    t, c = time.perf_counter(), time.process_time()
    summary = build_index(
        raw,
        lake,
        PARTITION,
        f"{PARTITION}/",
        f"index/{PARTITION}.parquet",
        IndexOptions(executor="inline"),
        force=True,
    )
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    index_bytes = (Path(lake_dir) / "index" / f"{PARTITION}.parquet").stat().st_size
    return {
        "objects": n_objects,
        "rows": summary.rows,
        "ok_rows": summary.ok_rows,
        "with_text": summary.with_text,
        "ignored": summary.ignored_objects,
        "gets": raw.gets,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "objects_per_s": round(n_objects / wall),
        "objects_per_cpu_s": round(n_objects / cpu),
        "index_mib": round(index_bytes / 2**20, 1),
        "rss_before_mib": _mib(rss0),
        "peak_rss_mib": _mib(_status_kib("VmHWM")),
    }


# -- driver --------------------------------------------------------------------------------------
def _child(*args: str, timeout: int = 900) -> dict[str, Any]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--objects", type=int, default=1_000_000, help="the large listing (the small is a tenth)")
    ap.add_argument("--parts", default="dagster,listing")
    ap.add_argument(
        "--quick", action="store_true", help="for `make bench`: 10,000 partitions, 200,000 objects"
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "dagster":
            print(json.dumps(dagster_child(int(rest[0]), rest[1])))
        else:
            print(json.dumps(listing_child(int(rest[0]), rest[1])))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _result import machine, row, write_result

    machine_start = machine()
    if args.quick:
        args.partitions, args.objects = 10_000, 200_000
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {"machine_start": machine_start}
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="asrd-bench-scale-"))
    try:
        if "dagster" in parts:
            home = tmp / "dagster_home"
            home.mkdir()
            d = _child("dagster", str(args.partitions), str(home))
            d["loadavg_end"] = os.getloadavg()
            report["dagster"] = d
            print(f"Dagster, {d['partitions']:,} partitions of raw_prefix, assets {', '.join(d['assets'])}:")
            for label, s in d["steps_s"].items():
                print(f"  {label:<58} {s:8.2f} s   RSS after {d['rss_after_mib'][label]:7.1f} MiB")
            fi = d["first_iteration"]
            print(
                f"  first iteration: {fi['run_requests']} run requests ({fi['with_partition_range']} with a "
                f"partition range) for root assets {fi['root_assets']}; backfill data "
                f"{d['backfill_serialized_kib']} KiB serialised, SQLite {d['sqlite_mib']} MiB; "
                f"peak RSS {d['peak_rss_mib']} MiB (imports alone {d['rss_after_import_mib']} MiB)"
            )
            steps = d["steps_s"]
            rows.append(
                row(
                    f"dagster: register {d['partitions']:,} partitions (s)",
                    steps["add_dynamic_partitions"],
                    "report",
                    None,
                    f"SQLite instance; reading them back {steps['get_dynamic_partitions']} s",
                )
            )
            plan_s = (
                steps["create backfill (from_asset_partitions + add_backfill)"]
                + steps["plan the first backfill iteration (run requests)"]
            )
            rows.append(
                row(
                    f"dagster: create + plan backfill of {d['partitions']:,} partitions (s)",
                    plan_s,
                    "report",
                    None,
                    f"{len(d['assets'])} assets, {fi['run_requests']} run requests in the first iteration; "
                    f"peak RSS {d['peak_rss_mib']} MiB",
                )
            )
        if "listing" in parts:
            sizes = [args.objects // 10, args.objects]
            res = []
            for n in sizes:
                lake = tmp / f"lake_{n}"
                r = _child("listing", str(n), str(lake))
                r["loadavg_end"] = os.getloadavg()
                shutil.rmtree(lake, ignore_errors=True)
                res.append(r)
                print(
                    f"index over a listing of {n:,} objects: {r['rows']:,} rows ({r['with_text']:,} with text, "
                    f"{r['ignored']:,} ignored), {r['gets']:,} GETs, {r['wall_s']} s wall, {r['cpu_s']} s CPU, "
                    f"{r['objects_per_s']:,} objects/s ({r['objects_per_cpu_s']:,} per CPU second), index {r['index_mib']} MiB, peak RSS "
                    f"{r['peak_rss_mib']} MiB (before the run {r['rss_before_mib']} MiB)",
                    flush=True,
                )
            report["listing"] = res
            small, big = res
            ratio = big["peak_rss_mib"] / small["peak_rss_mib"]
            rows.append(
                row(
                    f"index listing peak RSS {big['objects']:,} / {small['objects']:,} objects",
                    ratio,
                    f"<= {MEMORY_TARGET}",
                    ratio <= MEMORY_TARGET and big["rows"] == big["objects"] // 2,
                    f"{small['peak_rss_mib']} -> {big['peak_rss_mib']} MiB; {big['objects_per_cpu_s']:,} objects "
                    f"per CPU second (inline probes, one thread; {big['objects_per_s']:,}/s wall)",
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = REPO / "bench" / "out" / "bench_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written {out.relative_to(REPO)}")
    write_result(
        "scale", rows, quick=args.quick, machine_start=machine_start, extra={"detail_file": str(out)}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
