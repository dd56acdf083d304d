"""Clean-and-filter stage core (no Dagster): decode, measure, keep or quarantine with reasons.

Typical use (what the Dagster asset does)::

    rows = read_index_rows(lake, audio_index_key(partition))
    known = load_known_hashes(lake, kept_keys_of_partitions_cleaned_before)
    summary = run_clean(rows, raw, lake, kept_key=..., quarantine_key=..., config=CleanConfig(),
                        known_hashes=known, progress=lambda p: log.info(str(p)))
    metadata = summary.to_dict()
"""

from asr_distill.stages.clean.config import CHAR_LANGUAGES, CleanConfig
from asr_distill.stages.clean.core import (
    CleanProgress,
    KnownHashes,
    analyze_clip,
    clean_partition,
    default_workers,
    load_known_hashes,
    read_index_rows,
)
from asr_distill.stages.clean.metrics import TextStats, pcm16, subsampled_frames, text_stats
from asr_distill.stages.clean.schema import (
    CLEAN_KEPT_SCHEMA,
    CLEAN_QUARANTINE_SCHEMA,
    CLEAN_SCHEMA,
    FLAGS,
    REASONS,
)
from asr_distill.stages.clean.writer import (
    CleanSummary,
    Histogram,
    file_sha256,
    reusable_clean,
    run_clean,
    write_clean_tables,
)

__all__ = [
    "CHAR_LANGUAGES",
    "CLEAN_KEPT_SCHEMA",
    "CLEAN_QUARANTINE_SCHEMA",
    "CLEAN_SCHEMA",
    "FLAGS",
    "REASONS",
    "CleanConfig",
    "CleanProgress",
    "CleanSummary",
    "Histogram",
    "KnownHashes",
    "TextStats",
    "analyze_clip",
    "clean_partition",
    "default_workers",
    "file_sha256",
    "load_known_hashes",
    "pcm16",
    "read_index_rows",
    "reusable_clean",
    "run_clean",
    "subsampled_frames",
    "text_stats",
    "write_clean_tables",
]
