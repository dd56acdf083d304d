"""Columns of the manifest and dropped-samples tables."""

from __future__ import annotations

import pyarrow as pa

# One row per kept sample, ordered by (split, partition, bucket, shard_seq, position): the shards' order.
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("split", pa.string(), nullable=False),  # train | dev | test
        pa.field("partition", pa.string(), nullable=False),
        pa.field("shard_key", pa.string(), nullable=False),  # the tar's key in the lake
        pa.field("bucket", pa.string(), nullable=False),  # the shard's duration bucket label
        pa.field("bucket_lo_s", pa.float64(), nullable=False),
        pa.field("bucket_hi_s", pa.float64(), nullable=False),
        pa.field("shard_seq", pa.int32(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("sample_key", pa.string(), nullable=False),  # WebDataset __key__
        pa.field("source_key", pa.string(), nullable=False),  # the raw object it came from (a recording)
        # Provenance of segments of long recordings: segment key (null for a short clip), index in the
        # recording (-1 for a short clip), start in the recording in seconds (0.0 for a short clip).
        pa.field("segment_key", pa.string()),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("offset_s", pa.float64(), nullable=False),
        pa.field("audio_member", pa.string(), nullable=False),  # <sample_key>.flac
        pa.field("audio_offset", pa.int64(), nullable=False),  # byte offset of the member's data in the tar
        pa.field("audio_size", pa.int64(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),  # at sample_rate
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),  # num_samples / sample_rate
        pa.field("text", pa.string(), nullable=False),  # the teacher's label
        pa.field("language", pa.string(), nullable=False),  # primary subtag, "und" when unknown
        pa.field("speaker", pa.string()),
        pa.field("reference_text", pa.string()),  # the source's own transcript, when it had one
        pa.field("error_rate", pa.float64()),  # teacher vs reference (WER or CER)
        pa.field("error_metric", pa.string()),
        pa.field("flags", pa.list_(pa.string()), nullable=False),  # quality flags the label carries
        pa.field("teacher_fingerprint", pa.string(), nullable=False),
        pa.field("labels_version", pa.string(), nullable=False),
    ]
)

# One row per dropped sample (a sample is dropped under exactly one rule of config.DROP_RULES).
DROPPED_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("sample_key", pa.string(), nullable=False),
        pa.field("source_key", pa.string()),
        pa.field("shard_key", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("error_rate", pa.float64()),
        pa.field("flags", pa.list_(pa.string())),
    ]
)

META_RECORD = b"asr_distill.manifests.version"
