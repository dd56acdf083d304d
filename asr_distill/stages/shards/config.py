"""Settings of the WebDataset shards stage, one frozen dataclass, and the fingerprint of what they produce."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import soundfile as sf
import soxr

from asr_distill.audio.decode import RESAMPLE_QUALITIES
from asr_distill.stages.configbase import StageConfig

# Bumped whenever the bytes this stage writes change for the same inputs and settings (sample key rule,
# JSON fields, order algorithm, tar layout). Part of the config fingerprint, so a bump rewrites shards.
# 2: samples' JSON gained segment_index and offset_s (segments of long recordings).
# 3: BLAKE3 content hashes (the JSON's pcm_blake3) and shard checksums (shards.parquet's blake3).
FORMAT_VERSION = "3"

DEFAULT_BUCKET_EDGES = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 25.0, 30.0)
AUDIO_FORMATS = ("flac", "wav")


def edge_label(x: float) -> str:
    """``2.0 -> "02.0"``; edges with more than one decimal keep up to three (``2.25 -> "02.250"``)."""
    if abs(x * 10 - round(x * 10)) < 1e-9:
        return f"{x:04.1f}"
    return f"{x:06.3f}"


@dataclass(frozen=True)
class ShardConfig(StageConfig):
    """How clips become shards. Defaults and why:

    * ``bucket_edges``: duration buckets ``[e0, e1), [e1, e2), ..., [e_n-1, e_n]`` (the last one closed,
      so a clip of exactly 30 s, which the clean stage keeps, has a bucket). Each shard holds one bucket,
      so a trainer batches by length from the shard list. 2 s steps up to 10 s (where most read and
      conversational speech lies), then 5 s steps up to Whisper's 30 s window.
    * ``max_shard_bytes=256 MiB``, ``max_shard_samples=10000``: a shard closes before a sample would take
      it over either bound (end-of-archive blocks included). 100 MB-1 GB shards are the usual WebDataset
      advice (sequential reads, few objects); 256 MiB is ~2 h of 16 kHz FLAC speech and streams from
      object storage in seconds. A single sample bigger than ``max_shard_bytes`` gets a shard of its
      own (reported by :func:`~asr_distill.stages.shards.verify.check_shard_sizes`).
    * ``audio_format="flac"``: lossless, ~half the size of WAV; ``"wav"`` for readers without FLAC.
      Both hold 16-bit PCM: exactly the int16 samples the clean stage's ``pcm_blake3`` hashes.
    * ``flac_compression_level=0.5``: libsndfile's scale 0..1 (libFLAC level 5, its default); 1.0 is
      ~1% smaller and ~2x slower to encode (measured on speech).
    * ``sample_rate=16000``, ``resample_quality="HQ"``: must equal the clean stage's settings, since the
      decoded content is checked against the kept table's ``pcm_blake3`` (``verify_content``).
    * ``verify_content=True``: a clip whose decoded 16 kHz PCM no longer matches the kept table (the raw
      object changed since cleaning) is not written; it is reported with reason ``content_changed``.
    """

    bucket_edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES
    max_shard_bytes: int = 256 * 1024 * 1024
    max_shard_samples: int = 10_000
    audio_format: Literal["flac", "wav"] = "flac"
    flac_compression_level: float = 0.5
    sample_rate: int = 16_000
    resample_quality: str = "HQ"
    verify_content: bool = True

    _COERCE: ClassVar[dict[str, Any]] = {"bucket_edges": tuple}

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.bucket_edges)
        object.__setattr__(self, "bucket_edges", edges)
        if len(edges) < 2:
            raise ValueError("bucket_edges needs at least two edges (one bucket)")
        if any(not math.isfinite(e) or e < 0 for e in edges):
            raise ValueError("bucket_edges must be finite and >= 0")
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError("bucket_edges must be strictly increasing")
        labels = [edge_label(e) for e in edges]
        if len(set(labels)) != len(labels):
            raise ValueError("bucket_edges too close together to label distinctly (keep 3 decimals at most)")
        if self.max_shard_bytes < 10240 + 2048:
            raise ValueError("max_shard_bytes must be at least 12 KiB")
        if self.max_shard_samples < 1:
            raise ValueError("max_shard_samples must be >= 1")
        if self.audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}")
        if not 0.0 <= self.flac_compression_level <= 1.0:
            raise ValueError("flac_compression_level must be in [0, 1]")
        if self.sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if self.resample_quality not in RESAMPLE_QUALITIES:
            raise ValueError(f"resample_quality must be one of {RESAMPLE_QUALITIES}")

    @property
    def audio_extension(self) -> str:
        return self.audio_format

    @property
    def n_buckets(self) -> int:
        return len(self.bucket_edges) - 1

    def bucket_label(self, i: int) -> str:
        """``bucket-02.0-04.0`` for bucket ``i``."""
        e = self.bucket_edges
        return f"bucket-{edge_label(e[i])}-{edge_label(e[i + 1])}"

    def bucket_of(self, duration_s: float | None) -> int | None:
        """Index of the bucket holding ``duration_s`` (``[lo, hi)``, the last ``[lo, hi]``), else None."""
        if duration_s is None or not math.isfinite(duration_s):
            return None
        e = self.bucket_edges
        if duration_s < e[0] or duration_s > e[-1]:
            return None
        if duration_s == e[-1]:
            return len(e) - 2
        lo, hi = 0, len(e) - 1
        while hi - lo > 1:  # largest i with e[i] <= duration_s
            mid = (lo + hi) // 2
            if e[mid] <= duration_s:
                lo = mid
            else:
                hi = mid
        return lo

    def fingerprint_payload(self) -> dict[str, Any]:
        """Everything that decides the shards' bytes: the settings (``verify_content`` aside),
        :data:`FORMAT_VERSION` and the encoder/resampler library versions."""
        d = self.to_dict()
        d.pop("verify_content")
        if self.audio_format != "flac":
            d.pop("flac_compression_level")
        d["format_version"] = FORMAT_VERSION
        d["libsndfile"] = sf.__libsndfile_version__
        d["soxr"] = soxr.__version__
        d["numpy_major"] = np.__version__.split(".")[0]
        return d
