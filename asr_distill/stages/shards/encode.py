"""Per-clip work of the shards stage (runs in worker processes): decode to 16 kHz, check, encode.

A clip's audio member holds 16-bit PCM: ``pcm16(samples)``, the very int16 values the clean stage's
``pcm_blake3`` is computed on, so decoding the member and hashing its int16 samples gives back the kept
table's hash (the member is lossless with respect to the cleaned content).

A segment of a long recording is never decoded from the raw recording again: its FLAC member (16 kHz
mono PCM_16, written by the segmentation stage) is read from the lake by one byte-range read, decoded
straight to int16 (lossless) and checked against the segments row (``num_samples`` and ``pcm_blake3``;
``content_changed`` otherwise), then encoded like a clip.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

from asr_distill import hashing
from asr_distill.audio.decode import DecodeError, decode_object
from asr_distill.stages.clean.metrics import pcm16
from asr_distill.stages.shards.config import ShardConfig
from asr_distill.stages.shards.plan import PlannedSample
from asr_distill.storage import Storage

# Reasons a planned clip is not written (reported per clip in the summary).
ENCODE_ERRORS = {
    "decode_failed": "the raw object (or a segment's FLAC member) could not be read or decoded now",
    "content_changed": (
        "decoded 16 kHz content differs from the kept table or segments row (num_samples or pcm_blake3;"
        " for a segment also a member that is short or does not decode)"
    ),
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
    pcm_blake3: str | None = None
    error: str | None = None  # a key of ENCODE_ERRORS
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def sample_metadata(s: PlannedSample, num_samples: int, pcm_blake3: str, cfg: ShardConfig) -> dict[str, Any]:
    """The ``.json`` member's fields. Every field is present in every sample with one type (the Hugging
    Face ``webdataset`` builder infers its schema from the first samples): unknown strings are ``""``,
    ``has_text`` says whether ``text`` is a reference transcript. Provenance: ``source_key`` is the raw
    object the audio comes from (the recording, for a segment), ``offset_s`` where the sample starts in
    it (float; ``0.0`` for a short clip) and ``segment_index`` the segment's index in its recording
    (int; ``-1`` for a short clip, which is no segment)."""
    return {
        "id": s.sample_key,
        "source_key": s.source_key,
        "segment_index": s.segment_index,
        "offset_s": float(s.offset_s),
        "partition": s.partition,
        "duration_s": num_samples / cfg.sample_rate,
        "num_samples": num_samples,
        "sample_rate": cfg.sample_rate,
        "language": s.language or "",
        "speaker": s.speaker or "",
        "text": s.text or "",
        "has_text": s.text is not None,
        "pcm_blake3": pcm_blake3,
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


class MemberChanged(ValueError):
    """A segment's member is not what the segments row describes (short, undecodable, wrong format)."""


def segment_pcm(lake: Storage, s: PlannedSample, sample_rate: int) -> np.ndarray:
    """The int16 samples of a segment's FLAC member, read by byte range (no resampling, no float
    round trip). Storage errors propagate; a member that is short, does not decode or is not mono at
    ``sample_rate`` raises :class:`MemberChanged`."""
    assert s.member is not None
    tar_key, offset, size = s.member
    data = lake.read_range(tar_key, offset, size)
    if len(data) != size:
        raise MemberChanged(f"{len(data)} of {size} bytes at offset {offset} of {tar_key}")
    try:
        pcm, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise MemberChanged(f"the member does not decode: {exc}") from exc
    if rate != sample_rate or pcm.shape[1] != 1:
        raise MemberChanged(f"member is {pcm.shape[1]} channel(s) at {rate} Hz, not mono at {sample_rate} Hz")
    return np.ascontiguousarray(pcm[:, 0], dtype="<i2")


def _load_pcm(s: PlannedSample, loader: AudioLoader, lake: Storage | None, cfg: ShardConfig) -> np.ndarray:
    if s.member is None:
        return pcm16(np.asarray(loader(s.source_key), dtype=np.float32).reshape(-1))
    if lake is None:
        raise ValueError("a segment sample needs the lake store that holds its tar")
    return segment_pcm(lake, s, cfg.sample_rate)


def encode_sample(
    s: PlannedSample, loader: AudioLoader, cfg: ShardConfig, lake: Storage | None = None
) -> EncodedSample:
    """Decode (a clip from the raw store through ``loader``; a segment's member from ``lake``), check
    against the plan, encode. Never raises for a bad clip: the error is in the result."""
    try:
        pcm = _load_pcm(s, loader, lake, cfg)
    except MemberChanged as exc:
        return EncodedSample(s, error="content_changed", detail=f"segment member: {exc}")
    except DecodeError as exc:
        return EncodedSample(s, error="decode_failed", detail=f"{exc.reason_code}: {exc.detail}")
    except Exception as exc:
        return EncodedSample(s, error="decode_failed", detail=f"{type(exc).__name__}: {exc}")
    try:
        n = len(pcm)
        if n == 0:
            return EncodedSample(s, error="empty_audio", detail="0 samples decoded")
        digest = hashing.pcm_hex(pcm)
        if cfg.verify_content:
            if s.num_samples is not None and n != s.num_samples:
                return EncodedSample(
                    s, error="content_changed", detail=f"{n} samples decoded, the table says {s.num_samples}"
                )
            if s.pcm_blake3 is not None and digest != s.pcm_blake3:
                return EncodedSample(
                    s,
                    error="content_changed",
                    detail=f"pcm_blake3 {digest[:12]} != table {s.pcm_blake3[:12]}",
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
        return EncodedSample(s, audio=audio, json=meta, num_samples=n, pcm_blake3=digest)
    except Exception as exc:  # a bug must cost one clip, not the run
        return EncodedSample(s, error="internal_error", detail=f"{type(exc).__name__}: {exc}")
