"""Columns of the ``audio_index`` Parquet table (one row per raw audio object)."""

from __future__ import annotations

import pyarrow as pa

from asr_distill.data_quality.bounds import Bounds

AUDIO_EXTENSIONS = frozenset({"wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "aac"})
SIDECAR_EXTENSIONS = frozenset({"txt", "json"})

# Reason codes written to ``probe_error`` (documented in the README).
PROBE_ERRORS = {
    "empty_object": "the object has zero bytes",
    "unrecognised_format": "no decoder recognises the bytes (e.g. a text file named .wav)",
    "malformed_header": "the container header is cut or inconsistent",
    "zero_channels": "the header declares no audio channels",
    "no_audio_data": "the header is fine but there is no decodable audio",
    "decode_error": "the decoder failed while reading audio data",
    "read_error": "the object could not be read from storage",
    "unaddressable_key": (
        "the object's name cannot be addressed safely (a control character such as a newline or tab, a "
        "backslash, a '.', '..' or empty segment, not UTF-8): listed but never read (detail: which)"
    ),
}

# Reason codes of objects the listing returns that get no row (``IndexSummary.ignored_reasons``).
IGNORED_REASONS = {
    "not_audio": "the extension is neither audio nor a sidecar (.txt/.json)",
    "directory_marker": "a zero-content key ending in '/' that consoles create for folders",
}

# A sidecar larger than this is not read (``sidecar_error = too_large``): transcripts are short, and a
# huge one would cost minutes of text statistics downstream. 1 MiB.
SIDECAR_MAX_BYTES = 1 << 20

# Reason codes written to ``sidecar_error`` (the audio row itself stays valid).
SIDECAR_ERRORS = {
    "not_utf8": "the sidecar is not valid UTF-8",
    "invalid_json": "the .json sidecar is not a JSON object",
    "bad_field": "a .json field has the wrong type (text, language and speaker must be strings)",
    "conflicting_sidecars": "both .txt and .json exist and disagree on the text (the .json wins)",
    "read_error": "the sidecar could not be read from storage",
    "too_large": "the sidecar is larger than SIDECAR_MAX_BYTES (1 MiB) and was not read",
    "too_deep": "the .json sidecar nests too deeply to parse (e.g. 1,000 levels of arrays)",
    "unaddressable_key": "the sidecar's name cannot be addressed safely (see probe_error unaddressable_key)",
}

# Plausible header values of a probed row (``probe_error`` null), checked by the pandera schema
# (validation.py) and the YAML checks (``{{ sample_rate_min }}`` ...). The probe and the decoder accept
# any positive rate (the clean stage resamples to 16 kHz); these bound what speech recordings use:
# 8 kHz telephony up to 384 kHz, the highest standard PCM rate. Anything outside is a corrupt header.
SAMPLE_RATE_HZ = Bounds(8_000, 384_000)
CHANNELS = Bounds(1, 32)

AUDIO_INDEX_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("etag", pa.string()),
        pa.field("mtime", pa.timestamp("us", tz="UTC")),
        pa.field("extension", pa.string(), nullable=False),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("frames", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("header_duration_s", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("language", pa.string()),
        pa.field("speaker", pa.string()),
        pa.field("sidecar_key", pa.string()),
        pa.field("sidecar_error", pa.string()),
        pa.field("probe_error", pa.string()),
        pa.field("probe_detail", pa.string()),
    ]
)
