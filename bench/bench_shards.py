"""Benchmark of the WebDataset shards stage (a script, not a test).

    .venv/bin/python bench/bench_shards.py [--n 300] [--workers CPUS] [--repeat 3] [--tar-mib 256]
                                           [--mem-n 400] [--mem-scale 8] [--root bench/out/shards]

Three measurements, each repeated and reported as median [min..max]:

1. End to end, ``write_shards`` vs a bare loop doing the same work on the same cores: N clips of speech
   (espeak-ng sentences, else a synthetic speech-like signal; WAV 16 kHz mono, WAV 44.1 kHz stereo, FLAC
   22.05 kHz, MP3 22.05 kHz; 1-12 s) cleaned once by the real clean stage for the kept table. ``bare``:
   a forkserver process pool of the same size maps ``sf.read`` + channel mean + ``soxr.resample`` (HQ)
   + int16 + FLAC encoding (same level) over the clips in order (chunksize 4); the parent writes each
   FLAC plus a JSON member into tar files with :mod:`tarfile` (ustar, mtime 0). ``stage``:
   ``write_shards`` with the default config (plan, buckets, spread order, content checks, atomic writes,
   BLAKE3, commit records, index/shard Parquet, wids JSON). Each run is a fresh subprocess (imports done
   before the clock starts; pool start-up is inside it for both); the ratio is taken per repeat (bare
   seconds / stage seconds; target >= 0.8). On a shared machine wall time swings with other load, so the
   CPU seconds of the whole process tree (sampled from /proc) are reported too.
2. Tar writing alone, on the members the stage wrote (replicated up to ``--tar-mib``), into a file in
   the page cache: the stage's :class:`TarWriter`, the same with the running BLAKE3 the stage keeps per
   shard, BLAKE3 alone, WebDataset's ``TarWriter(mtime=0)``, :mod:`tarfile`, and GNU ``tar -cf`` over
   the same bytes laid out as files (listed in the same order, in the page cache). Target: the stage's
   writer >= 0.5x GNU tar (GNU tar computes no digest; the BLAKE3 is reported on its own).
3. Memory: ``write_shards`` in a fresh process for N and ``--mem-scale`` x N rows with a synthetic audio
   loader (no raw store I/O): the driver's peak RSS (VmHWM) and the process tree's summed peak (sampled
   every 20 ms). Also the driver-side plan for 200,000 rows (tracemalloc), which is O(rows).

Results go to ``<root>/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Distillation needs clean audio and a teacher that rarely hallucinates.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday.",
]
FORMATS = [
    ("wav", 16_000, 1, "PCM_16"),
    ("wav", 44_100, 2, "PCM_16"),
    ("flac", 22_050, 1, "PCM_16"),
    ("mp3", 22_050, 1, "MPEG_LAYER_III"),
]
PART = "bench"


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}..{max(xs):.2f}]"


# -- corpus ------------------------------------------------------------------------------------
def _speech_pool() -> tuple[list[np.ndarray], int]:
    espeak = shutil.which("espeak-ng")
    rate = 22_050
    pool = []
    for i, text in enumerate(SENTENCES):
        if espeak:
            wav = subprocess.run(
                [espeak, "-s", str(150 + 10 * i), "--stdout", text], check=True, capture_output=True
            )
            x, rate = sf.read(io.BytesIO(wav.stdout), dtype="float32")
        else:
            t = np.arange(int(3.5 * rate)) / rate
            ph = 2 * np.pi * np.cumsum(110 + 20 * i + 25 * np.sin(2 * np.pi * 0.6 * t)) / rate
            x = (
                0.1 * sum(np.sin(k * ph) / k for k in range(1, 10)) * (1 + np.sin(2 * np.pi * 4 * t)) ** 2 / 4
            ).astype(np.float32)
        pool.append(x)
    return pool, rate


def make_corpus(root: Path, n: int, workers: int) -> dict:
    """Raw clips under ``root/raw/bench/spkXX/`` and the clean stage's kept table (cached)."""
    marker = root / f"corpus_{n}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    if root.exists():
        shutil.rmtree(root)
    raw_dir = root / "raw" / PART
    pool, rate = _speech_pool()
    rng = np.random.default_rng(n)
    total = 0.0
    for i in range(n):
        parts = []
        while sum(len(p) for p in parts) < rng.uniform(1.0, 12.0) * rate:
            parts.append(pool[int(rng.integers(0, len(pool)))])
        x = np.concatenate(parts)[: int(rng.uniform(1.0, 12.0) * rate)] * np.float32(rng.uniform(0.3, 0.9))
        x = x + np.float32(1e-3) * rng.standard_normal(len(x)).astype(np.float32)
        ext, out_rate, ch, subtype = FORMATS[i % len(FORMATS)]
        y = soxr.resample(x, rate, out_rate) if out_rate != rate else x
        if ch == 2:
            y = np.stack([y, 0.8 * y], axis=1)
        path = raw_dir / f"spk{i % 25:02d}" / f"clip_{i:06d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y, out_rate, subtype=subtype)
        total += len(x) / rate
    from asr_distill.stages.clean import CleanConfig, clean_to_tables
    from asr_distill.storage import LocalStorage

    raw = LocalStorage(root / "raw")
    work = LocalStorage(root / "work")
    rows = [
        {
            "partition": PART,
            "key": str(p.relative_to(root / "raw")),
            "size": p.stat().st_size,
            "extension": p.suffix[1:],
        }
        for p in sorted(raw_dir.rglob("*.*"))
    ]
    rows.sort(key=lambda r: r["key"])
    s = clean_to_tables(
        rows,
        raw,
        work,
        kept_key="kept.parquet",
        quarantine_key="q.parquet",
        config=CleanConfig(),
        workers=workers,
    )
    info = {"n": n, "audio_s": total, "kept": s.kept, "kept_hours": s.kept_hours}
    marker.write_text(json.dumps(info))
    return info


# -- memory sampling ---------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tree(root_pid: int) -> dict[int, tuple[int, int]]:
    """pid -> (RSS kB, CPU ticks user+system) of ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, ticks = int(fields[1]), int(fields[11]) + int(fields[12])
            rss = 0
            with open(f"/proc/{entry}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
        info[int(entry)] = (rss, ticks)
        children.setdefault(ppid, []).append(int(entry))
    out: dict[int, tuple[int, int]] = {}
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        if pid in info:
            out[pid] = info[pid]
        stack.extend(children.get(pid, []))
    return out


class TreeSampler(threading.Thread):
    """Samples the process tree every 20 ms: peak of the summed RSS, and CPU time per process (the
    last sample of each; a process's final <= 20 ms can be missed)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb = 0
        self.ticks: dict[int, int] = {}
        self._start_ticks = {pid: t for pid, (_, t) in _tree(os.getpid()).items()}
        self._stop_evt = threading.Event()

    def _sample(self) -> None:
        tree = _tree(os.getpid())
        self.peak_kb = max(self.peak_kb, sum(r for r, _ in tree.values()))
        for pid, (_, t) in tree.items():
            self.ticks[pid] = max(self.ticks.get(pid, 0), t)

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self._sample()
            self._stop_evt.wait(0.02)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join()
        self._sample()
        return self.peak_kb

    @property
    def cpu_s(self) -> float:
        return sum(t - self._start_ticks.get(pid, 0) for pid, t in self.ticks.items()) / CLK_TCK


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# -- 1. end to end (each in a fresh subprocess) ------------------------------------------------------
def _bare_encode(path: str) -> tuple[bytes, int]:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = x.mean(axis=1, dtype=np.float32)
    y = soxr.resample(mono, rate, 16_000, "HQ") if rate != 16_000 else mono
    pcm = np.rint(np.clip(y, -1.0, 1.0) * np.float32(32767)).astype("<i2")
    buf = io.BytesIO()
    sf.write(buf, pcm, 16_000, format="FLAC", subtype="PCM_16", compression_level=0.5)
    return buf.getvalue(), len(pcm)


def measure_e2e(kind: str, root: Path, workers: int) -> dict:
    import pyarrow.parquet as pq

    from asr_distill.stages.shards import ShardConfig, write_shards  # imported before the clock starts
    from asr_distill.storage import LocalStorage

    kept = pq.read_table(root / "work" / "kept.parquet")
    out = root / f"out_{kind}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    sampler = TreeSampler()
    sampler.start()
    start = time.perf_counter()
    if kind == "bare":
        keys = kept.column("key").to_pylist()
        paths = [str(root / "raw" / k) for k in keys]
        ctx = multiprocessing.get_context("forkserver")
        n_bytes, samples, shard = 0, 0, 0
        tf = tarfile.open(out / f"shard-{shard:06d}.tar", "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        size = 0
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for key, (flac, n) in zip(keys, pool.map(_bare_encode, paths, chunksize=4), strict=True):
                meta = json.dumps({"source_key": key, "num_samples": n}).encode()
                if size + len(flac) + len(meta) + 2048 > 256 * 1024 * 1024:
                    tf.close()
                    shard += 1
                    tf = tarfile.open(out / f"shard-{shard:06d}.tar", "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
                    size = 0
                for ext, data in (("flac", flac), ("json", meta)):
                    ti = tarfile.TarInfo(f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.{ext}")
                    ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = len(data), 0, 0o644, "", ""
                    tf.addfile(ti, io.BytesIO(data))
                    size += 512 + len(data) + (-len(data) % 512)
                n_bytes += len(flac) + len(meta)
                samples += n
        tf.close()
        extra = {"shards": shard + 1}
    else:
        summary = write_shards(
            kept,
            PART,
            LocalStorage(out),
            raw=LocalStorage(root / "raw"),
            config=ShardConfig(),
            workers=workers,
        )
        assert summary.ok, summary.to_dict()
        samples = int(summary.hours * 3600 * 16_000)
        extra = {"shards": summary.shards, "bytes": summary.bytes_total}
    seconds = time.perf_counter() - start
    tree = sampler.stop()
    return {
        "kind": kind,
        "seconds": seconds,
        "cpu_s": sampler.cpu_s,
        "audio_s": samples / 16_000,
        "rtf": samples / 16_000 / seconds,
        "self_peak_rss_mb": _vm_hwm_kb() / 1024,
        "tree_peak_rss_mb": tree / 1024,
        **extra,
    }


# -- 2. tar writing alone ---------------------------------------------------------------------------
def _members(root: Path, target_mib: int) -> list[tuple[str, bytes]]:
    import pyarrow.parquet as pq

    index = pq.read_table(root / "out_stage" / "webdataset_shards" / PART / "index.parquet").to_pylist()
    base: list[tuple[str, bytes]] = []
    for row in index:
        with open(root / "out_stage" / row["shard_key"], "rb") as fh:
            for name, off, size in (
                (row["audio_member"], row["audio_offset"], row["audio_size"]),
                (row["json_member"], row["json_offset"], row["json_size"]),
            ):
                fh.seek(off)
                base.append((name, fh.read(size)))
    out: list[tuple[str, bytes]] = []
    total, rep = 0, 0
    while total < target_mib * 1024 * 1024:
        for name, data in base:
            stem, ext = name.split(".", 1)
            out.append((f"{stem}-r{rep}.{ext}", data))
            total += len(data)
        rep += 1
    return out


def bench_tar(root: Path, target_mib: int, repeat: int) -> dict:
    import webdataset as wds

    from asr_distill import hashing as hashing_mod
    from asr_distill.stages.shards.tar import TarWriter

    members = _members(root, target_mib)
    payload = sum(len(d) for _, d in members)
    tmp = root / "tarbench"
    if tmp.exists():
        shutil.rmtree(tmp)
    files = tmp / "files"
    files.mkdir(parents=True)
    for name, data in members:
        (files / name).write_bytes(data)
    (tmp / "list.txt").write_text("\n".join(n for n, _ in members) + "\n")
    out = tmp / "out.tar"

    def asrd(hashing: bool) -> None:
        with open(out, "wb") as fh:
            hasher = hashing_mod.new() if hashing else None
            w = TarWriter(fh, hasher)
            for name, data in members:
                w.add(name, data)
            w.close()
            if hasher is not None:
                hasher.hexdigest()

    def hash_only() -> None:
        h = hashing_mod.new()
        for _, data in members:
            h.update(data)

    def wds_writer() -> None:
        with open(out, "wb") as fh, wds.TarWriter(fh, mtime=0) as w:
            for i in range(0, len(members), 2):
                (a_name, a), (_, j) = members[i], members[i + 1]
                stem, ext = a_name.split(".", 1)
                w.write({"__key__": stem, ext: a, "json": j})

    def tarfile_writer() -> None:
        with open(out, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = len(data), 0, 0o644, "", ""
                tf.addfile(ti, io.BytesIO(data))

    def gnu_tar() -> None:
        subprocess.run(["tar", "-cf", str(out), "-C", str(files), "-T", str(tmp / "list.txt")], check=True)

    methods = {
        "asrd TarWriter": lambda: asrd(False),
        "asrd TarWriter + its BLAKE3": lambda: asrd(True),
        "BLAKE3 alone": lambda: hash_only(),
        "webdataset TarWriter(mtime=0)": wds_writer,
        "tarfile (ustar)": tarfile_writer,
        "GNU tar -cf (files)": gnu_tar,
    }
    gnu_tar()  # warm the page cache of the source files
    speeds: dict[str, list[float]] = {m: [] for m in methods}
    names = list(methods)
    for r in range(repeat):
        for m in names[r % len(names) :] + names[: r % len(names)]:
            if out.exists():
                out.unlink()
            t = time.perf_counter()
            methods[m]()
            speeds[m].append(payload / 1e6 / (time.perf_counter() - t))
    gnu = speeds["GNU tar -cf (files)"]
    ratios = [a / g for a, g in zip(speeds["asrd TarWriter"], gnu, strict=True)]
    ratios_hashed = [a / g for a, g in zip(speeds["asrd TarWriter + its BLAKE3"], gnu, strict=True)]
    shutil.rmtree(tmp)
    return {
        "payload_mb": payload / 1e6,
        "members": len(members),
        "mb_per_s": speeds,
        "ratio_vs_gnu": ratios,
        "ratio_with_blake3_vs_gnu": ratios_hashed,
    }


# -- 3. memory -----------------------------------------------------------------------------------------
class SynthLoader:
    """Speech-like audio whose length and content derive from the key (no storage I/O)."""

    def __call__(self, key: str) -> np.ndarray:
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        n = int(key.rsplit("_", 1)[1].split(".")[0])
        rng = np.random.default_rng(seed)
        t = np.arange(n) / 16_000
        ph = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.5 * t)) / 16_000
        x = (
            0.1
            * (np.sin(ph) + 0.5 * np.sin(2 * ph) + 0.3 * np.sin(3 * ph))
            * (1 + np.sin(2 * np.pi * 3 * t))
            / 2
        )
        return (x + 0.003 * rng.standard_normal(n)).astype(np.float32)


def synth_rows(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        samples = int(rng.uniform(0.6, 4.0) * 16_000)
        rows.append(
            {
                "partition": PART,
                "key": f"{PART}/spk{i % 50:02d}/clip{i:07d}_{samples}.wav",
                "num_samples": samples,
                "speaker": f"s{i % 50}",
                "text": "some words here",
            }
        )
    return rows


def measure_mem(n: int, root: Path, workers: int) -> dict:
    from asr_distill.stages.shards import ShardConfig, write_shards
    from asr_distill.storage import LocalStorage

    out = root / f"mem_{n}"
    if out.exists():
        shutil.rmtree(out)
    rows = synth_rows(n)
    sampler = TreeSampler()
    sampler.start()
    t = time.perf_counter()
    summary = write_shards(
        rows,
        PART,
        LocalStorage(out),
        loader=SynthLoader(),
        config=ShardConfig(max_shard_bytes=16 * 1024 * 1024),
        workers=workers,
    )
    seconds = time.perf_counter() - t
    tree = sampler.stop()
    assert summary.ok, summary.to_dict()
    shutil.rmtree(out)
    return {
        "n": n,
        "seconds": seconds,
        "shards": summary.shards,
        "self_peak_rss_mb": _vm_hwm_kb() / 1024,
        "tree_peak_rss_mb": tree / 1024,
        "rtf": summary.hours * 3600 / seconds,
    }


def measure_plan(n: int) -> dict:
    import tracemalloc

    from asr_distill.stages.shards import ShardConfig, plan_partition

    rows = synth_rows(n)
    tracemalloc.start()
    plan = plan_partition(rows, PART, ShardConfig())
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "n": n,
        "planned": plan.n_samples,
        "plan_bytes_per_row": current / n,
        "peak_bytes_per_row": peak / n,
    }


def _sub(*args: str) -> dict:
    res = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tar-mib", type=int, default=256)
    ap.add_argument("--mem-n", type=int, default=400)
    ap.add_argument("--mem-scale", type=int, default=8)
    ap.add_argument("--root", type=Path, default=REPO / "bench" / "out" / "shards")
    ap.add_argument("--parts", default="e2e,tar,mem", help="comma-separated subset of e2e,tar,mem")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small run for `make bench`: N=80, 2 repeats, 32 MiB of tar, memory at 100 and 400 rows",
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what = args.child[0]
        if what == "e2e":
            print(json.dumps(measure_e2e(args.child[1], args.root, args.workers)))
        elif what == "mem":
            print(json.dumps(measure_mem(int(args.child[1]), args.root, args.workers)))
        elif what == "plan":
            print(json.dumps(measure_plan(int(args.child[1]))))
        return

    from _result import machine, write_result

    machine_start = machine()
    if args.quick:
        args.n, args.repeat, args.tar_mib, args.mem_n, args.mem_scale = 80, 2, 32, 100, 4
    results: dict = {"workers": args.workers, "load_avg_start": os.getloadavg()}
    root = args.root / f"n{args.n}"
    t0 = time.perf_counter()
    info = make_corpus(root, args.n, args.workers)
    print(
        f"corpus: {info['kept']} kept clips, {info['kept_hours']:.2f} h ({time.perf_counter() - t0:.0f} s to prepare)"
    )
    print(f"workers: {args.workers}, load average at start: {os.getloadavg()[0]:.1f}")

    parts = set(args.parts.split(","))
    if "e2e" in parts or not (root / "out_stage").exists():
        run_e2e(args, root, results)
    if "tar" in parts:
        run_tar(args, root, results)
    if "mem" in parts:
        run_mem(args, results)
    results["load_avg_end"] = os.getloadavg()
    out = args.root / "results.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"results: {out}")
    write_result(
        "shards",
        result_rows(results, args),
        quick=args.quick,
        machine_start=machine_start,
        extra={"detail_file": str(out)},
    )


E2E_TARGET, TAR_TARGET, MEMORY_TARGET = 0.8, 0.5, 1.2


def result_rows(results: dict, args: argparse.Namespace) -> list[dict]:
    """The rows `bench/run_all.py` shows: one per target of the parts that ran, and the CPU cost."""
    from _result import row

    rows = []
    if "e2e" in results:
        e2e = results["e2e"]
        ratio = statistics.median(e2e["ratio"])
        rows.append(
            row(
                "shards / bare decode+FLAC+tar",
                ratio,
                f">= {E2E_TARGET}",
                ratio >= E2E_TARGET,
                f"N={args.n}, {args.workers} workers, median of {len(e2e['ratio'])} "
                f"[{min(e2e['ratio']):.2f}..{max(e2e['ratio']):.2f}]; CPU efficiency "
                f"{statistics.median(e2e['cpu_ratio']):.2f}",
            )
        )
        stage = e2e["runs"]["stage"]
        cost = statistics.median(3600 * r["cpu_s"] / r["audio_s"] for r in stage)
        rows.append(
            row(
                "shards CPU core-s per audio hour",
                cost,
                "report",
                None,
                f"process tree CPU, {stage[0]['audio_s']:.0f} s of audio; bare loop "
                f"{statistics.median(3600 * r['cpu_s'] / r['audio_s'] for r in e2e['runs']['bare']):.1f}",
            )
        )
    if "tar" in results:
        r = statistics.median(results["tar"]["ratio_vs_gnu"])
        rows.append(
            row(
                "shards tar writer / GNU tar",
                r,
                f">= {TAR_TARGET}",
                r >= TAR_TARGET,
                f"{results['tar']['payload_mb']:.0f} MB; with its BLAKE3: "
                f"{statistics.median(results['tar']['ratio_with_blake3_vs_gnu']):.2f}",
            )
        )
    if "memory" in results:
        small, big = results["memory"]["write"]
        r = big["self_peak_rss_mb"] / small["self_peak_rss_mb"]
        rows.append(
            row(
                "shards driver peak RSS kN / N",
                r,
                f"<= {MEMORY_TARGET}",
                r <= MEMORY_TARGET,
                f"{small['n']} -> {big['n']} rows: driver {small['self_peak_rss_mb']:.0f} -> "
                f"{big['self_peak_rss_mb']:.0f} MB, tree {small['tree_peak_rss_mb']:.0f} -> "
                f"{big['tree_peak_rss_mb']:.0f} MB",
            )
        )
    return rows


def run_e2e(args: argparse.Namespace, root: Path, results: dict) -> None:
    runs: dict[str, list[dict]] = {"bare": [], "stage": []}
    for r in range(args.repeat):
        for kind in ["bare", "stage"] if r % 2 == 0 else ["stage", "bare"]:
            runs[kind].append(
                _sub("--root", str(root), "--workers", str(args.workers), "--child", "e2e", kind)
            )
    ratios = [b["seconds"] / s["seconds"] for b, s in zip(runs["bare"], runs["stage"], strict=True)]
    cpu_ratios = [b["cpu_s"] / s["cpu_s"] for b, s in zip(runs["bare"], runs["stage"], strict=True)]
    for kind in ("bare", "stage"):
        rs = runs[kind]
        print(
            f"  {kind:5s}: {spread([x['seconds'] for x in rs])} s, CPU {spread([x['cpu_s'] for x in rs])} s, "
            f"{spread([x['rtf'] for x in rs])}x real time, "
            f"parent peak RSS {spread([x['self_peak_rss_mb'] for x in rs])} MB, tree {spread([x['tree_peak_rss_mb'] for x in rs])} MB"
        )
    print(f"end to end: stage/bare throughput {spread(ratios)} (target >= 0.8)")
    print(
        f"end to end: stage/bare CPU efficiency (bare CPU s / stage CPU s, whole process tree) {spread(cpu_ratios)}"
    )
    results["e2e"] = {"runs": runs, "ratio": ratios, "cpu_ratio": cpu_ratios}


def run_tar(args: argparse.Namespace, root: Path, results: dict) -> None:
    tar = bench_tar(root, args.tar_mib, max(args.repeat, 3))
    print(f"tar writing alone, {tar['members']} members, {tar['payload_mb']:.0f} MB (MB/s):")
    for m, v in tar["mb_per_s"].items():
        print(f"  {m:32s} {spread(v)}")
    print(f"stage TarWriter / GNU tar: {spread(tar['ratio_vs_gnu'])} (target >= 0.5)")
    print(
        f"stage TarWriter with the shard BLAKE3 it also computes / GNU tar: {spread(tar['ratio_with_blake3_vs_gnu'])}"
    )
    results["tar"] = tar


def run_mem(args: argparse.Namespace, results: dict) -> None:
    mem = [
        _sub("--root", str(args.root), "--workers", str(args.workers), "--child", "mem", str(n))
        for n in (args.mem_n, args.mem_n * args.mem_scale)
    ]
    for m in mem:
        print(
            f"  memory, {m['n']:6d} clips ({m['shards']} shards, {m['seconds']:.1f} s): driver peak RSS {m['self_peak_rss_mb']:.0f} MB, process tree {m['tree_peak_rss_mb']:.0f} MB"
        )
    plan = _sub("--child", "plan", "200000")
    print(
        f"  plan of {plan['n']} rows: {plan['plan_bytes_per_row']:.0f} bytes per row held ({plan['peak_bytes_per_row']:.0f} peak)"
    )
    results["memory"] = {"write": mem, "plan": plan}


if __name__ == "__main__":
    main()
