"""Speed and memory benchmark of the index stage (``build_index``); a script, not a test.

    .venv/bin/python bench/bench_index.py [--files N] [--repeat R] [--mix realistic|wav] [--strict]

Targets (from the issue):

* throughput: ``build_index`` indexes >= 0.5x the files/s of a bare single-thread ``soundfile.info``
  loop over the same files (interleaved in one run, R repeats, median of the per-repeat ratios);
* memory: peak RSS of ``build_index`` on 10N files <= 1.2x its peak RSS on N files (fresh processes),
  for the driver and for the driver plus its probe processes (the forkserver and the pool workers;
  measured on runs with ``executor="process"`` so that the same processes exist at both sizes).

A corpus is generated into a temporary directory with numpy + soundfile (``realistic``: WAV 16k mono,
some WAV 44.1k stereo, FLAC, MP3, Ogg/Opus, a few truncated WAVs; ``wav``: WAV 16k mono only), with
``.txt``/``.json`` sidecars and one stray file per folder; the 10N corpus is hard links of the N files
under new names. Everything sits in the page cache: this measures CPU cost per file, not the disk.

Also reported: the bare loop on a thread pool of the index's worker count, ``build_index`` per
executor (``inline``: probes in the calling thread; ``process:1/2/cores``; ``thread``), a per-file
cost budget from the stages measured one by one, single-thread cost per format, and a cProfile of an
inline run. The machine's load average is recorded at the start and the end: on a shared machine the
process pool cannot run faster than the cores left free by others.
The result is printed and written to ``bench/out/bench_index_<mix>_N<N>.json``. Exits 0 even when a
target fails (it is a report), unless ``--strict``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

THROUGHPUT_TARGET = 0.5  # index files/s >= this x bare single-thread sf.info files/s
MEMORY_TARGET = 1.2  # peak RSS(10N) <= this x peak RSS(N)
SMALL, BIG = "bench_n", "bench_10n"
FILES_PER_DIR = 100

# name -> (share, soundfile format, subtype, rate, channels, extension)
MIXES: dict[str, dict[str, tuple[float, str, str, int, int, str]]] = {
    "realistic": {
        "wav16k": (0.60, "WAV", "PCM_16", 16000, 1, "wav"),
        "wav44k_stereo": (0.05, "WAV", "PCM_16", 44100, 2, "wav"),
        "flac16k": (0.15, "FLAC", "PCM_16", 16000, 1, "flac"),
        "mp3_16k": (0.12, "MP3", "MPEG_LAYER_III", 16000, 1, "mp3"),
        "opus16k": (0.05, "OGG", "OPUS", 16000, 1, "opus"),
        "wav16k_truncated": (0.03, "WAV", "PCM_16", 16000, 1, "wav"),
    },
    "wav": {"wav16k": (1.0, "WAV", "PCM_16", 16000, 1, "wav")},
}
TXT_SHARE, JSON_SHARE = 0.35, 0.10


# -- corpus ------------------------------------------------------------------------------------


@dataclass
class Corpus:
    root: Path
    prefix: str
    audio: list[str] = field(default_factory=list)  # keys, sorted
    formats: dict[str, str] = field(default_factory=dict)  # key -> format name
    sidecars: int = 0
    other: int = 0
    bytes: int = 0

    def paths(self) -> list[str]:
        return [str(self.root / k) for k in self.audio]


def _clip(rng: random.Random, rate: int, channels: int) -> Any:
    import numpy as np

    n = int(rng.uniform(0.5, 3.0) * rate)
    t = np.arange(n, dtype=np.float32) / rate
    noise = np.random.default_rng(rng.randrange(2**32)).standard_normal(n).astype(np.float32)
    sig = sum(0.1 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) for _ in range(3)) + 0.02 * noise
    sig = sig * np.minimum(1.0, np.minimum(t, t[::-1]) * 20)  # short fades
    return np.repeat(sig[:, None], channels, axis=1) if channels > 1 else sig


def make_corpus(root: Path, prefix: str, n: int, mix: str, seed: int = 0) -> Corpus:
    """``n`` audio files (with sidecars and one stray file per folder) under ``root/prefix``."""
    import soundfile as sf

    rng = random.Random(seed)
    corpus = Corpus(root, prefix)
    formats = MIXES[mix]
    names, weights = list(formats), [f[0] for f in formats.values()]
    for i in range(n):
        d = root / prefix / f"spk_{i // FILES_PER_DIR:04d}"
        if i % FILES_PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
            (d / "notes.md").write_text("recording session notes\n")
            corpus.other += 1
        name = rng.choices(names, weights)[0]
        _, fmt, subtype, rate, channels, ext = formats[name]
        stem = d / f"utt_{i:07d}"
        path = stem.with_suffix(f".{ext}")
        sf.write(path, _clip(rng, rate, channels), rate, format=fmt, subtype=subtype)
        if name.endswith("_truncated"):  # header claims more than the data holds
            os.truncate(path, int(path.stat().st_size * 0.6))
        key = path.relative_to(root).as_posix()
        corpus.audio.append(key)
        corpus.formats[key] = name
        text = f"utterance {i} of speaker {i // FILES_PER_DIR} says something"
        r = rng.random()
        if r < TXT_SHARE:
            stem.with_suffix(".txt").write_text(text + "\n")
            corpus.sidecars += 1
        elif r < TXT_SHARE + JSON_SHARE:
            doc = {"text": text, "language": "en", "speaker": f"spk_{i // FILES_PER_DIR:04d}"}
            stem.with_suffix(".json").write_text(json.dumps(doc))
            corpus.sidecars += 1
    corpus.audio.sort()
    corpus.bytes = sum((root / k).stat().st_size for k in corpus.audio)
    return corpus


def scale_corpus(src: Corpus, prefix: str, factor: int) -> Corpus:
    """``factor`` hard-linked copies of ``src`` (every object, sidecars included) under new names."""
    out = Corpus(src.root, prefix, sidecars=src.sidecars * factor, other=src.other * factor)
    src_dir = src.root / src.prefix
    for c in range(factor):
        for dirpath, _, files in os.walk(src_dir):
            rel = Path(dirpath).relative_to(src_dir)
            dst_dir = src.root / prefix / f"c{c:02d}_{rel.as_posix()}" if rel.parts else src.root / prefix
            dst_dir.mkdir(parents=True, exist_ok=True)
            for name in files:
                try:
                    os.link(Path(dirpath) / name, dst_dir / name)
                except OSError:
                    shutil.copyfile(Path(dirpath) / name, dst_dir / name)
    for key in src.audio:
        rel = key[len(src.prefix) + 1 :]
        for c in range(factor):
            new = f"{prefix}/c{c:02d}_{rel}"
            out.audio.append(new)
            out.formats[new] = src.formats[key]
    out.audio.sort()
    out.bytes = src.bytes * factor
    return out


# -- timed runs --------------------------------------------------------------------------------


def bare_single(paths: list[str]) -> float:
    import soundfile as sf

    t = time.perf_counter()
    for path in paths:
        sf.info(path)
    return time.perf_counter() - t


def bare_pool(paths: list[str], workers: int) -> float:
    import soundfile as sf

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(sf.info, paths):
            pass
    return time.perf_counter() - t


def run_index(raw_root: Path, lake_root: Path, prefix: str, options: Any = None) -> tuple[float, Any]:
    from asr_distill.stages.index.build import build_index
    from asr_distill.storage import LocalStorage

    raw, lake = LocalStorage(raw_root), LocalStorage(lake_root)
    t = time.perf_counter()
    summary = build_index(raw, lake, prefix, f"{prefix}/", f"index/{prefix}.parquet", options, force=True)
    return time.perf_counter() - t, summary


def check_index(corpus: Corpus, lake_root: Path, summary: Any) -> list[str]:
    """The index really did the work: one row per audio file, WAV durations agree with soundfile."""
    import pyarrow.parquet as pq
    import soundfile as sf

    problems = []
    table = pq.read_table(lake_root / "index" / f"{corpus.prefix}.parquet")
    if sorted(table.column("key").to_pylist()) != corpus.audio:
        problems.append(
            f"index keys differ from the corpus ({table.num_rows} rows, {len(corpus.audio)} files)"
        )
    if summary.rows != len(corpus.audio) or summary.ok_rows != len(corpus.audio):
        problems.append(f"rows={summary.rows} ok_rows={summary.ok_rows}, expected {len(corpus.audio)}")
    base = corpus.root / corpus.prefix
    with_text = sum(1 for _ in base.rglob("*.txt")) + sum(1 for _ in base.rglob("*.json"))
    if summary.with_text != with_text:
        problems.append(f"{summary.with_text} rows with text, expected {with_text}")
    bad = 0
    for row in table.select(["key", "duration_s"]).to_pylist():
        if corpus.formats[row["key"]].startswith("wav"):
            bad += abs(sf.info(str(corpus.root / row["key"])).duration - row["duration_s"]) > 1e-6
    if bad:
        problems.append(f"{bad} WAV durations differ from soundfile.info")
    truncated = sum(1 for k in corpus.audio if corpus.formats[k].endswith("_truncated"))
    if summary.truncated != truncated:
        problems.append(f"{summary.truncated} rows flagged truncated, expected {truncated}")
    return problems


@contextlib.contextmanager
def stderr_lines(sink: list[str]) -> Iterator[None]:
    """Capture what C libraries write to fd 2 (libmpg123 warnings) into ``sink``, one item per line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.extend(tmp.read().decode("utf-8", "replace").splitlines())


def _mpg123_noise(lines: list[str]) -> int:
    return sum(1 for ln in lines if "libmpg123" in ln or "Xing stream size" in ln)


def _reemit(lines: list[str]) -> None:
    """Pass on captured stderr lines that are not the known decoder noise."""
    for ln in lines:
        if "libmpg123" not in ln and "Xing stream size" not in ln:
            print(ln, file=sys.stderr)


# -- breakdown ---------------------------------------------------------------------------------


def stage_costs(corpus: Corpus, workers: int, repeat: int) -> dict[str, float]:
    """Median microseconds per audio file of each stage of build_index, run one at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    from asr_distill.stages.index.build import (
        IndexOptions,
        IndexSummary,
        group_listing,
        iter_index_rows,
        listing_fingerprint,
        read_sidecars,
    )
    from asr_distill.stages.index.build import probe_object as probe_obj
    from asr_distill.stages.index.probe import probe_audio
    from asr_distill.stages.index.schema import AUDIO_INDEX_SCHEMA
    from asr_distill.storage import LocalStorage

    raw = LocalStorage(corpus.root)
    prefix = f"{corpus.prefix}/"
    listed = {o.key: o for o in raw.iter_objects(prefix)}
    objs = [listed[k] for k in corpus.audio]
    paths = corpus.paths()
    n = len(paths)
    opts = IndexOptions(workers=workers)
    serial_opts = IndexOptions(executor="inline")
    with_sidecars = [g for g in group_listing(raw.iter_objects(prefix)) if g.audio and (g.txt or g.json)]
    runs: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        runs.setdefault(name, []).append(time.perf_counter() - t)
        return out

    with tempfile.TemporaryDirectory(prefix="bench_index_w_") as tmp:
        for _ in range(repeat):
            timed("serial_index", lambda: run_index(corpus.root, Path(tmp), corpus.prefix, serial_opts))
            timed("sf_info", lambda: [sf.info(p) for p in paths])
            timed("listing", lambda: sum(1 for _ in raw.iter_objects(prefix)))
            timed("fingerprint", lambda: listing_fingerprint(raw, prefix))
            timed("local_path", lambda: [raw.local_path(o.key) for o in objs])
            timed(
                "probe_audio", lambda: [probe_audio(p, size=o.size) for p, o in zip(paths, objs, strict=True)]
            )
            timed("probe_object", lambda: [probe_obj(raw, o) for o in objs])
            timed("sidecars", lambda: [read_sidecars(raw, g) for g in with_sidecars])
            rows = timed(
                "rows_pool", lambda: list(iter_index_rows(raw, corpus.prefix, prefix, opts, IndexSummary()))
            )

            def write(rows: list[dict[str, Any]] = rows) -> None:
                with pq.ParquetWriter(
                    os.path.join(tmp, "x.parquet"), AUDIO_INDEX_SCHEMA, compression="zstd"
                ) as w:
                    for i in range(0, len(rows), opts.batch_rows):
                        w.write_table(
                            pa.Table.from_pylist(rows[i : i + opts.batch_rows], schema=AUDIO_INDEX_SCHEMA)
                        )

            timed("parquet", write)
    return {k: round(1e6 * statistics.median(v) / n, 1) for k, v in runs.items()}


def per_format_cost(corpus: Corpus, repeat: int) -> dict[str, dict[str, float]]:
    """Single-thread microseconds per file by format: sf.info vs probe_audio (path) vs probe_object."""
    import soundfile as sf

    from asr_distill.stages.index.build import probe_object
    from asr_distill.stages.index.probe import probe_audio
    from asr_distill.storage import LocalStorage, ObjectInfo

    store = LocalStorage(corpus.root)
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(corpus.formats.values())):
        keys = [k for k in corpus.audio if corpus.formats[k] == name][:200]
        paths = [str(corpus.root / k) for k in keys]
        objs = [ObjectInfo(k, (corpus.root / k).stat().st_size) for k in keys]
        runs: dict[str, list[float]] = {"sf_info": [], "probe_audio": [], "probe_object": []}
        for _ in range(repeat):
            t = time.perf_counter()
            for p in paths:
                sf.info(p)
            runs["sf_info"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for p, o in zip(paths, objs, strict=True):
                probe_audio(p, size=o.size)
            runs["probe_audio"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for o in objs:
                probe_object(store, o)
            runs["probe_object"].append(time.perf_counter() - t)
        row: dict[str, float] = {k: round(1e6 * statistics.median(v) / len(keys), 1) for k, v in runs.items()}
        row["files"] = len(keys)
        out[name] = row
    return out


# Functions whose cumulative time in a serial cProfile of build_index make up the breakdown.
PROFILE_PARTS = [
    ("listing pass 1 (listing_fingerprint)", "build.py", "listing_fingerprint"),
    ("listing pass 2 (group_listing)", "build.py", "group_listing"),
    ("probe_object", "build.py", "probe_object"),
    ("  LocalStorage._path (2x realpath)", "local.py", "_path"),
    ("  probe_audio", "probe.py", "probe_audio"),
    ("    open + read the head (os.open/os.read)", "probe.py", "<head read>"),
    ("    SoundFile open", "soundfile.py", "__init__"),
    ("    SoundFile.seek (tail, compressed)", "soundfile.py", "seek"),
    ("    SoundFile.read (tail, compressed)", "soundfile.py", "read"),
    ("read_sidecars (incl. its _path)", "build.py", "read_sidecars"),
    ("make_row", "build.py", "make_row"),
    ("IndexSummary.add", "build.py", "add"),
    ("ParquetWriter.write_table", "parquet/core.py", "write_table"),
    ("build_index own time (Table.from_pylist)", "build.py", "<own:build_index>"),
]


def profile_serial(raw_root: Path, lake_root: Path, prefix: str, n_audio: int) -> dict[str, Any]:
    """cProfile of one serial build_index: cumulative seconds and share of the total per part."""
    from asr_distill.stages.index.build import IndexOptions

    prof = cProfile.Profile()
    prof.enable()
    total, _ = run_index(raw_root, lake_root, prefix, IndexOptions(executor="inline"))
    prof.disable()
    raw_stats: dict[Any, Any] = pstats.Stats(prof, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    parts = []
    for label, file_part, func in PROFILE_PARTS:
        cum = 0.0
        calls = 0
        for (fname, _, fn), (cc, _, tt, ct, callers) in raw_stats.items():
            if func == "<head read>":  # os.open/os.read/os.fstat called from probe_audio and _read_upto
                if fname == "~" and fn in (
                    "<built-in method posix.open>",
                    "<built-in method posix.read>",
                    "<built-in method posix.fstat>",
                    "<built-in method posix.close>",
                ):
                    for (cfile, _, cfn), (ccc, _, _, cct) in callers.items():
                        if cfile.endswith("probe.py") and cfn in ("probe_audio", "_read_upto"):
                            cum += cct
                            calls = max(calls, ccc)
            elif func.startswith("<own:"):
                if fn == func[5:-1] and fname.endswith(file_part):
                    cum, calls = cum + tt, calls + cc
            elif fn == func and fname.endswith(file_part):
                cum, calls = cum + ct, calls + cc
        parts.append(
            {
                "part": label,
                "cum_s": round(cum, 4),
                "share": round(cum / total, 3),
                "calls": calls,
                "us_per_file": round(1e6 * cum / max(n_audio, 1), 1),
            }
        )
    top = io.StringIO()
    pstats.Stats(prof, stream=top).sort_stats("tottime").print_stats(15)
    lines = top.getvalue().splitlines()
    head = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return {
        "profiled_total_s": round(total, 4),
        "parts": parts,
        "top_tottime": [ln.rstrip() for ln in lines[head:] if ln.strip()],
    }


# -- memory: fresh child processes -------------------------------------------------------------
# On Linux a process's ru_maxrss carries over the high-water mark of the process that exec'd it, so
# children are started by a small launcher process begun before this one grew (otherwise every child
# would report at least this process's own peak). VmHWM (per address space) is read as a cross-check.


def _peaks_mib() -> dict[str, float]:
    out = {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vmhwm_mib"] = int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


def child_main(mode: str, raw_root: str, lake_root: str, prefix: str) -> None:
    # The import set of the index stage.
    import pyarrow  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import soundfile  # noqa: F401

    import asr_distill.stages.index.build  # noqa: F401
    import asr_distill.storage  # noqa: F401

    out: dict[str, Any] = {"mode": mode, "pandas_loaded_before": "pandas" in sys.modules}
    if mode == "baseline_pandas":  # pyarrow imports pandas on its first Python-object conversion
        pyarrow.array([1.0])
    if mode in ("index", "index_process"):
        # The probe processes are sampled from /proc (bench_clean's sampler; it also imports soxr, ~1 MiB).
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_clean import TreeSampler

        from asr_distill.stages.index.build import IndexOptions

        options = IndexOptions(executor="process") if mode == "index_process" else None
        sampler = TreeSampler()
        sampler.start()
        elapsed, summary = run_index(Path(raw_root), Path(lake_root), prefix, options)
        tree_kib, _ = sampler.stop()
        out.update(elapsed_s=round(elapsed, 3), rows=summary.rows, ok_rows=summary.ok_rows)
        out["tree_peak_mib"] = round(tree_kib / 1024, 1)  # peak of the summed RSS of the process tree
        pool_kib = sum(v for pid, v in sampler.rss.items() if pid != os.getpid())  # sum of per-process peaks
        out["pool_peak_mib"] = round(pool_kib / 1024, 1)
        out["pool_processes"] = sum(1 for pid in sampler.rss if pid != os.getpid())
    out["pandas_loaded_after"] = "pandas" in sys.modules
    out.update(_peaks_mib())
    print(json.dumps(out))


def launcher_main() -> None:
    """Run each JSON command line read from stdin; answer with one JSON line per command."""
    for line in sys.stdin:
        cmd = json.loads(line)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(
            json.dumps({"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr[-5000:]}),
            flush=True,
        )


class Launcher:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_launcher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, mode: str, raw_root: Path, lake_root: Path, prefix: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_child",
            mode,
            str(raw_root),
            str(lake_root),
            prefix,
        ]
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        res = json.loads(self.proc.stdout.readline())
        if res["rc"] != 0:
            raise RuntimeError(f"child {mode} {prefix} failed ({res['rc']}):\n{res['stderr']}")
        out: dict[str, Any] = json.loads(res["stdout"].strip().splitlines()[-1])
        out["decoder_noise_lines"] = _mpg123_noise(res["stderr"].splitlines())
        return out

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- reporting ---------------------------------------------------------------------------------


def spread(values: list[float], nd: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), nd),
        "min": round(min(values), nd),
        "max": round(max(values), nd),
    }


def fmt_spread(s: dict[str, float]) -> str:
    return f"{s['median']:>10,}  [{s['min']:,} .. {s['max']:,}]"


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def print_report(doc: dict[str, Any]) -> None:
    p, tp, m = doc["params"], doc["throughput"], doc["memory"]
    fs, w = tp["files_per_s"], p["index_workers"]
    print(
        f"\nthroughput over {tp['files']} audio files, {p['repeat']} interleaved repeats (median [min .. max]):"
    )
    print(f"  bare sf.info loop, 1 thread          {fmt_spread(fs['bare_single'])} files/s")
    print(f"  bare sf.info, pool of {w:<2} threads     {fmt_spread(fs['bare_pool'])} files/s")
    print(f"  build_index (default, force=True)    {fmt_spread(fs['index'])} files/s")
    print(f"  ratio index / bare 1 thread          {fmt_spread(tp['ratio_index_vs_bare_single'])}")
    print(f"  ratio index / bare pool              {fmt_spread(tp['ratio_index_vs_bare_pool'])}")
    sweep = "  ".join(f"{k}: {v['median']:,.0f}" for k, v in tp["index_by_workers"].items())
    print(f"  build_index files/s by workers       {sweep}")
    print(f"  libmpg123 lines on stderr: {tp['decoder_noise_lines']}")
    bd = doc.get("breakdown")
    if bd:
        b = bd["budget_us_per_file"]
        print("\nper-file budget, single thread, stages timed one by one (median us/file):")
        for k, v in b.items():
            print(f"  {k:<52} {v:>8}")
        print("single-thread us/file by format:            sf.info  probe_audio  probe_object")
        for name, row in bd["per_format_us_per_file"].items():
            print(
                f"  {name:<18} ({row['files']:>3} files)      {row['sf_info']:>8} {row['probe_audio']:>12} "
                f"{row['probe_object']:>13}"
            )
        prof = bd["serial_cprofile"]
        print(
            f"serial build_index under cProfile ({prof['profiled_total_s']} s incl. profiler overhead, cumulative):"
        )
        for part in prof["parts"]:
            print(
                f"  {part['part']:<44} {part['cum_s']:>7.3f} s {100 * part['share']:5.1f}%  {part['us_per_file']:>7} us/file"
            )
    rss = m["peak_rss_mib"]
    print(
        f"\npeak RSS, MiB (fresh process each, {p['mem_repeat']} runs each; VmHWM agrees within {m['vmhwm_max_diff_mib']} MiB):"
    )
    print(
        f"  imports only {rss['baseline']}   imports + pandas (pulled in by pyarrow) {rss['baseline_pandas']}"
    )
    print(f"  build_index N={m['files']['n']}: {rss['n']}   10N={m['files']['10n']}: {rss['10n']}")
    print(
        f"  ratio 10N/N {m['ratio_10n_vs_n']}   (growth above imports+pandas: {m['growth_above_baseline_mib']} MiB)"
    )
    print(
        f"  with executor='process' (pool at both sizes): probe processes (forkserver + workers, summed "
        f"RSS, shared pages counted per process; {m['pool_processes']} processes seen): N "
        f"{m['pool_peak_mib']['n']}, 10N {m['pool_peak_mib']['10n']}; driver + probe processes, sum of "
        f"peaks: ratio 10N/N {m['tree_ratio_10n_vs_n']} (peak of the summed tree: N {m['tree_peak_mib']['n']}, "
        f"10N {m['tree_peak_mib']['10n']})"
    )
    d = m["default_executor_runs"]
    print(
        f"  default executor: probe processes seen {d['pool_processes']}, summed peaks N "
        f"{d['pool_peak_mib']['n']}, 10N {d['pool_peak_mib']['10n']} (at N the workers mostly end before "
        f"the sampler sees them: not comparable, {d['tree_ratio_10n_vs_n_not_like_for_like']})"
    )
    print(
        f"  build_index files/s at 10N in this process: {m['warm_files_per_s_10n']:,.0f} "
        f"(N: {fs['index']['median']:,.0f}); cold child processes (incl. one-off imports): "
        f"N {m['cold_child_files_per_s']['n']}, 10N {m['cold_child_files_per_s']['10n']}"
    )
    print(f"  load average start {doc['machine']['loadavg_start']} end {doc['machine']['loadavg_end']}")


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="N audio files (the memory run also uses 10N)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repeats of the throughput runs")
    ap.add_argument("--mix", choices=sorted(MIXES), default="realistic", help="format mix of the corpus")
    ap.add_argument("--scale", type=int, default=10, help="size factor of the large corpus (memory target)")
    ap.add_argument("--mem-repeat", type=int, default=2, help="child processes per corpus size")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where to generate the corpus (default: temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated corpus")
    ap.add_argument("--no-profile", action="store_true", help="skip the breakdown and the cProfile")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small run for `make bench`: 2,000 files (at 600 the pool start and one-off costs are most of a "
        "0.1 s run), 3 repeats, no breakdown, "
        "one memory run per size",
    )
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_launcher", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        child_main(*args._child)
        return 0
    if args._launcher:
        launcher_main()
        return 0
    if args.quick:
        args.files, args.repeat, args.mem_repeat, args.no_profile = 2000, 3, 1, True
    from _result import machine, row, write_result

    machine_start = machine()

    launcher = Launcher()  # before this process loads numpy/pyarrow (see the memory section)
    import pyarrow
    import soundfile as sf

    from asr_distill.stages._procpool import default_workers
    from asr_distill.stages.index.build import IndexOptions

    workers = default_workers()  # probe processes build_index starts for a local store
    base = Path(tempfile.mkdtemp(prefix="bench_index_", dir=args.workdir))
    raw_root, lake_root = base / "raw", base / "lake"
    doc: dict[str, Any] = {
        "benchmark": "index",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__,
            "pyarrow": pyarrow.__version__,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "params": {
            "files": args.files,
            "repeat": args.repeat,
            "mix": args.mix,
            "scale": args.scale,
            "mem_repeat": args.mem_repeat,
            "index_workers": workers,
        },
    }
    noise: list[str] = []
    try:
        t = time.perf_counter()
        small = make_corpus(raw_root, SMALL, args.files, args.mix)
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        big = scale_corpus(small, BIG, args.scale)
        link_s = time.perf_counter() - t
        fmt_counts = dict(sorted(Counter(small.formats.values()).items()))
        doc["corpus"] = {
            "audio_files": len(small.audio),
            "sidecars": small.sidecars,
            "other_files": small.other,
            "audio_mib": round(small.bytes / 2**20, 1),
            "formats": fmt_counts,
            "generate_s": round(gen_s, 2),
            "scaled_audio_files": len(big.audio),
            "link_s": round(link_s, 2),
        }
        print(
            f"corpus ({args.mix}): {len(small.audio)} audio files ({small.bytes / 2**20:.1f} MiB), "
            f"{small.sidecars} sidecars, {small.other} stray files, formats {fmt_counts}; generated in "
            f"{gen_s:.1f}s; {len(big.audio)}-file copy as hard links in {link_s:.1f}s",
            flush=True,
        )

        # -- throughput: warm-up (checked), then interleaved repeats in rotating order ------------
        paths = small.paths()
        n = len(paths)
        with stderr_lines(noise):
            bare_single(paths)
            bare_pool(paths, workers)
        bare_noise = _mpg123_noise(noise)
        with stderr_lines(noise):
            _, summary = run_index(raw_root, lake_root, SMALL)
        index_noise = _mpg123_noise(noise) - bare_noise
        problems = check_index(small, lake_root, summary)
        doc["index_check"] = problems or "ok"
        if problems:
            print("WARNING: the index output check failed: " + "; ".join(problems))
        runs: dict[str, list[float]] = {"bare_single": [], "bare_pool": [], "index": []}
        order = list(runs)
        with stderr_lines(noise):
            for r in range(args.repeat):
                for name in order[r % 3 :] + order[: r % 3]:
                    if name == "bare_single":
                        runs[name].append(bare_single(paths))
                    elif name == "bare_pool":
                        runs[name].append(bare_pool(paths, workers))
                    else:
                        runs[name].append(run_index(raw_root, lake_root, SMALL)[0])
            by_workers: dict[str, list[float]] = {}
            sweep = {"inline": IndexOptions(executor="inline")}
            for wk in sorted({1, 2, workers}):
                sweep[f"process:{wk}"] = IndexOptions(executor="process", workers=wk)
            sweep[f"thread:{workers}"] = IndexOptions(executor="thread", workers=workers)
            for _ in range(max(1, args.repeat // 2)):
                for label, opts in sweep.items():
                    elapsed = run_index(raw_root, lake_root, SMALL, opts)[0]
                    by_workers.setdefault(label, []).append(n / elapsed)
        fps = {k: [n / s for s in v] for k, v in runs.items()}
        ratio_single = [i / b for i, b in zip(fps["index"], fps["bare_single"], strict=True)]
        ratio_pool = [i / b for i, b in zip(fps["index"], fps["bare_pool"], strict=True)]
        doc["throughput"] = {
            "files": n,
            "files_per_s": {k: spread(v, 0) for k, v in fps.items()},
            "seconds": {k: [round(x, 4) for x in v] for k, v in runs.items()},
            "ratio_index_vs_bare_single": spread(ratio_single, 3),
            "ratio_index_vs_bare_pool": spread(ratio_pool, 3),
            "index_by_workers": {k: spread(v, 0) for k, v in by_workers.items()},
            "decoder_noise_lines": {"bare_loops": bare_noise, "one_index_run": index_noise},
        }
        # CPU cost per audio hour: one inline (single-thread, in this process) run, CPU seconds.
        with stderr_lines(noise):
            cpu0 = time.process_time()
            _, inline_summary = run_index(raw_root, lake_root, SMALL, IndexOptions(executor="inline"))
            cpu_s = time.process_time() - cpu0
        doc["cpu_cost"] = {
            "inline_cpu_s": round(cpu_s, 3),
            "audio_s": round(inline_summary.seconds, 1),
            "files": inline_summary.rows,
            "core_s_per_audio_hour": round(cpu_s / inline_summary.seconds * 3600, 2),
            "core_ms_per_file": round(1000 * cpu_s / inline_summary.rows, 3),
        }
        print("throughput done", flush=True)

        if not args.no_profile:
            reps = max(2, (args.repeat + 1) // 2)
            with stderr_lines(noise):
                st = stage_costs(small, workers, reps)
                fmt_cost = per_format_cost(small, reps)
                prof = profile_serial(raw_root, lake_root, SMALL, n)
            serial_us = st["serial_index"]
            known = st["fingerprint"] + st["listing"] + st["probe_object"] + st["sidecars"] + st["parquet"]
            doc["breakdown"] = {
                "budget_us_per_file": {
                    "bare sf.info (1 thread)": st["sf_info"],
                    "serial build_index, total": round(serial_us, 1),
                    "  listing pass 1 (listing_fingerprint)": st["fingerprint"],
                    "  listing pass 2 (iter_objects)": st["listing"],
                    "  probe_object": st["probe_object"],
                    "    LocalStorage.local_path (realpath x2)": st["local_path"],
                    "    probe_audio beyond sf.info (head read, tail read)": round(
                        st["probe_audio"] - st["sf_info"], 1
                    ),
                    "  Table.from_pylist + Parquet write": st["parquet"],
                    "  read_sidecars (averaged over all audio files)": st["sidecars"],
                    "  rest (grouping, rows, summary; absorbs timing noise)": round(serial_us - known, 1),
                    "rows with the pool (listing+probe+sidecars)": st["rows_pool"],
                },
                "stage_us_per_file": st,
                "per_format_us_per_file": fmt_cost,
                "serial_cprofile": prof,
            }
            print("breakdown done", flush=True)

        # -- memory: fresh processes, N and 10N interleaved ----------------------------------------
        mem: dict[str, list[dict[str, Any]]] = {"baseline": [], "baseline_pandas": [], "n": [], "10n": []}
        # The probe processes are compared on runs that force the pool at both sizes. With the default
        # executor a fresh process probes the first chunks itself while the forkserver starts (about a
        # second, cold): at N it finishes all 600 files before the workers exist, they live a few ms and
        # the 20 ms sampler mostly misses them, so "N" would count the forkserver alone and "10N" the
        # forkserver and the workers: a different set of processes, not growth (per-process peaks are
        # the same at both sizes; see pool_processes and pool_rss_by_size_auto in the JSON).
        pooled: dict[str, list[dict[str, Any]]] = {"n": [], "10n": []}
        for _ in range(args.mem_repeat):
            mem["baseline"].append(launcher.run("baseline", raw_root, lake_root, SMALL))
            mem["baseline_pandas"].append(launcher.run("baseline_pandas", raw_root, lake_root, SMALL))
            mem["n"].append(launcher.run("index", raw_root, lake_root, SMALL))
            mem["10n"].append(launcher.run("index", raw_root, lake_root, BIG))
            pooled["n"].append(launcher.run("index_process", raw_root, lake_root, SMALL))
            pooled["10n"].append(launcher.run("index_process", raw_root, lake_root, BIG))
        bad_10n = [
            r
            for r in mem["10n"] + pooled["10n"]
            if r["rows"] != len(big.audio) or r["ok_rows"] != len(big.audio)
        ]
        if bad_10n:
            doc["index_check_10n"] = [f"rows={r['rows']} ok_rows={r['ok_rows']}" for r in bad_10n]
        peak = {k: max(r["ru_maxrss_mib"] for r in v) for k, v in mem.items()}
        hwm_diff = max(
            abs(r["ru_maxrss_mib"] - r.get("vmhwm_mib", r["ru_maxrss_mib"])) for v in mem.values() for r in v
        )
        with stderr_lines(noise):
            warm_10n = len(big.audio) / run_index(raw_root, lake_root, BIG)[0]
        mem_ratio = peak["10n"] / peak["n"]
        # Driver and probe processes peak at different moments: compare the sums of their peaks, on the
        # runs with the pool forced (executor="process"), where the same processes exist at N and 10N.
        pooled_peak = {k: max(r["ru_maxrss_mib"] for r in pooled[k]) for k in ("n", "10n")}
        pool_peak = {k: max(r["pool_peak_mib"] for r in pooled[k]) for k in ("n", "10n")}
        both_pooled = pool_peak["n"] > 0 and pool_peak["10n"] > 0
        tree_ratio = (
            (pooled_peak["10n"] + pool_peak["10n"]) / (pooled_peak["n"] + pool_peak["n"])
            if both_pooled
            else None
        )
        auto_pool = {k: max(r["pool_peak_mib"] for r in mem[k]) for k in ("n", "10n")}
        doc["memory"] = {
            "peak_rss_mib": {k: [r["ru_maxrss_mib"] for r in v] for k, v in mem.items()},
            "vmhwm_mib": {k: [r.get("vmhwm_mib") for r in v] for k, v in mem.items()},
            "vmhwm_max_diff_mib": round(hwm_diff, 1),
            "files": {"n": len(small.audio), "10n": len(big.audio)},
            "ratio_10n_vs_n": round(mem_ratio, 3),
            "tree_peak_mib": {k: [r["tree_peak_mib"] for r in pooled[k]] for k in ("n", "10n")},
            "pool_peak_mib": {k: [r["pool_peak_mib"] for r in pooled[k]] for k in ("n", "10n")},
            "pool_processes": {k: [r["pool_processes"] for r in pooled[k]] for k in ("n", "10n")},
            "driver_peak_mib_process_executor": {
                k: [r["ru_maxrss_mib"] for r in pooled[k]] for k in ("n", "10n")
            },
            "tree_ratio_10n_vs_n": round(tree_ratio, 3) if tree_ratio is not None else None,
            "default_executor_runs": {
                "pool_peak_mib": {k: [r["pool_peak_mib"] for r in mem[k]] for k in ("n", "10n")},
                "pool_processes": {k: [r["pool_processes"] for r in mem[k]] for k in ("n", "10n")},
                "tree_ratio_10n_vs_n_not_like_for_like": round(
                    (peak["10n"] + auto_pool["10n"]) / (peak["n"] + auto_pool["n"]), 3
                ),
            },
            "growth_above_baseline_mib": {
                "n": round(peak["n"] - peak["baseline_pandas"], 1),
                "10n": round(peak["10n"] - peak["baseline_pandas"], 1),
            },
            "pandas_loaded_by_index": all(
                r["pandas_loaded_after"] and not r["pandas_loaded_before"] for r in mem["n"]
            ),
            "warm_files_per_s_10n": round(warm_10n),
            "cold_child_files_per_s": {
                k: [round(r["rows"] / r["elapsed_s"]) for r in mem[k]] for k in ("n", "10n")
            },
        }
        doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        _reemit(noise)

        # -- verdict -------------------------------------------------------------------------------
        tp = doc["throughput"]
        tp_ok = tp["ratio_index_vs_bare_single"]["median"] >= THROUGHPUT_TARGET
        mem_ok = mem_ratio <= MEMORY_TARGET and (tree_ratio is None or tree_ratio <= MEMORY_TARGET)
        checks_ok = not problems and not bad_10n
        doc["targets"] = {
            "throughput": {"target": f">= {THROUGHPUT_TARGET}x bare single-thread sf.info", "pass": tp_ok},
            "memory": {
                "target": f"peak RSS 10N <= {MEMORY_TARGET}x N (driver, and driver + probe processes)",
                "pass": mem_ok,
            },
            "index_output_ok": checks_ok,
        }
        print_report(doc)
        out_path = args.out / f"bench_index_{args.mix}_N{args.files}.json"
        write_json(out_path, doc)
        print(f"\nresult written to {out_path}")
        print(
            f"{'PASS' if tp_ok else 'FAIL'} throughput: index/bare(1 thread) = "
            f"{tp['ratio_index_vs_bare_single']['median']} (target >= {THROUGHPUT_TARGET}); "
            f"index/bare(pool of {workers}) = {tp['ratio_index_vs_bare_pool']['median']}"
        )
        print(
            f"{'PASS' if mem_ok else 'FAIL'} memory: peak RSS 10N/N = {doc['memory']['ratio_10n_vs_n']} driver, "
            f"{doc['memory']['tree_ratio_10n_vs_n']} driver + probe processes (target <= {MEMORY_TARGET})"
        )
        if not checks_ok:
            print("FAIL index output check (see index_check in the JSON)")
        cc = doc["cpu_cost"]
        rows = [
            row(
                "index / bare sf.info (1 thread)",
                tp["ratio_index_vs_bare_single"]["median"],
                f">= {THROUGHPUT_TARGET}",
                tp_ok and checks_ok,
                f"{n} files, {args.repeat} repeats, median [{tp['ratio_index_vs_bare_single']['min']}.."
                f"{tp['ratio_index_vs_bare_single']['max']}]; vs bare pool of {workers}: "
                f"{tp['ratio_index_vs_bare_pool']['median']}"
                + ("" if checks_ok else "; OUTPUT CHECK FAILED"),
            ),
            row(
                "index peak RSS 10N / N",
                max(mem_ratio, tree_ratio or 0.0),
                f"<= {MEMORY_TARGET}",
                mem_ok,
                f"driver {doc['memory']['ratio_10n_vs_n']}, driver + probe processes "
                f"{doc['memory']['tree_ratio_10n_vs_n']} ({len(small.audio)} -> {len(big.audio)} files)",
            ),
            row(
                "index CPU core-s per audio hour",
                cc["core_s_per_audio_hour"],
                "report",
                None,
                f"single thread, {cc['core_ms_per_file']} ms/file, clips of "
                f"{cc['audio_s'] / max(cc['files'], 1):.2f} s on average",
            ),
        ]
        write_result(
            "index", rows, quick=args.quick, machine_start=machine_start, extra={"detail_file": str(out_path)}
        )
        return 1 if args.strict and not (tp_ok and mem_ok and checks_ok) else 0
    finally:
        launcher.close()
        if args.keep:
            print(f"corpus kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
