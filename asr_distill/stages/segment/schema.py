"""Columns of the segmentation stage's two Parquet tables and the codes they use.

``recordings.parquet``: one row per long recording of the partition (the clean stage's ``long_form``
rows), sorted by ``source_key``. ``segments.parquet``: one row per planned segment, kept or quarantined,
sorted by ``source_key`` then ``segment_index`` (time order; the keys of one recording sort the same
way). Sample counts are at 16 kHz.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "2"  # 2: BLAKE3 content hashes (source_blake3, pcm_blake3, tar_blake3)

# Recording status.
STATUSES = {
    "ok": "decoded and segmented (it may still have no kept segment when every one was quarantined)",
    "no_speech": "decoded; the VAD found no speech region: every sample is non-speech",
    "decode_failed": "the recording could not be read or decoded now (decode_error holds the code)",
    "content_changed": "its bytes or decoded content differ from the clean table (source or pcm hash)",
}

# Segment quarantine reasons, in funnel order (a segment counts in by-reason totals under its first).
SEGMENT_REASONS = {
    "too_short": "the padded segment is shorter than segment.min_segment_s (the planner's rule)",
    "silent": "digital silence: every sample of the segment is 0",
    "too_quiet": "the segment's RMS level is below clean.min_rms_dbfs",
    "clipped": "the clipped fraction of the segment's samples exceeds clean.max_clipped_fraction",
    "encode_failed": "the segment could not be encoded as FLAC",
}

# Soft flags on segment rows.
SEGMENT_FLAGS = {
    "forced_cut": "a boundary was cut where its speech region had no pause (lowest-probability frame)",
    "split_at_pause": "a boundary was cut at a pause of a region longer than the budget",
    "no_aligned_reference": "the recording's transcript covers the whole recording, not this segment",
}

RECORDINGS_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("decode_error", pa.string()),  # asr_distill.audio.DECODE_ERRORS code
        pa.field("detail", pa.string()),  # why decode_failed / content_changed
        pa.field("source_blake3", pa.string()),  # of the raw bytes, as read now
        pa.field("pcm_blake3", pa.string()),  # of the decoded 16 kHz int16 signal, as decoded now
        pa.field("n_samples", pa.int64()),  # 16 kHz samples decoded (null when not decoded)
        pa.field("duration_s", pa.float64()),
        pa.field("kept_samples", pa.int64()),
        pa.field("quarantined_samples", pa.int64()),
        pa.field("non_speech_samples", pa.int64()),
        pa.field("kept_segments", pa.int32()),
        pa.field("quarantined_segments", pa.int32()),
        pa.field("forced_cuts", pa.int32()),  # segments flagged forced_cut
        pa.field("quarantined_samples_by_reason", pa.map_(pa.string(), pa.int64())),
        pa.field("fingerprint", pa.string(), nullable=False),  # Fingerprint.value
        pa.field("vad_model_sha256", pa.string(), nullable=False),
        pa.field("onnxruntime_version", pa.string(), nullable=False),
        pa.field("segment_config_fingerprint", pa.string(), nullable=False),
        pa.field("tar_key", pa.string()),  # null when no segment was kept
        pa.field("tar_bytes", pa.int64()),
        pa.field("tar_blake3", pa.string()),
        pa.field("reference_text", pa.string()),  # the sidecar transcript of the whole recording
        pa.field("language", pa.string()),
        pa.field("speaker", pa.string()),
    ]
)

SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("segment_key", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reasons", pa.list_(pa.string()), nullable=False),
        pa.field("flags", pa.list_(pa.string()), nullable=False),
        pa.field("speech_start_sample", pa.int64(), nullable=False),  # unpadded speech span [start, end)
        pa.field("speech_end_sample", pa.int64(), nullable=False),
        pa.field("start_sample", pa.int64(), nullable=False),  # padded: the audio the segment holds
        pa.field("end_sample", pa.int64(), nullable=False),
        pa.field("offset_s", pa.float64(), nullable=False),  # start_sample / 16000
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),  # end_sample - start_sample
        pa.field("speech_samples", pa.int64(), nullable=False),  # samples of its packed speech pieces
        pa.field("pieces", pa.int32(), nullable=False),
        pa.field("forced_cut", pa.bool_(), nullable=False),
        pa.field("has_aligned_reference", pa.bool_(), nullable=False),
        pa.field("pcm_blake3", pa.string(), nullable=False),  # BLAKE3 of its int16 PCM (clean's hash)
        pa.field("rms_dbfs", pa.float64(), nullable=False),
        pa.field("peak_dbfs", pa.float64(), nullable=False),
        pa.field("clipped_fraction", pa.float64(), nullable=False),
        pa.field("clipped_samples", pa.int64(), nullable=False),
        pa.field("leading_silence_s", pa.float64(), nullable=False),
        pa.field("trailing_silence_s", pa.float64(), nullable=False),
        pa.field("tar_key", pa.string()),  # kept segments: where the member is
        pa.field("member_name", pa.string()),
        pa.field("member_offset", pa.int64()),  # byte offset of the FLAC data in the tar
        pa.field("member_size", pa.int64()),  # FLAC bytes
        pa.field("source_blake3", pa.string()),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("language", pa.string()),
        pa.field("speaker", pa.string()),
    ]
)

RECORDING_COLUMNS = tuple(RECORDINGS_SCHEMA.names)
SEGMENT_COLUMNS = tuple(SEGMENTS_SCHEMA.names)

# Parquet key-value metadata of recordings.parquet.
META_CONFIG = b"asr_distill.segment.config"
META_VERSION = b"asr_distill.segment.schema_version"
META_FINGERPRINT = b"asr_distill.segment.fingerprint"
META_SUMMARY = b"asr_distill.segment.summary"
