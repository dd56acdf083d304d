"""Thresholds of the clean-and-filter stage, one frozen dataclass with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from asr_distill.audio.decode import RESAMPLE_QUALITIES
from asr_distill.language import CHAR_LANGUAGES
from asr_distill.stages.configbase import StageConfig


@dataclass(frozen=True)
class CleanConfig(StageConfig):
    """Every rule's threshold. Defaults and why:

    * ``target_rate=16000``, ``resample_quality="HQ"``: what Whisper-style teachers and students take;
      soxr HQ is 20-bit precision, VHQ buys nothing audible for ASR at twice the cost.
    * ``min_duration_s=0.5``: shorter clips carry at most a word; ``max_duration_s=30``: the teacher's
      window (Whisper, Qwen2-Audio). A readable recording longer than that and at most
      ``max_recording_s=43200`` (12 h) is *long-form*: it goes to ``long_form.parquet`` for the segmentation
      stage (only recording-level rules apply to it: probe/decode failures, truncation, non-finite, silent,
      duplicate, and ``bad_sidecar`` when quarantined). Longer than ``max_recording_s`` is ``too_long``.
    * ``truncation_ratio=0.9``: ``truncated`` when decoded duration < 0.9 x what the header claims
      (index ``header_duration_s`` or the decoder's own header reading, whichever is larger). Encoder
      padding makes honest files decode within ~1% of their claim.
    * ``min_rms_dbfs=-60``: RMS below -60 dBFS is ``too_quiet`` (quiet speech sits around -30..-40 dBFS;
      16-bit dither alone is about -101 dBFS). All-zero samples are ``silent`` instead.
    * ``clip_level=0.999`` of full scale, ``clip_min_run=3``: a sample counts as clipped only inside a
      run of >= 3 consecutive samples at or above the level in one channel (a lone full-scale sample is a
      peak, not clipping; Audacity's "Find Clipping" uses the same 3-sample start). ``clipped`` when the
      clipped fraction of all samples exceeds ``max_clipped_fraction=0.01``.
    * ``silence_dbfs=-50`` on ``silence_frame_s=0.01`` frames: leading/trailing silence metrics only.
    * ``min/max_chars_per_second=1/25``: NeMo SDP configs use 1-21 (pt/es) and 5-20 (MLS es) chars/s and
      flag > 40 as hallucination; English read speech runs ~12-16 chars/s, CJK ~4-8. 25 leaves headroom
      for fast speakers, < 1 catches transcripts of a fraction of the audio.
    * ``feature_frame_rate=100``: 10 ms feature hop; CTC feasibility uses icefall's 4x subsampling
      ``T = ((frames - 7) // 2 + 1) // 2`` and needs ``T >= tokens + repeated adjacent tokens``.
    * ``chars_per_bpe_token=4``: token estimate for space-delimited languages, ``max(words,
      ceil(chars / 4))`` with chars counted on whitespace-collapsed text (the usual ~4 chars per BPE token
      of English; at least one token per word since word-initial pieces never merge across spaces).
    * ``char_languages``: languages whose label length is their non-space, non-punctuation characters.
    * ``default_language="en"``: used when the row has no language.
    * ``bad_sidecar="drop_text"``: a clip whose sidecar was unreadable keeps its audio (it can still be
      pseudo-labelled) but its reference text is dropped (``reference_text`` null) and it carries the
      ``bad_sidecar`` flag; ``"quarantine"`` makes ``bad_sidecar`` a quarantine reason instead.
    * ``dedup=True``: quarantine clips whose decoded 16 kHz content equals an earlier kept clip.
    """

    target_rate: int = 16_000
    resample_quality: str = "HQ"
    min_duration_s: float = 0.5
    max_duration_s: float = 30.0
    max_recording_s: float = 43_200.0
    truncation_ratio: float = 0.9
    min_rms_dbfs: float = -60.0
    clip_level: float = 0.999
    clip_min_run: int = 3
    max_clipped_fraction: float = 0.01
    silence_dbfs: float = -50.0
    silence_frame_s: float = 0.01
    min_chars_per_second: float = 1.0
    max_chars_per_second: float = 25.0
    feature_frame_rate: int = 100
    chars_per_bpe_token: float = 4.0
    char_languages: frozenset[str] = CHAR_LANGUAGES
    default_language: str = "en"
    bad_sidecar: Literal["drop_text", "quarantine"] = "drop_text"
    dedup: bool = True

    _COERCE: ClassVar[dict[str, Any]] = {"char_languages": frozenset}

    def __post_init__(self) -> None:
        if self.resample_quality not in RESAMPLE_QUALITIES:
            raise ValueError(f"resample_quality must be one of {RESAMPLE_QUALITIES}")
        if self.target_rate <= 0 or self.target_rate % self.feature_frame_rate:
            raise ValueError("target_rate must be a positive multiple of feature_frame_rate")
        if not 0 <= self.min_duration_s <= self.max_duration_s:
            raise ValueError("need 0 <= min_duration_s <= max_duration_s")
        if self.max_recording_s < self.max_duration_s:
            raise ValueError("need max_recording_s >= max_duration_s")
        if not 0 < self.truncation_ratio <= 1:
            raise ValueError("truncation_ratio must be in (0, 1]")
        if not 0 < self.clip_level <= 1 or self.clip_min_run < 1:
            raise ValueError("clip_level must be in (0, 1] and clip_min_run >= 1")
        if not 0 <= self.max_clipped_fraction <= 1:
            raise ValueError("max_clipped_fraction must be in [0, 1]")
        if not 0 <= self.min_chars_per_second <= self.max_chars_per_second:
            raise ValueError("need 0 <= min_chars_per_second <= max_chars_per_second")
        if self.chars_per_bpe_token <= 0 or self.silence_frame_s <= 0:
            raise ValueError("chars_per_bpe_token and silence_frame_s must be positive")
        if self.bad_sidecar not in ("drop_text", "quarantine"):
            raise ValueError("bad_sidecar must be 'drop_text' or 'quarantine'")
        object.__setattr__(self, "char_languages", frozenset(s.lower() for s in self.char_languages))
