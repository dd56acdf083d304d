"""Benchmark of streaming VAD + segment planning against a bare decode + resample + VAD loop (a script, not a test).

    .venv/bin/python bench/bench_segment.py [--quick] [--short-min 10] [--long-min 60] [--repeat 3]
                                            [--root bench/out/segment]

Writes two synthetic recordings (44.1 kHz stereo FLAC, written blockwise): espeak-ng sentences (or a
speech-like modulated signal without espeak-ng), silences, a tone and a noise stretch, repeated to
``--short-min`` and ``--long-min`` minutes. Then, each run in a fresh subprocess of one thread:

* ``bare``: ``soundfile`` blocks -> channel mean -> ``soxr.ResampleStream`` to 16 kHz -> int16 rounding ->
  onnxruntime on 60 s batches of 576-sample windows with the LSTM state carried (written here, not with
  the project's code);
* ``ours``: :func:`asr_distill.audio.vad.vad_file` (the project's decoder and :class:`SileroVad`) followed by
  :func:`asr_distill.stages.segment.plan.plan_segments` and :func:`account`.

Prints the CPU model, throughput (audio seconds per wall second, i.e. the real-time factor) of both on
both files, the ours/bare ratio per repeat (median, min, max; target >= 0.8) and each worker's peak RSS
(``ru_maxrss``) for the short and the long file (target: long/short <= 1.2). ``--quick`` uses 6 and 12
minutes and 1 repeat (about a minute and a half here). Below ~5 min the RSS has not reached its plateau (glibc
heap growth from the 4 MB per-block arrays: 117 MB at 1 min, 141 MB at 6 min, 138 MB at 20 min here), so
compare 10 min with longer files for the flatness target; ``--quick`` therefore starts at 6 minutes.

Writes ``bench/out/segment.json`` (``bench/_result.py``'s rows) for ``bench/run_all.py``: the ours/bare
throughput ratio of each file (target >= 0.8) and the long/short peak RSS of ``ours`` (target <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RATE = 44_100
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Could you bring the heavy camera to the north station before lunch?",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "A long time ago in a quiet village there lived an old clockmaker and his cat.",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# -- corpus ----------------------------------------------------------------------------------------
def _pattern() -> np.ndarray:
    """About a minute of mono audio at 44.1 kHz: speech, silences, a tone and noise."""
    import soxr

    rng = np.random.default_rng(0)
    parts: list[np.ndarray] = []
    espeak = shutil.which("espeak-ng")
    for i, text in enumerate(SENTENCES * 3):
        if espeak:
            wav = subprocess.run(
                [espeak, "--stdout", "-s", "165", text], capture_output=True, check=True
            ).stdout
            pcm = np.frombuffer(wav[44 + (len(wav) - 44) % 2 :], "<i2").astype(np.float32) / 32768
            utt = soxr.resample(pcm, 22_050, RATE).astype(np.float32)
        else:  # a speech-like signal: harmonic buzz with syllable-rate modulation
            t = np.arange(int(3.5 * RATE)) / RATE
            utt = (np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2).astype(
                np.float32
            )
        parts += [utt * np.float32(0.5), np.zeros(int(rng.uniform(0.3, 2.0) * RATE), np.float32)]
        if i == 5:
            t = np.arange(8 * RATE) / RATE
            parts.append((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
            parts.append((0.05 * rng.standard_normal(6 * RATE)).astype(np.float32))
    x = np.concatenate(parts)
    return x + (1e-3 * rng.standard_normal(len(x))).astype(np.float32)


def write_recording(path: Path, minutes: float, pattern: np.ndarray) -> None:
    import soundfile as sf

    if path.exists():
        return
    tmp = path.with_suffix(".tmp.flac")
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(tmp, "w", RATE, 2, subtype="PCM_16", format="FLAC") as f:
        done = 0
        while done < total:
            blk = pattern[: total - done]
            f.write(np.stack([blk, blk * np.float32(0.8)], axis=1))
            done += len(blk)
    os.replace(tmp, path)


# -- workers (run in a fresh process) --------------------------------------------------------------
def worker_bare(path: str) -> dict:
    import onnxruntime as ort
    import soundfile as sf
    import soxr

    from asr_distill.audio.vad import model_path  # only to find the same file

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    ctx = np.zeros(64, np.float32)
    pending = np.zeros(0, np.float32)
    block = 60 * 16_000
    n_out = 0
    probs = []
    t0 = time.perf_counter()
    with sf.SoundFile(path) as f:
        rs = soxr.ResampleStream(f.samplerate, 16_000, 1, dtype="float32", quality="HQ")
        buf = []
        size = 0
        while True:
            x = f.read(1 << 16, dtype="float32", always_2d=True)
            last = len(x) == 0
            mono = x.mean(axis=1, dtype=np.float32) if len(x) else np.zeros(0, np.float32)
            y = rs.resample_chunk(mono, last=last)
            y = np.clip(np.rint(y * 32768), -32768, 32767) / np.float32(32768)
            n_out += len(y)
            buf.append(y)
            size += len(y)
            if size >= block or last:
                z = np.concatenate([pending, *buf])
                buf, size = [], 0
                k = len(z) // 512
                if last and len(z) % 512:
                    z = np.concatenate([z, np.zeros(512 - len(z) % 512, np.float32)])
                    k += 1
                frames = z[: k * 512].reshape(k, 512)
                pending = z[k * 512 :]
                if k:
                    inp = np.concatenate([np.vstack([ctx, frames[:-1, -64:]]), frames], axis=1)
                    ctx = frames[-1, -64:].copy()
                    p, h, c = sess.run(None, {"input": inp, "h": h, "c": c})
                    probs.append(p)
            if last:
                break
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "n_samples": n_out, "frames": int(sum(len(p) for p in probs))}


def worker_ours(path: str) -> dict:
    from asr_distill.audio.vad import SileroVad, vad_file
    from asr_distill.stages.segment.plan import account, plan_segments

    vad = SileroVad()
    t0 = time.perf_counter()
    res = vad_file(path, vad)
    segs = plan_segments(res.probabilities, res.n_samples)
    acc = account(segs, res.n_samples)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "n_samples": res.n_samples,
        "frames": len(res.probabilities),
        "segments": len(segs),
        "kept_s": acc.kept_samples / 16_000,
    }


def run_worker(mode: str, path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--short-min", type=float, default=10.0)
    ap.add_argument("--long-min", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--root", type=Path, default=REPO / "bench" / "out" / "segment")
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, path = args.worker
        doc = worker_bare(path) if mode == "bare" else worker_ours(path)
        doc["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(doc))
        return
    from _result import machine, row, write_result

    machine_start = machine()
    if args.quick:
        args.short_min, args.long_min, args.repeat = 6.0, 12.0, 1
    args.root.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); load average {os.getloadavg()}")
    pattern = _pattern()
    files = {}
    for label, minutes in (("short", args.short_min), ("long", args.long_min)):
        p = args.root / f"synthetic_{minutes:g}min_44k_stereo.flac"
        write_recording(p, minutes, pattern)
        files[label] = (p, minutes * 60)
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeat):
        order = ["bare", "ours"] if r % 2 == 0 else ["ours", "bare"]
        for label, (path, _) in files.items():
            for mode in order:
                results.setdefault((label, mode), []).append(run_worker(mode, path))
    print(
        f"\n{'file':<6} {'mode':<5} {'audio s':>8} {'median s':>9} {'RTF (x real time)':>18} {'peak RSS MB':>12}"
    )
    for (label, mode), runs in results.items():
        secs = [x["seconds"] for x in runs]
        dur = files[label][1]
        print(
            f"{label:<6} {mode:<5} {dur:8.0f} {statistics.median(secs):9.2f} {dur / statistics.median(secs):18.0f}"
            f" {max(x['rss_mb'] for x in runs):12.1f}"
        )
        if mode == "ours":
            bare = results[(label, "bare")][0]
            assert runs[0]["frames"] == bare["frames"] and runs[0]["n_samples"] == bare["n_samples"], (
                runs,
                bare,
            )
    rows = []
    for label in files:
        ratios = [
            b["seconds"] / o["seconds"]
            for o, b in zip(results[(label, "ours")], results[(label, "bare")], strict=True)
        ]
        print(
            f"ours/bare throughput ({label}): median {statistics.median(ratios):.2f}"
            f" (min {min(ratios):.2f}, max {max(ratios):.2f}; target >= 0.8)"
        )
        median = statistics.median(ratios)
        rows.append(
            row(
                f"segment VAD+plan vs bare decode+VAD, {label} ({files[label][1] / 60:g} min)",
                median,
                ">= 0.8",
                median >= 0.8,
                f"ours/bare throughput, median of {len(ratios)} (min {min(ratios):.2f}, max {max(ratios):.2f})",
            )
        )
    rss: dict[str, tuple[float, float]] = {}
    for mode in ("ours", "bare"):
        s = max(x["rss_mb"] for x in results[("short", mode)])
        lg = max(x["rss_mb"] for x in results[("long", mode)])
        print(f"peak RSS {mode}: short {s:.1f} MB, long {lg:.1f} MB, long/short {lg / s:.2f} (target <= 1.2)")
        rss[mode] = (s, lg)
    s, lg = rss["ours"]
    bs, blg = rss["bare"]
    rows.append(
        row(
            "segment peak RSS, long/short",
            lg / s,
            "<= 1.2",
            lg / s <= 1.2,
            f"ours {s:.0f} -> {lg:.0f} MB ({args.short_min:g} -> {args.long_min:g} min); "
            f"bare {bs:.0f} -> {blg:.0f} MB",
        )
    )
    o = results[("long", "ours")][0]
    print(f"long file: {o['segments']} segments, {o['kept_s']:.0f} s kept of {files['long'][1]:.0f} s")
    path = write_result(
        "segment",
        rows,
        quick=args.quick,
        machine_start=machine_start,
        extra={"long_segments": o["segments"], "long_kept_s": round(o["kept_s"], 1)},
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
