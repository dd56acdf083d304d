"""Benchmark of the clean stage against a bare soundfile + soxr decode loop (a script, not a test).

    .venv/bin/python bench/bench_clean.py [--n 200] [--workers 2] [--root bench/out/clean]
                                          [--sha-ext on|off|both]

Writes N and 10N speech files (espeak-ng, else a synthetic speech-like signal) in a mix of formats
(WAV 16 kHz mono, WAV 44.1 kHz stereo, FLAC 22.05 kHz, MP3 22.05 kHz), then in fresh subprocesses:

* ``bare``: ``sf.read`` + mean of channels + ``soxr.resample`` to 16 kHz, over a forkserver process pool
  of the same size, ``chunksize=8``;
* ``clean``: ``clean_to_tables`` (decode, metrics, hashes, rules, Parquet) with the process executor, and
  once with the thread executor for comparison.

Prints throughput (audio seconds per wall second), the clean/bare ratio (target >= 0.85) and peak
memory: the parent's peak RSS and the peak of the summed RSS of the whole process tree (sampled
every 20 ms from /proc), for N and 10N files (target: flat).

``--sha-ext both`` runs the same comparison twice in one run, interleaved: as the machine is, and with
OpenSSL's SHA extensions masked in the measured processes (``OPENSSL_ia32cap=":~0x20000000"``: sha256
then runs at the speed of a CPU without them; the script times sha256 under both settings to show the
mask took effect). The clean stage's hashes are BLAKE3, which does not use OpenSSL, so the two ratios
should agree (target: within 0.05). ``--sha-ext off`` measures masked only (the mask is an environment
variable, so ``OPENSSL_ia32cap=":~0x20000000"`` in front of an older checkout's script does the same).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# clean/bare throughput (issue 18: BLAKE3 content hashes, the source hashed from the decoder's own read)
TARGET = 0.85
SHA_EXT_TARGET = 0.05  # |ratio with SHA extensions masked - ratio without masking|
# OpenSSL capability mask: bit 29 of CPUID(7).EBX (the SHA extensions) cleared; hashlib.sha256 then takes
# OpenSSL's software path, as on a CPU without SHA extensions.
SHA_MASK_ENV = {"OPENSSL_ia32cap": ":~0x20000000"}
MEMORY_TARGET = 1.2  # "flat": process-tree peak RSS at 10N <= this x at N

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Distillation needs clean audio and a teacher that rarely hallucinates.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday.",
    "A long time ago in a quiet village there lived an old clockmaker and his cat.",
    "Numbers like forty two and nineteen eighty four are read as words by the synthesiser.",
]
FORMATS = [  # (extension, rate, channels, subtype)
    ("wav", 16_000, 1, "PCM_16"),
    ("wav", 44_100, 2, "PCM_16"),
    ("flac", 22_050, 1, "PCM_16"),
    ("mp3", 22_050, 1, "MPEG_LAYER_III"),
]


# -- corpus ---------------------------------------------------------------------------------
def _speech_pool() -> tuple[list[np.ndarray], int]:
    espeak = shutil.which("espeak-ng")
    rate = 22_050
    pool = []
    for i, text in enumerate(SENTENCES):
        if espeak:
            wav = subprocess.run(
                [espeak, "-s", str(150 + 10 * i), "--stdout", text], check=True, capture_output=True
            )
            import io

            x, rate = sf.read(io.BytesIO(wav.stdout), dtype="float32")
        else:
            t = np.arange(int(3.5 * rate)) / rate
            f0 = 110 + 20 * i + 25 * np.sin(2 * np.pi * 0.6 * t)
            ph = 2 * np.pi * np.cumsum(f0) / rate
            x = (
                0.1 * sum(np.sin(k * ph) / k for k in range(1, 10)) * (1 + np.sin(2 * np.pi * 4 * t)) ** 2 / 4
            ).astype(np.float32)
        pool.append(x)
    return pool, rate


def make_corpus(root: Path, n: int) -> float:
    """Write ``n`` files below ``root`` (reused when already complete); return total audio seconds."""
    marker = root / f"_done_{n}.json"
    if marker.exists():
        return json.loads(marker.read_text())["audio_s"]
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    pool, rate = _speech_pool()
    rng = np.random.default_rng(n)
    total = 0.0
    for i in range(n):
        parts = [pool[j] for j in rng.integers(0, len(pool), size=int(rng.integers(1, 4)))]
        x = np.concatenate(parts) * np.float32(rng.uniform(0.3, 0.9))
        x = x + np.float32(1e-3) * rng.standard_normal(len(x)).astype(np.float32)  # every file distinct
        ext, out_rate, ch, subtype = FORMATS[i % len(FORMATS)]
        y = soxr.resample(x, rate, out_rate) if out_rate != rate else x
        if ch == 2:
            y = np.stack([y, 0.8 * y], axis=1)
        sf.write(root / f"clip_{i:06d}.{ext}", y, out_rate, subtype=subtype)
        total += len(x) / rate
    marker.write_text(json.dumps({"audio_s": total}))
    return total


# -- memory sampling ------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _tree(root_pid: int) -> dict[int, tuple[int, float]]:
    """``pid -> (rss_kb, cpu_s)`` of ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, cpu = int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK
            rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, ValueError, IndexError):
            continue
        info[int(entry)] = (rss, cpu)
        children.setdefault(ppid, []).append(int(entry))
    out, stack = {}, [root_pid]
    while stack:
        pid = stack.pop()
        if pid in info:
            out[pid] = info[pid]
        stack.extend(children.get(pid, []))
    return out


class TreeSampler(threading.Thread):
    """Samples the process tree every 20 ms: peak summed RSS and CPU seconds per process."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kb = 0
        self.cpu: dict[int, float] = {}
        self.rss: dict[int, int] = {}  # peak RSS per process
        self._stop_evt = threading.Event()

    def sample(self) -> None:
        tree = _tree(os.getpid())
        self.peak_kb = max(self.peak_kb, sum(rss for rss, _ in tree.values()))
        for pid, (rss, cpu) in tree.items():
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)
            self.rss[pid] = max(self.rss.get(pid, 0), rss)

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.sample()
            self._stop_evt.wait(0.02)

    def stop(self) -> tuple[int, float]:
        self._stop_evt.set()
        self.join()
        self.sample()
        return self.peak_kb, sum(self.cpu.values())


# -- measured workloads (run in a fresh subprocess each) -------------------------------------
def _bare_one(path: str) -> int:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    y = soxr.resample(mono, rate, 16_000, "HQ") if rate != 16_000 else mono
    return len(y)


def measure_interleaved(root: Path, passes: int = 2) -> dict:
    """One process, no pool: per file, the bare decode + resample and the clean stage's ``analyze_clip``
    back to back, CPU time of each summed. Other load on the machine then slows both sides alike, which
    makes this the steadier figure for comparing two settings (the pool runs carry pool start-up and
    scheduling noise)."""
    from asr_distill.stages.clean import CleanConfig, analyze_clip
    from asr_distill.storage import LocalStorage

    paths = sorted(p for p in root.iterdir() if p.suffix in (".wav", ".flac", ".mp3"))
    store, cfg = LocalStorage(root), CleanConfig()
    bare = clean = 0.0
    for _ in range(passes):
        for p in paths:
            t = time.process_time()
            _bare_one(str(p))
            t2 = time.process_time()
            analyze_clip({"partition": "b", "key": p.name, "size": 0, "extension": p.suffix[1:]}, store, cfg)
            t3 = time.process_time()
            bare, clean = bare + (t2 - t), clean + (t3 - t2)
    return {"kind": "interleaved", "files": len(paths), "bare_cpu_s": bare, "clean_cpu_s": clean}


def measure(kind: str, root: Path, workers: int, out: Path) -> dict:
    if kind == "interleaved":
        return measure_interleaved(root)
    paths = sorted(str(p) for p in root.iterdir() if p.suffix in (".wav", ".flac", ".mp3"))
    if kind != "bare":  # imported before the clock starts, like the bare loop's modules
        import asr_distill.stages.clean  # noqa: F401
        import asr_distill.storage  # noqa: F401
    sampler = TreeSampler()
    sampler.sample()
    cpu_before = sum(sampler.cpu.values())  # imports so far are not part of the work
    sampler.start()
    start = time.perf_counter()
    if kind == "bare":
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            samples = sum(pool.map(_bare_one, paths, chunksize=8))
        audio_s = samples / 16_000
        extra = {}
    else:
        from asr_distill.stages.clean import CleanConfig, clean_to_tables
        from asr_distill.storage import LocalStorage

        raw = LocalStorage(root)
        lake = LocalStorage(out)
        rows = (
            {"partition": "bench", "key": Path(p).name, "size": 0, "extension": Path(p).suffix[1:]}
            for p in paths
        )
        summary = clean_to_tables(
            rows,
            raw,
            lake,
            kept_key="clean/bench/kept.parquet",
            quarantine_key="clean/bench/quarantine.parquet",
            config=CleanConfig(),
            workers=workers,
            executor=kind.split("-", 1)[1],
        )
        audio_s = (summary.kept_hours + summary.quarantined_hours) * 3600
        extra = {"kept": summary.kept, "quarantined": summary.quarantined, "funnel": summary.funnel}
    seconds = time.perf_counter() - start
    tree_peak, cpu_total = sampler.stop()
    return {
        "kind": kind,
        "files": len(paths),
        "seconds": seconds,
        "audio_s": audio_s,
        "rtf": audio_s / seconds,
        "cpu_s": cpu_total - cpu_before,
        "cpu_rtf": audio_s / max(cpu_total - cpu_before, 1e-9),
        "files_per_s": len(paths) / seconds,
        "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tree_peak_rss_mb": tree_peak / 1024,
        "max_child_peak_rss_mb": max((v for k, v in sampler.rss.items() if k != os.getpid()), default=0)
        / 1024,
        **extra,
    }


# (label, file part, function) whose cumulative time in a cProfile of analyze_clip make up the breakdown
PROFILE_PARTS = [
    ("decode (libsndfile read)", "soundfile.py", "_cdata_io"),
    ("resample (soxr)", "soxr/__init__.py", "resample_chunk"),
    ("file reads + source_blake3 (HashingReader.readinto)", "hashing.py", "readinto"),
    ("source_blake3 of bytes the decoder skipped (finish)", "hashing.py", "finish"),
    ("pcm_blake3 + level/silence metrics (add_mono)", "metrics.py", "add_mono"),
    ("clipping/peak metrics (add_source)", "metrics.py", "add_source"),
    ("NaN/Inf check + peak (_sanitize)", "decode.py", "_sanitize"),
    ("downmix", "decode.py", "_downmix"),
]


def profile_clean(root: Path) -> None:
    """Where the clean stage's time goes: cProfile of ``analyze_clip`` over the corpus, in this process."""
    import cProfile
    import io as _io
    import pstats

    from asr_distill.stages.clean import CleanConfig, analyze_clip
    from asr_distill.storage import LocalStorage

    store, cfg = LocalStorage(root), CleanConfig()
    rows = [
        {"partition": "bench", "key": p.name, "size": 0, "extension": p.suffix[1:]}
        for p in sorted(root.iterdir())
        if p.suffix in (".wav", ".flac", ".mp3")
    ]
    prof = cProfile.Profile()
    cpu = time.process_time()
    prof.enable()
    for row in rows:
        analyze_clip(row, store, cfg)
    prof.disable()
    cpu = time.process_time() - cpu
    stats = pstats.Stats(prof, stream=_io.StringIO()).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())
    print(
        f"cProfile of analyze_clip over {len(rows)} files, one process ({cpu:.2f} CPU s incl. the profiler):"
    )
    for label, file_part, func in PROFILE_PARTS:
        cum = sum(
            ct for (f, _, fn), (_, _, _, ct, _) in stats.items() if fn == func and f.endswith(file_part)
        )
        print(f"  {label:<52} {cum:7.3f} s  {100 * cum / total:5.1f}%")
    b3 = sum(tt for (f, _, fn), (_, _, tt, _, _) in stats.items() if "update" in fn and "blake3" in fn)
    print(f"  {'of which BLAKE3 compression (both hashes)':<52} {b3:7.3f} s  {100 * b3 / total:5.1f}%")
    speeds = hash_speeds()
    print(f"  on this machine, MiB per CPU second: {speeds}")


_SPEED_CODE = """
import hashlib, json, os, time
from blake3 import blake3
data = os.urandom(64 << 20)
out = {}
for name, fn in (("sha256", lambda: hashlib.sha256(data).digest()), ("blake3", lambda: blake3(data).digest())):
    t = time.process_time(); fn(); out[name] = round(64 / max(time.process_time() - t, 1e-9))
print(json.dumps(out))
"""


def hash_speeds() -> dict[str, dict[str, int]]:
    """MiB per CPU second of sha256 (OpenSSL) and BLAKE3 on one core, in fresh processes, as the machine
    is and with the SHA extensions masked (the mask is an environment variable OpenSSL reads at start)."""
    out = {}
    for setting, extra in (("as is", {}), ("SHA masked", SHA_MASK_ENV)):
        res = subprocess.run(
            [sys.executable, "-c", _SPEED_CODE],
            env={**os.environ, **extra},
            check=True,
            capture_output=True,
            text=True,
        )
        out[setting] = json.loads(res.stdout)
    return out


def _run_sub(kind: str, root: Path, workers: int, out: Path, masked: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--measure", kind, "--root", str(root), "--workers", str(workers)]
    cmd += ["--lake", str(out)]
    env = {**os.environ, **(SHA_MASK_ENV if masked else {})}
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="files in the small run (the large run has 10x)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--root", type=Path, default=REPO / "bench" / "out" / "clean")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs per measurement (best is kept)")
    ap.add_argument(
        "--profile", action="store_true", help="print where analyze_clip spends its time and exit"
    )
    ap.add_argument(
        "--quick", action="store_true", help="small run for `make bench`: N=60, 2 repeats, no thread executor"
    )
    ap.add_argument(
        "--sha-ext",
        choices=("on", "off", "both"),
        default="on",
        help="OpenSSL's SHA extensions in the measured processes: as the machine has them (on), masked "
        "(off), or both settings in one run (both: reports the difference, target <= 0.05)",
    )
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.root, args.workers, args.lake)))
        return
    if args.profile:
        root = args.root / f"raw_{args.n}"
        make_corpus(root, args.n)
        profile_clean(root)
        return

    from _result import machine, row, write_result

    machine_start = machine()
    kinds = ["bare", "clean-process", "clean-thread"]
    if args.quick:
        args.n, args.repeat, kinds = 60, 2, ["bare", "clean-process"]
    settings = {"on": [False], "off": [True], "both": [False, True]}[args.sha_ext]
    label = {False: "as is", True: "SHA masked"}
    speeds = hash_speeds()
    print(
        f"CPU: {machine_start['cpu_model']}, SHA extensions (sha_ni): {'yes' if machine_start['sha_ni'] else 'no'};"
        f" code: {REPO}"
    )
    print(f"hash speeds, MiB per CPU second on one core (fresh processes): {speeds}")
    results: list[dict] = []
    for n in (args.n, 10 * args.n):
        root = args.root / f"raw_{n}"
        t0 = time.perf_counter()
        audio = make_corpus(root, n)
        print(
            f"corpus: {n} files, {audio / 3600:.2f} h of audio ({time.perf_counter() - t0:.1f} s to prepare)"
        )
        best: dict[tuple[bool, str], dict] = {}
        for _ in range(args.repeat):  # interleaved, best of: robust against other load on the machine
            for masked in settings:
                for kind in kinds:
                    r = _run_sub(kind, root, args.workers, args.root / f"lake_{n}_{kind}", masked)
                    if (masked, kind) not in best or r["seconds"] < best[(masked, kind)]["seconds"]:
                        best[(masked, kind)] = r
        for masked in settings:
            for kind in kinds:
                b = best[(masked, kind)]
                b["n"], b["sha_masked"] = n, masked
                results.append(b)
                print(
                    f"  {label[masked]:10s} {kind:14s} {b['files']:6d} files {b['seconds']:7.2f} s"
                    f"  {b['rtf']:6.0f}x real time  CPU {b['cpu_s']:7.2f} s ({b['cpu_rtf']:5.0f}x per CPU-s)"
                    f"  {b['files_per_s']:7.1f} files/s  parent peak RSS {b['self_peak_rss_mb']:6.0f} MB"
                    f"  tree peak RSS {b['tree_peak_rss_mb']:6.0f} MB (largest worker {b['max_child_peak_rss_mb']:4.0f} MB)"
                )
    by = {(r["n"], r["sha_masked"], r["kind"]): r for r in results}
    # One process, bare and clean per file back to back, alternating the two settings: the steadier figure.
    inter: dict[bool, list[float]] = {m: [0.0, 0.0] for m in settings}
    for _ in range(args.repeat):
        for masked in settings:
            r = _run_sub("interleaved", args.root / f"raw_{10 * args.n}", 1, args.root / "unused", masked)
            inter[masked][0] += r["bare_cpu_s"]
            inter[masked][1] += r["clean_cpu_s"]
    inter_ratio = {m: b / c for m, (b, c) in inter.items()}
    for masked in settings:
        print(
            f"  {label[masked]:10s} one process, interleaved per file, N={10 * args.n}: bare {inter[masked][0]:.2f}"
            f" CPU s, clean {inter[masked][1]:.2f} CPU s: clean/bare per CPU-second {inter_ratio[masked]:.3f}"
        )

    def ratio(n: int, masked: bool, kind: str = "clean-process", per_cpu: bool = False) -> float:
        key = "cpu_rtf" if per_cpu else "rtf"
        return by[(n, masked, kind)][key] / by[(n, masked, "bare")][key]

    print(f"\nworkers: {args.workers}")
    for masked in settings:
        for n in (args.n, 10 * args.n):
            print(
                f"{label[masked]:10s} N={n:6d}: clean/bare throughput ratio {ratio(n, masked):.2f} "
                f"(target >= {TARGET}); per CPU-second {ratio(n, masked, per_cpu=True):.2f}"
            )
    if len(settings) == 2:
        for n in (args.n, 10 * args.n):
            d, dc = (
                ratio(n, True) - ratio(n, False),
                ratio(n, True, per_cpu=True) - ratio(n, False, per_cpu=True),
            )
            print(
                f"N={n:6d}: SHA masked - as is: {d:+.3f} (per CPU-second {dc:+.3f}; target within {SHA_EXT_TARGET})"
            )
    for masked in settings:
        for n in (args.n, 10 * args.n) if "clean-thread" in kinds else ():
            thread_ratio = by[(n, masked, "clean-thread")]["rtf"] / by[(n, masked, "clean-process")]["rtf"]
            print(
                f"{label[masked]:10s} N={n:6d}: thread executor / process executor throughput {thread_ratio:.2f}"
            )
    main_setting = settings[0]
    small, large = (
        by[(args.n, main_setting, "clean-process")],
        by[(10 * args.n, main_setting, "clean-process")],
    )
    print(
        f"peak RSS, clean: parent {small['self_peak_rss_mb']:.0f} -> {large['self_peak_rss_mb']:.0f} MB, "
        f"process tree {small['tree_peak_rss_mb']:.0f} -> {large['tree_peak_rss_mb']:.0f} MB "
        f"for {args.n} -> {10 * args.n} files (target: flat)"
    )
    print(f"funnel of the large run: { {k: v for k, v in large['funnel'].items() if v} }")
    out = args.root / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    big_n = 10 * args.n
    mem_ratio = large["tree_peak_rss_mb"] / small["tree_peak_rss_mb"]
    cpu_note = f"{machine_start['cpu_model']}, sha_ni {'yes' if machine_start['sha_ni'] else 'no'}"
    rows = [
        row(
            f"clean / bare decode+resample ({label[masked]})",
            ratio(big_n, masked),
            f">= {TARGET}",
            ratio(big_n, masked) >= TARGET,
            f"N={big_n}, {args.workers} workers, best of {args.repeat}; per CPU second "
            f"{ratio(big_n, masked, per_cpu=True):.2f}; N={args.n}: {ratio(args.n, masked):.2f}; {cpu_note}",
        )
        for masked in settings
    ]
    rows += [
        row(
            f"clean/bare per CPU-s, one process interleaved ({label[masked]})",
            inter_ratio[masked],
            "report",
            None,
            f"N={big_n}, {args.repeat} passes; {cpu_note}",
        )
        for masked in settings
    ]
    if len(settings) == 2:
        diff = inter_ratio[True] - inter_ratio[False]
        rows.append(
            row(
                "clean/bare: SHA extensions masked - as is",
                diff,
                f"within +-{SHA_EXT_TARGET}",
                abs(diff) <= SHA_EXT_TARGET,
                f"per CPU-second, one process interleaved, N={big_n} (pool throughput ratios: "
                f"{ratio(big_n, True) - ratio(big_n, False):+.3f}); sha256 {speeds['as is']['sha256']} -> "
                f"{speeds['SHA masked']['sha256']} MiB/s, BLAKE3 {speeds['as is']['blake3']} -> "
                f"{speeds['SHA masked']['blake3']} MiB/s; {cpu_note}",
            )
        )
    rows += [
        row(
            "clean peak RSS 10N / N (process tree)",
            mem_ratio,
            f"<= {MEMORY_TARGET}",
            mem_ratio <= MEMORY_TARGET,
            f"parent {small['self_peak_rss_mb']:.0f} -> {large['self_peak_rss_mb']:.0f} MB, tree "
            f"{small['tree_peak_rss_mb']:.0f} -> {large['tree_peak_rss_mb']:.0f} MB",
        ),
        row(
            "clean CPU core-s per audio hour",
            3600 * large["cpu_s"] / large["audio_s"],
            "report",
            None,
            f"process tree CPU over {large['files']} files, {large['audio_s'] / large['files']:.1f} s clips; "
            f"bare loop {3600 * by[(big_n, main_setting, 'bare')]['cpu_s'] / by[(big_n, main_setting, 'bare')]['audio_s']:.1f}",
        ),
    ]
    write_result(
        "clean",
        rows,
        quick=args.quick,
        machine_start=machine_start,
        extra={
            "detail_file": str(out),
            "results": results,
            "hash_speeds": speeds,
            "sha_ext": args.sha_ext,
            "interleaved_cpu_s": {label[m]: v for m, v in inter.items()},
        },
    )


if __name__ == "__main__":
    main()
