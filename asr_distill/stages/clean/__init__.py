"""Clean-and-filter stage core (no Dagster): decode, measure, keep or quarantine with reasons.

Entry point (what the Dagster asset does)::

    summary = run_clean(raw, lake, partition, CleanConfig(), force=False, progress=log_it, workers=None)
    summary.kept, summary.funnel, summary.reused ...

Lower level: :func:`clean_to_tables` cleans given index rows into two given table keys.
"""

from asr_distill.language import CHAR_LANGUAGES
from asr_distill.stages.clean.config import CleanConfig
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
from asr_distill.stages.clean.run import run_clean
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
    clean_to_tables,
    reusable_clean,
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
    "clean_to_tables",
    "default_workers",
    "load_known_hashes",
    "pcm16",
    "read_index_rows",
    "reusable_clean",
    "run_clean",
    "subsampled_frames",
    "text_stats",
    "write_clean_tables",
]
