"""The labels table: exactly one row per sample of a shard (a label, or an error row with a reason)."""

from __future__ import annotations

import pyarrow as pa

from asr_distill.stages.labels.quality import QUALITY_FLAGS
from asr_distill.teachers.base import TEACHER_ERRORS

# Reasons a sample has no label. Reader-side reasons first, then the teacher's.
INPUT_ERRORS: dict[str, str] = {
    "decode_error": "the sample's audio could not be decoded",
    "missing_audio": "the sample has no audio member",
    "bad_metadata": "the sample's JSON metadata could not be parsed",
}
ERROR_REASONS: dict[str, str] = {**INPUT_ERRORS, **TEACHER_ERRORS}

LABELS_SCHEMA = pa.schema(
    [
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("sample_key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" | "error"
        pa.field("error_reason", pa.string()),  # key of ERROR_REASONS, null when ok
        pa.field("error_detail", pa.string()),
        pa.field("text", pa.string()),  # null on error rows
        pa.field("language", pa.string()),  # the language the text was decoded in (declared or detected)
        pa.field("language_detected", pa.bool_()),  # ``language`` came from identification (none declared)
        # What the teacher's language identification said, also on declared clips (null: it did not run),
        # and its probability; ``language_mismatch`` / ``low_language_prob`` compare them.
        pa.field("detected_language", pa.string()),
        pa.field("language_probability", pa.float64()),
        pa.field("expected_language", pa.string()),
        pa.field("avg_logprob", pa.float64()),
        pa.field("num_tokens", pa.int32()),
        pa.field("compression_ratio", pa.float64()),
        pa.field("no_speech_prob", pa.float64()),
        pa.field("truncated", pa.bool_()),
        pa.field("audio_duration_s", pa.float64()),
        pa.field("chars_per_second", pa.float64()),
        pa.field("decode_time_s", pa.float64()),
        pa.field("has_reference", pa.bool_(), nullable=False),
        pa.field("error_rate", pa.float64()),  # WER or CER against the reference
        pa.field("error_metric", pa.string()),  # "wer" | "cer"
        pa.field("flags", pa.list_(pa.string()), nullable=False),
        pa.field("flagged", pa.bool_(), nullable=False),  # any flag, or an error row
        pa.field("teacher_fingerprint", pa.string(), nullable=False),
    ]
)
LABELS_COLUMNS = tuple(LABELS_SCHEMA.names)

# Keys of the Arrow schema metadata every labels table carries.
META_FINGERPRINT = b"asr_distill.teacher_fingerprint"
META_TEACHER = b"asr_distill.teacher"
META_QUALITY = b"asr_distill.quality_config"

__all__ = [
    "ERROR_REASONS",
    "INPUT_ERRORS",
    "LABELS_COLUMNS",
    "LABELS_SCHEMA",
    "META_FINGERPRINT",
    "META_QUALITY",
    "META_TEACHER",
    "QUALITY_FLAGS",
]
