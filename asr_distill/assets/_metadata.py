"""Small helpers that turn stage summaries into Dagster metadata a person can read."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from asr_distill.data_quality.combine import Finding, combine_findings


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def md_counts(
    counts: Mapping[str, int], key_header: str, descriptions: Mapping[str, str] | None = None
) -> dg.MetadataValue:
    """A table of counts per reason, largest first, with optional descriptions."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return dg.MetadataValue.md("_none_")
    if descriptions:
        return md_table([key_header, "count", "meaning"], [(k, v, descriptions.get(k, "")) for k, v in items])
    return md_table([key_header, "count"], items)


def md_histogram(edges: Sequence[float], counts: Sequence[int], unit: str = "") -> dg.MetadataValue:
    """A histogram as a markdown table with text bars."""
    peak = max(counts) if counts else 0
    rows = []
    for i, n in enumerate(counts):
        lo, hi = edges[i], edges[i + 1]
        label = f"{lo:g}–{hi:g}{unit}" if hi != float("inf") else f"≥ {lo:g}{unit}"
        bar = "█" * (round(30 * n / peak) if peak else 0)
        rows.append((label, n, bar))
    return md_table(["bin", "count", ""], rows)


def md_kept_quarantined_histogram(
    labels: Sequence[str], kept: Sequence[int], quarantined: Sequence[int]
) -> dg.MetadataValue:
    """Per-bin counts of kept and quarantined items with text bars."""
    peak = max([*kept, *quarantined, 0])
    rows = []
    for label, k, q in zip(labels, kept, quarantined, strict=True):
        bar = "█" * (round(20 * k / peak) if peak else 0) + "░" * (round(20 * q / peak) if peak else 0)
        rows.append((label, k, q, bar))
    return md_table(["bin", "kept", "quarantined", "█ kept ░ quarantined"], rows)


def check_result(
    name: str, problems: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None
) -> dg.AssetCheckResult:
    """A check result that passes when ``problems`` is empty; shows the count and the first 10 problems."""
    meta: dict[str, Any] = {**(metadata or {}), "problems": len(problems)}
    if problems:
        sample = problems[:10]
        cols = list(dict.fromkeys(k for p in sample for k in p))
        meta["sample"] = md_table(cols, [[p.get(c, "") for c in cols] for p in sample])
    return dg.AssetCheckResult(check_name=name, passed=not problems, metadata=meta)


# (check name, problems, metadata) of one partition
PartitionFindings = Iterable[tuple[str, list[dict[str, Any]], dict[str, Any]]]


def partition_check_results(
    names: Iterable[str], partitions: Sequence[str], findings: Callable[[str], PartitionFindings]
) -> Iterator[dg.AssetCheckResult]:
    """One result per check name over every partition of a run (combined by
    :func:`asr_distill.data_quality.combine.combine_findings`).

    With one partition the result is that partition's problems and metadata. With several, the
    problems of all failing partitions (with a ``partition`` column), the integer metadata summed and a
    per-partition table of the scalar metadata; the check fails when any partition has a problem.
    """
    found: dict[str, list[tuple[str, Finding[dict[str, Any]]]]] = {n: [] for n in names}
    for partition in partitions:
        for name, problems, meta in findings(partition):
            status = "error" if problems else "pass"
            found[name].append(
                (partition, Finding(status, len(problems), rows=tuple(problems), metadata=meta))
            )
    for name in sorted(found):
        if not found[name]:  # a run without partitions: nothing was checked
            yield check_result(name, [], {"partitions": 0, "per_partition": md_table(["partition"], [])})
            continue
        run = combine_findings(found[name])
        if len(run.per_partition) == 1:
            ((_, only),) = run.per_partition
            yield check_result(name, list(only.rows), dict(only.metadata))
            continue
        problems = [{"partition": p, **q} for p, q in run.rows]
        columns = run.metadata_columns()
        table = md_table(
            ["partition", *columns],
            [[p, *(f.metadata.get(c, "") for c in columns)] for p, f in run.per_partition],
        )
        yield check_result(
            name, problems, {**run.totals(), "partitions": len(run.per_partition), "per_partition": table}
        )
