"""Settings of the segmentation stage: the planner's, the segment-level audio rules', the encoder's."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Self

from asr_distill.audio import vad as vad_mod
from asr_distill.stages._procpool import ExecutorSpec, check_executor
from asr_distill.stages.clean.config import CleanConfig
from asr_distill.stages.configbase import StageConfig
from asr_distill.stages.segment.plan import SegmentConfig
from asr_distill.stages.shards.config import ShardConfig

# Bumped whenever the bytes this stage writes change for the same inputs and settings (segment key or
# member name rule, columns, tar layout). Part of the fingerprint, so a bump re-segments everything.
FORMAT_VERSION = "2"  # 2: BLAKE3 content hashes and tar checksums


@dataclass(frozen=True)
class SegmentStageConfig(StageConfig):
    """Everything the segmentation stage needs (a :class:`~asr_distill.stages.configbase.StageConfig`:
    ``segment`` and ``clean`` are nested dicts in :meth:`to_dict`/:meth:`from_dict`; the fingerprint
    covers :meth:`output_settings` only). Defaults and why:

    * ``segment``: the planner's settings (:class:`~asr_distill.stages.segment.plan.SegmentConfig`).
    * ``clean``: the clean stage's settings. Its resampler quality must be the one the recordings were
      cleaned with (the recording's ``pcm_blake3`` is checked against the clean table), and its level,
      clipping and silence thresholds are the segment-level audio rules (``silent``, ``too_quiet``,
      ``clipped``), applied to each segment as to a short clip.
    * ``flac_compression_level=0.5``: the shards' default (libFLAC level 5); members are 16 kHz mono
      FLAC PCM_16 written by :func:`asr_distill.stages.shards.encode.encode_audio`, so shards can copy
      them as they are, or decode them losslessly.
    * ``block_s=60``: samples per onnxruntime call (memory flat in recording length; any value gives
      the same probabilities, so it is not part of the fingerprint).
    * ``workers=None`` (usable cores), ``executor="process"``: recordings run in parallel on the
      project's process pool, one recording per task, one onnxruntime thread per worker; ``"ray"`` or a
      :class:`~asr_distill.stages._raypool.RayTasks`: the same tasks on the connected Ray cluster.
    """

    segment: SegmentConfig = field(default_factory=SegmentConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    flac_compression_level: float = 0.5
    block_s: float = 60.0
    workers: int | None = None
    executor: ExecutorSpec = "process"

    def __post_init__(self) -> None:
        if self.clean.target_rate != vad_mod.SAMPLE_RATE:
            raise ValueError(f"the VAD runs at {vad_mod.SAMPLE_RATE} Hz: clean.target_rate must match")
        if not 0.0 <= self.flac_compression_level <= 1.0:
            raise ValueError("flac_compression_level must be in [0, 1]")
        if self.block_s <= 0:
            raise ValueError("block_s must be positive")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be >= 1")
        check_executor(self.executor)

    @property
    def block_samples(self) -> int:
        """VAD block in samples, a whole number of VAD frames."""
        frames = max(1, round(self.block_s * vad_mod.SAMPLE_RATE / vad_mod.FRAME_SAMPLES))
        return frames * vad_mod.FRAME_SAMPLES

    def shard_config(self) -> ShardConfig:
        """The encoder settings, as :func:`~asr_distill.stages.shards.encode.encode_audio` takes them."""
        return ShardConfig(
            audio_format="flac",
            flac_compression_level=self.flac_compression_level,
            sample_rate=self.clean.target_rate,
            resample_quality=self.clean.resample_quality,
        )

    def output_settings(self) -> dict[str, Any]:
        """The settings that change what is written (not workers, executor, block size)."""
        c = self.clean
        return {
            "format_version": FORMAT_VERSION,
            "segment": self.segment.to_dict(),
            "resample_quality": c.resample_quality,
            "target_rate": c.target_rate,
            "audio_rules": {
                "min_rms_dbfs": c.min_rms_dbfs,
                "clip_level": c.clip_level,
                "clip_min_run": c.clip_min_run,
                "max_clipped_fraction": c.max_clipped_fraction,
                "silence_dbfs": c.silence_dbfs,
                "silence_frame_s": c.silence_frame_s,
            },
            "flac_compression_level": self.flac_compression_level,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment.to_dict(),
            "clean": self.clean.to_dict(),
            "flac_compression_level": self.flac_compression_level,
            "block_s": self.block_s,
            "workers": self.workers,
            "executor": self.executor if isinstance(self.executor, str) else "ray",
        }

    def fingerprint_payload(self) -> dict[str, Any]:
        return self.output_settings()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The config :meth:`to_dict` gave (``segment`` and ``clean`` as nested dicts)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SegmentStageConfig fields: {sorted(unknown)}")
        out = dict(data)
        if isinstance(out.get("segment"), dict):
            seg_fields = {f.name for f in dataclasses.fields(SegmentConfig)}
            bad = set(out["segment"]) - seg_fields
            if bad:
                raise ValueError(f"unknown SegmentConfig fields: {sorted(bad)}")
            out["segment"] = SegmentConfig(**out["segment"])
        if isinstance(out.get("clean"), dict):
            out["clean"] = CleanConfig.from_dict(out["clean"])
        return cls(**out)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a recording's segmentation depends on besides its bytes: the VAD model (pinned sha256), the
    onnxruntime build that runs it, the planner's settings and the stage's other output settings."""

    model_sha256: str
    onnxruntime_version: str
    segment_config: str  # SegmentConfig.fingerprint()
    settings: str  # sha256 of output_settings(), 16 hex digits

    @property
    def value(self) -> str:
        """The segmentation fingerprint: one string that changes when any part changes."""
        doc = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, str]:
        return {**dataclasses.asdict(self), "value": self.value}


def onnxruntime_version() -> str:
    import onnxruntime as ort  # lazy: the driver only needs its version

    return str(ort.__version__)


def fingerprint(config: SegmentStageConfig) -> Fingerprint:
    """The fingerprint of ``config`` with the installed onnxruntime and the pinned model."""
    doc = json.dumps(config.output_settings(), sort_keys=True, separators=(",", ":"))
    return Fingerprint(
        model_sha256=vad_mod.MODEL_SHA256,
        onnxruntime_version=onnxruntime_version(),
        segment_config=config.segment.fingerprint(),
        settings=hashlib.sha256(doc.encode()).hexdigest()[:16],
    )
