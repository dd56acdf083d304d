"""Columns of the clean stage's three Parquet tables and the reason codes they use.

``kept``, ``long_form`` and ``quarantine`` share one schema (:data:`CLEAN_SCHEMA`) so that their union
is the input index, row for row: every ``audio_index`` column carried over unchanged, then the metrics,
the decision (``keep``, ``reasons``, ``flags``) and the duplicate reference. Kept rows have empty
``reasons``; quarantined rows have at least one. Long-form rows (readable recordings longer than
``max_duration_s`` and at most ``max_recording_s``, for the segmentation stage) have ``keep`` false,
empty ``reasons`` and the ``long_form`` flag. Every table is sorted by ``key``.
"""

from __future__ import annotations

import pyarrow as pa

from asr_distill.stages.index.schema import AUDIO_INDEX_SCHEMA

SCHEMA_VERSION = "3"  # 2: the long_form table; 3: BLAKE3 content hashes (source_blake3, pcm_blake3)

# Quarantine reasons, in funnel order (a clip counts in the funnel under its first reason).
REASONS = {
    "probe_failed": "the index probe failed (index probe_error set); the clip is not decoded",
    "changed_since_index": (
        "the raw object is not the version the index probed (ETag on OSS, size + mtime locally) or "
        "changed while it was read; not measured (decode_detail says what differs): re-index, then clean"
    ),
    "decode_failed": "decoding failed (decode_error holds the code, decode_detail the message)",
    "truncated": "decoded duration < truncation_ratio x the duration the header claims",
    "non_finite": "the decoded samples contain NaN or Inf",
    "silent": "digital silence: every decoded sample is exactly 0",
    "too_quiet": "RMS level below min_rms_dbfs (and not all-zero)",
    "clipped": "fraction of samples in clipped runs above max_clipped_fraction",
    "too_short": "decoded duration below min_duration_s",
    "too_long": "decoded duration above max_recording_s (longer recordings up to it are long-form)",
    "bad_sidecar": "the sidecar could not be used (only with CleanConfig.bad_sidecar='quarantine')",
    "empty_text": "a reference text exists but holds no label characters (empty, spaces or punctuation)",
    "chars_per_second": "reference text length per second of audio outside [min, max]_chars_per_second",
    "ctc_infeasible": "too few frames after 4x subsampling for the label tokens plus repeated tokens",
    "duplicate": "same decoded content as a clip kept earlier (this partition, or one cleaned before)",
}

# Soft flags: recorded on kept and quarantined rows alike, never a reason to quarantine.
FLAGS = {
    "bad_sidecar": "the sidecar had an error (index sidecar_error); its text was dropped",
    "no_reference_text": "no usable reference text: text checks (chars/s, CTC) were skipped",
    "long_form": "longer than max_duration_s, at most max_recording_s: in long_form.parquet, to be segmented",
}

# The rules that judge a whole long-form recording (the others apply to each of its segments, or to
# text that covers only the whole recording).
RECORDING_REASONS = ("probe_failed", "decode_failed", "truncated", "non_finite", "silent", "too_long")
RECORDING_REASONS += ("bad_sidecar", "duplicate")

_CLEAN_FIELDS = [
    pa.field("keep", pa.bool_(), nullable=False),
    pa.field("reasons", pa.list_(pa.string()), nullable=False),
    pa.field("flags", pa.list_(pa.string()), nullable=False),
    pa.field("duplicate_of", pa.string()),  # key of the clip this one duplicates
    pa.field("duplicate_of_partition", pa.string()),  # its partition
    pa.field("decoder", pa.string()),  # "soundfile" | "pyav"
    pa.field("decode_error", pa.string()),  # asr_distill.audio.DECODE_ERRORS code
    pa.field("decode_detail", pa.string()),
    pa.field("source_blake3", pa.string()),  # BLAKE3 of the raw object's bytes (asr_distill.hashing)
    pa.field("pcm_blake3", pa.string()),  # BLAKE3 of the 16 kHz mono int16 PCM (see clean/metrics.py)
    pa.field("decoded_rate", pa.int32()),  # source sample rate as decoded
    pa.field("decoded_channels", pa.int16()),
    pa.field("decoded_frames", pa.int64()),  # source frames really decoded
    pa.field("decoded_duration_s", pa.float64()),
    pa.field("claimed_duration_s", pa.float64()),  # max(index header_duration_s, decoder's header claim)
    pa.field("num_samples", pa.int64()),  # samples at the target rate (16 kHz)
    pa.field("rms_dbfs", pa.float64()),  # floor -200 for all-zero audio
    pa.field("peak_dbfs", pa.float64()),
    pa.field("clipped_fraction", pa.float64()),
    pa.field("clipped_samples", pa.int64()),
    pa.field("non_finite_samples", pa.int64()),
    pa.field("leading_silence_s", pa.float64()),
    pa.field("trailing_silence_s", pa.float64()),
    pa.field("reference_text", pa.string()),  # text usable for WER/filters (null when absent or dropped)
    pa.field("label_language", pa.string()),  # primary language subtag used for label counting
    pa.field("label_chars", pa.int32()),  # characters of whitespace-collapsed reference text
    pa.field("label_tokens", pa.int32()),  # label length estimate for CTC
    pa.field("label_repeats", pa.int32()),  # adjacent repeated tokens
    pa.field("chars_per_second", pa.float64()),
    pa.field("ctc_frames", pa.int64()),  # frames after icefall's 4x subsampling
]

CLEAN_SCHEMA = pa.schema(list(AUDIO_INDEX_SCHEMA) + _CLEAN_FIELDS)
CLEAN_KEPT_SCHEMA = CLEAN_SCHEMA
CLEAN_QUARANTINE_SCHEMA = CLEAN_SCHEMA
CLEAN_COLUMNS = tuple(CLEAN_SCHEMA.names)
INDEX_COLUMNS = tuple(AUDIO_INDEX_SCHEMA.names)

# Keys of the Parquet key-value metadata written with both tables.
META_CONFIG = b"asr_distill.clean.config"
META_VERSION = b"asr_distill.clean.schema_version"
# Written into kept.parquet when a run finishes: what it was computed from, and its summary (re-runs
# with the same inputs reuse the tables instead of decoding again).
META_INPUTS = b"asr_distill.clean.inputs"
META_SUMMARY = b"asr_distill.clean.summary"
