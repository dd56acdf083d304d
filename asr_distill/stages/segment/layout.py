"""Names the segmentation stage gives inside its outputs: segment keys, recording names, tar member
names. Every lake key (tables, tars) is :mod:`asr_distill.lake`'s (``segmented_*_key``); this module
only composes :func:`tar_key` from it.

Lake layout, below ``segmented_audio/<partition>/`` (see :mod:`asr_distill.lake`)::

    recordings.parquet            one row per long recording (RECORDINGS_SCHEMA)
    segments.parquet              one row per segment, kept or quarantined (SEGMENTS_SCHEMA)
    tars/<recording name>.tar     the kept segments of one recording as 16 kHz FLAC members

``<recording name>`` is the shards' sample key of the source key
(:func:`asr_distill.stages.shards.layout.sample_key`: a slug plus 16 hex digits of the key's sha256),
so it is a safe object name; two recordings of a partition with the same name are refused.

Segment key: ``f"{source_key}#s{index:06d}"``, e.g. ``talks/ep1.flac#s000012``. Keys of one recording
sort in time order (the index is zero-padded and follows time), and the source key is recovered as
the part before the last ``#s``. Such a key can never be a raw key of the pipeline: every raw key the
index admits ends in ``.<audio extension>`` (:data:`~asr_distill.stages.index.schema.AUDIO_EXTENSIONS`),
while a segment key's last ``.`` is followed by ``<ext>#s<digits>``, never an audio extension
(:func:`segment_key` refuses a source key that is not an audio key, so the argument holds for every key
it returns; :func:`could_be_raw_key` is the check).
"""

from __future__ import annotations

from asr_distill import lake
from asr_distill.stages.index.schema import AUDIO_EXTENSIONS
from asr_distill.stages.shards.layout import sample_key

SEGMENT_SEP = "#s"
INDEX_DIGITS = 6
MAX_SEGMENTS = 10**INDEX_DIGITS  # >= 12 h / 1024 samples (the shortest possible segment plus gap)


def recording_name(source_key: str, partition: str) -> str:
    return sample_key(source_key, partition)


def tar_key(partition: str, source_key: str) -> str:
    """The tar of ``source_key``'s kept segments (:func:`asr_distill.lake.segmented_tar_key`)."""
    return lake.segmented_tar_key(partition, recording_name(source_key, partition))


def key_extension(key: str) -> str:
    """The index's idea of a key's extension (lower case, "" when none)."""
    name = key.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else ""


def could_be_raw_key(key: str) -> bool:
    """Whether the index could hold an audio object under ``key``."""
    return key_extension(key) in AUDIO_EXTENSIONS


def segment_key(source_key: str, index: int) -> str:
    """The key of segment ``index`` of recording ``source_key`` (rule in the module docstring)."""
    if not could_be_raw_key(source_key):
        raise ValueError(f"{source_key!r} is not an audio key of the index (no audio extension)")
    if not 0 <= index < MAX_SEGMENTS:
        raise ValueError(f"segment index {index} out of range (max {MAX_SEGMENTS - 1})")
    return f"{source_key}{SEGMENT_SEP}{index:0{INDEX_DIGITS}d}"


def source_of(seg_key: str) -> str:
    """The source key of a segment key."""
    head, sep, tail = seg_key.rpartition(SEGMENT_SEP)
    if not sep or len(tail) != INDEX_DIGITS or not tail.isdigit():
        raise ValueError(f"{seg_key!r} is not a segment key")
    return head


def member_name(index: int) -> str:
    """Name of segment ``index``'s FLAC member inside its recording's tar (ASCII, fits ustar)."""
    return f"s{index:0{INDEX_DIGITS}d}.flac"
