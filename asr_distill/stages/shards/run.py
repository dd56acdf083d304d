"""The shards stage's entry point: :func:`run_shards` writes one partition's kept clips (and the kept
segments of its long recordings, when the segmentation stage wrote a segments table) into shards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from asr_distill import lake as layout
from asr_distill.stages._procpool import ExecutorSpec
from asr_distill.stages.leftovers import sweep_stage_folder
from asr_distill.stages.progress import ProgressFn, Reporter
from asr_distill.stages.shards.config import ShardConfig
from asr_distill.stages.shards.plan import SEGMENT_COLUMNS
from asr_distill.stages.shards.writer import ShardSummary, write_shards
from asr_distill.storage import Storage
from asr_distill.tableio import read_table


def read_kept_segments(lake: Storage, partition: str) -> pa.Table | None:
    """The partition's kept segment rows (the columns the plan reads), or None when the partition has
    no segments table (no long recordings were segmented: the shards hold the short clips only)."""
    key = layout.segmented_segments_key(partition)
    if not lake.exists(key):
        return None
    table = read_table(lake, key, columns=list(SEGMENT_COLUMNS))
    return table.filter(pc.equal(table.column("keep"), True))


def run_shards(
    raw: Storage,
    lake: Storage,
    partition: str,
    config: ShardConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    executor: ExecutorSpec = "process",
) -> ShardSummary:
    """Shard the clean stage's kept clips of ``partition`` (audio decoded again from ``raw``) and the
    kept segments of ``segmented_audio/<p>/segments.parquet`` when it exists (audio read by byte range
    from the segment tars in ``lake``).

    Shards a previous run committed are reused while they match the plan (same config fingerprint, same
    samples, same size and BLAKE3 checksum); ``force`` rewrites every shard.
    """
    say = Reporter("shards", partition, progress)
    swept = sweep_stage_folder(lake, layout.shard_layout(partition).prefix, say)
    kept = read_table(lake, layout.cleaned_kept_key(partition))
    segments = read_kept_segments(lake, partition)
    n_segments = 0 if segments is None else segments.num_rows
    say(f"{partition}: sharding {kept.num_rows} kept clips and {n_segments} kept segments")
    s = write_shards(
        kept,
        partition,
        lake,
        segments=segments,
        raw=raw,
        config=config,
        workers=workers,
        executor=executor,
        reuse=not force,
        progress=lambda p: say(str(p), done=p.done, total=p.total, elapsed_s=p.elapsed_s),
    )
    s.input_rows = kept.num_rows
    s.input_segments = n_segments
    s.swept_temporaries = swept.removed
    say(
        f"{partition}: {s.samples} samples in {s.shards} shards ({s.shards_written} written, "
        f"{s.shards_reused} reused), {s.bytes_written / 1e6:.1f} MB written in {s.elapsed_s:.1f}s"
    )
    return s
