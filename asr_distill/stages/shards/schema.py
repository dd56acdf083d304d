"""Columns of the shards stage's two Parquet tables and the wids index it writes next to them."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "3"  # 3: BLAKE3 (the shard table's blake3, the index's pcm_blake3)
META_CONFIG = b"asr_distill.shards.config"
META_FINGERPRINT = b"asr_distill.shards.config_fingerprint"
META_VERSION = b"asr_distill.shards.schema_version"

# One row per sample, in shard order (bucket, seq, position). Offsets are byte offsets in the shard:
# ``*_header_offset`` is the member's 512-byte tar header, ``*_offset`` its data (header + 512), so
# ``read_range(shard_key, audio_offset, audio_size)`` returns the audio file.
SAMPLE_INDEX_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("shard_key", pa.string(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("bucket_lo_s", pa.float64(), nullable=False),
        pa.field("bucket_hi_s", pa.float64(), nullable=False),
        pa.field("shard_seq", pa.int32(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),  # sample's position in its shard
        pa.field("sample_key", pa.string(), nullable=False),
        # The raw object the audio comes from: the clip itself, or a segment's long recording.
        pa.field("source_key", pa.string(), nullable=False),
        # Segments of long recordings: the segment key (null for a short clip), its index in the
        # recording (-1 for a short clip) and where it starts in the recording (0.0 for a short clip).
        pa.field("segment_key", pa.string()),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("offset_s", pa.float64(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("pcm_blake3", pa.string(), nullable=False),
        pa.field("audio_member", pa.string(), nullable=False),
        pa.field("audio_header_offset", pa.int64(), nullable=False),
        pa.field("audio_offset", pa.int64(), nullable=False),
        pa.field("audio_size", pa.int64(), nullable=False),
        pa.field("json_member", pa.string(), nullable=False),
        pa.field("json_header_offset", pa.int64(), nullable=False),
        pa.field("json_offset", pa.int64(), nullable=False),
        pa.field("json_size", pa.int64(), nullable=False),
    ]
)

# One row per shard, in (bucket, seq) order.
SHARD_TABLE_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("shard_key", pa.string(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("bucket_lo_s", pa.float64(), nullable=False),
        pa.field("bucket_hi_s", pa.float64(), nullable=False),
        pa.field("shard_seq", pa.int32(), nullable=False),
        pa.field("nsamples", pa.int64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("blake3", pa.string(), nullable=False),  # whole-file BLAKE3 (b3sum)
        pa.field("first_sample_key", pa.string(), nullable=False),
        pa.field("last_sample_key", pa.string(), nullable=False),
        pa.field("config_fingerprint", pa.string(), nullable=False),
    ]
)

WIDS_KIND = "wids-shard-index-v1"
COMMIT_KIND = "asr_distill.shards.commit"
COMMIT_VERSION = 3  # 3: BLAKE3 checksums and content hashes
