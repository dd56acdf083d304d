"""The clean stage's entry point: :func:`run_clean` cleans one partition's index into its three tables."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from asr_distill import lake as layout
from asr_distill.hashing import bytes_hex
from asr_distill.stages._procpool import ExecutorSpec
from asr_distill.stages.clean.config import CleanConfig
from asr_distill.stages.clean.core import index_table_rows, load_known_hashes
from asr_distill.stages.clean.writer import CleanSummary, clean_to_tables, reusable_clean
from asr_distill.stages.leftovers import sweep_stage_folder
from asr_distill.stages.progress import ProgressFn, Reporter
from asr_distill.storage import Storage


def run_clean(
    raw: Storage,
    lake: Storage,
    partition: str,
    config: CleanConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: ExecutorSpec = "process",
    cross_partition_dedup: bool = True,
) -> CleanSummary:
    """Decode, measure and keep, route to long-form or quarantine every clip of ``partition``'s
    ``audio_index`` (``kept + long_form + quarantined = indexed``).

    With ``cross_partition_dedup`` (and ``config.dedup``), clips whose content equals a clip kept, or
    a recording routed to long-form, by a partition cleaned before (any other ``cleaned_audio`` kept or
    long-form table in the lake, also ones written earlier in the same run) are quarantined as duplicates. The existing tables are kept when the index
    file, the rules and the relevant known duplicates are unchanged (``summary.reused``), unless ``force``.
    """
    cfg = config or CleanConfig()
    say = Reporter("clean", partition, progress)
    kept_key, quarantine_key = layout.cleaned_kept_key(partition), layout.cleaned_quarantine_key(partition)
    long_form_key = layout.cleaned_long_form_key(partition)
    index_key = layout.audio_index_key(partition)
    swept = sweep_stage_folder(lake, kept_key.rpartition("/")[0] + "/", say)
    others: list[str] = []
    if cross_partition_dedup and cfg.dedup:
        # Clips kept and long-form recordings passed by other partitions: a whole recording that
        # another partition already hands to segmentation is a duplicate too.
        mine = {kept_key, long_form_key}
        tables = [*layout.table_keys("cleaned", lake, None), *layout.table_keys("long_form", lake, None)]
        others = [k for k in tables if k not in mine]
    stale: list[str] = []
    known = load_known_hashes(lake, others, stale)
    if stale:
        say(
            f"{partition}: {len(stale)} other partitions' tables predate BLAKE3 content hashes (no "
            f"pcm_blake3; e.g. {stale[0]}): not used for duplicate detection until they are cleaned again"
        )
    # One GET of the index serves its checksum (the reuse decision) and, when cleaning, its rows.
    index_bytes = lake.read_bytes(index_key)
    index_blake3 = bytes_hex(index_bytes)
    reused = None
    if not force:
        reused = reusable_clean(
            lake,
            kept_key=kept_key,
            quarantine_key=quarantine_key,
            index_blake3=index_blake3,
            config=cfg,
            known_hashes=known,
            long_form_key=long_form_key,
        )
    if reused is not None:
        summary = reused
        summary.reused = True
        say(
            f"{partition}: index, rules and known duplicates unchanged since the last clean "
            f"({summary.total} clips); not decoded again"
        )
    else:
        say(f"{partition}: cleaning; {len(known)} hashes known from {len(others)} other partitions")
        summary = clean_to_tables(
            index_table_rows(pq.read_table(pa.BufferReader(index_bytes))),
            raw,
            lake,
            kept_key=kept_key,
            quarantine_key=quarantine_key,
            config=cfg,
            known_hashes=known,
            workers=workers,
            executor=executor,
            progress=lambda p: say(str(p), done=p.done, elapsed_s=p.elapsed_s),
            index_blake3=index_blake3,
            long_form_key=long_form_key,
        )
    summary.known_hashes = len(known)
    summary.swept_temporaries = swept.removed
    say(summary.funnel_text())
    return summary
