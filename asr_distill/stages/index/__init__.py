"""Index stage core (no Dagster): every raw audio object of a partition's prefix -> one Parquet row.

Entry point (what the Dagster asset does)::

    summary = run_index(raw, lake, partition, IndexOptions(), force=False, progress=log_it)

Reuse: when the prefix listing (keys, sizes, versions) is unchanged since the last index, the existing
index is kept (``summary.skipped``). Probing: :mod:`asr_distill.stages.index.probe`; the table:
:mod:`asr_distill.stages.index.schema`.
"""

from asr_distill.stages.index.build import IndexOptions, IndexSummary, build_index, run_index

__all__ = ["IndexOptions", "IndexSummary", "build_index", "run_index"]
