"""Per-clip work of the shards stage (runs in worker processes): decode to 16 kHz, check, encode.

A clip's audio member holds 16-bit PCM: ``pcm16(samples)``, the very int16 values the clean stage's
``pcm_sha256`` is computed on, so decoding the member and hashing its int16 samples gives back the kept
table's hash (the member is lossless with respect to the cleaned content).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from asr_distill.audio.decode import DecodeError, decode_object
from asr_distill.stages.clean.metrics import pcm16
from asr_distill.stages.shards.config import ShardConfig
from asr_distill.stages.shards.plan import PlannedSample
from asr_distill.storage import Storage

# Reasons a planned clip is not written (reported per clip in the summary).
ENCODE_ERRORS = {
    "decode_failed": "the raw object could not be decoded now (decode_error code in the detail)",
    "content_changed": "decoded 16 kHz content differs from the kept table (num_samples or pcm_sha256)",
    "outside_bucket": "the decoded duration lies outside the bucket planned from the table",
    "empty_audio": "decoding produced no samples",
    "encode_failed": "the audio could not be encoded",
    "worker_crashed": "the worker process died on this clip twice",
    "internal_error": "an unexpected exception (a bug or resource exhaustion)",
}

AudioLoader = Callable[[str], np.ndarray]


class StorageAudioLoader:
    """Decodes raw objects of a store to mono float32 at ``sample_rate`` (picklable for process pools)."""

    def __init__(self, store: Storage, sample_rate: int = 16_000, quality: str = "HQ") -> None:
        self.store = store
        self.sample_rate = sample_rate
        self.quality = quality

    def __call__(self, key: str) -> np.ndarray:
        return decode_object(self.store, key, target_rate=self.sample_rate, quality=self.quality).samples


@dataclass(frozen=True, slots=True)
class EncodedSample:
    """The members of one sample, or why there are none."""

    sample: PlannedSample
    audio: bytes | None = None
    json: bytes | None = None
    num_samples: int = 0
    pcm_sha256: str | None = None
    error: str | None = None  # a key of ENCODE_ERRORS
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def sample_metadata(s: PlannedSample, num_samples: int, pcm_sha256: str, cfg: ShardConfig) -> dict[str, Any]:
    """The ``.json`` member's fields. Every field is present in every sample with one type (the Hugging
    Face ``webdataset`` builder infers its schema from the first samples): unknown strings are ``""``,
    ``has_text`` says whether ``text`` is a reference transcript."""
    return {
        "id": s.sample_key,
        "source_key": s.source_key,
        "partition": s.partition,
        "duration_s": num_samples / cfg.sample_rate,
        "num_samples": num_samples,
        "sample_rate": cfg.sample_rate,
        "language": s.language or "",
        "speaker": s.speaker or "",
        "text": s.text or "",
        "has_text": s.text is not None,
        "pcm_sha256": pcm_sha256,
        "bucket": cfg.bucket_label(s.bucket),
    }


def metadata_bytes(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def encode_audio(pcm: np.ndarray, cfg: ShardConfig) -> bytes:
    """16-bit PCM to FLAC or WAV bytes (libsndfile; deterministic for the same build)."""
    buf = io.BytesIO()
    if cfg.audio_format == "flac":
        sf.write(
            buf,
            pcm,
            cfg.sample_rate,
            format="FLAC",
            subtype="PCM_16",
            compression_level=cfg.flac_compression_level,
        )
    else:
        sf.write(buf, pcm, cfg.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def encode_sample(s: PlannedSample, loader: AudioLoader, cfg: ShardConfig) -> EncodedSample:
    """Decode, check against the plan, encode. Never raises for a bad clip: the error is in the result."""
    try:
        samples = loader(s.source_key)
    except DecodeError as exc:
        return EncodedSample(s, error="decode_failed", detail=f"{exc.reason_code}: {exc.detail}")
    except Exception as exc:
        return EncodedSample(s, error="decode_failed", detail=f"{type(exc).__name__}: {exc}")
    try:
        pcm = pcm16(np.asarray(samples, dtype=np.float32).reshape(-1))
        n = len(pcm)
        if n == 0:
            return EncodedSample(s, error="empty_audio", detail="0 samples decoded")
        digest = hashlib.sha256(pcm.tobytes()).hexdigest()
        if cfg.verify_content:
            if s.num_samples is not None and n != s.num_samples:
                return EncodedSample(
                    s, error="content_changed", detail=f"{n} samples decoded, the table says {s.num_samples}"
                )
            if s.pcm_sha256 is not None and digest != s.pcm_sha256:
                return EncodedSample(
                    s,
                    error="content_changed",
                    detail=f"pcm_sha256 {digest[:12]} != table {s.pcm_sha256[:12]}",
                )
        if cfg.bucket_of(n / cfg.sample_rate) != s.bucket:
            return EncodedSample(
                s,
                error="outside_bucket",
                detail=f"{n / cfg.sample_rate:.3f} s is not in {cfg.bucket_label(s.bucket)}",
            )
        try:
            audio = encode_audio(pcm, cfg)
        except Exception as exc:
            return EncodedSample(s, error="encode_failed", detail=f"{type(exc).__name__}: {exc}")
        meta = metadata_bytes(sample_metadata(s, n, digest, cfg))
        return EncodedSample(s, audio=audio, json=meta, num_samples=n, pcm_sha256=digest)
    except Exception as exc:  # a bug must cost one clip, not the run
        return EncodedSample(s, error="internal_error", detail=f"{type(exc).__name__}: {exc}")
