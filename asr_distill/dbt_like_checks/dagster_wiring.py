"""Compile :class:`CheckSpec` objects into Dagster asset checks (one check per test, one step per asset)."""

from collections.abc import Iterable
from typing import Any

import dagster as dg

from asr_distill.dbt_like_checks.engine import CheckOutcome, run_check_per_partition
from asr_distill.dbt_like_checks.spec import CheckSpec
from asr_distill.partitions import run_partition_keys
from asr_distill.storage import Storage


def _store_of(resource: Any) -> Storage:
    """The lake :class:`Storage` behind a resource (a StorageResource-like ``.get()``, or a Storage)."""
    if isinstance(resource, Storage):
        return resource
    getter = getattr(resource, "get", None)
    if callable(getter):
        store = getter()
        if isinstance(store, Storage):
            return store
    raise TypeError(
        f"the lake resource must be a StorageResource or a Storage, got {type(resource).__name__}"
    )


def outcome_metadata(outcome: CheckOutcome) -> dict[str, Any]:
    """Metadata for the check result: counts, thresholds, the SQL and a sample of failing rows."""
    spec = outcome.spec
    meta: dict[str, Any] = {
        "failures": dg.MetadataValue.int(outcome.failures),
        "rows_considered": dg.MetadataValue.int(outcome.rows_considered),
        "partition": dg.MetadataValue.text(
            ", ".join(outcome.partitions) if outcome.partitions is not None else "(all)"
        ),
        "severity": dg.MetadataValue.text(spec.severity),
        "error_if": dg.MetadataValue.text(str(spec.error_if)),
        "warn_if": dg.MetadataValue.text(str(spec.warn_if)),
        "sql": dg.MetadataValue.md(f"```sql\n{outcome.sql}\n```"),
        "parquet_objects": dg.MetadataValue.json(dict(outcome.objects)),
    }
    pct = outcome.failure_pct
    if pct is not None:
        meta["failure_pct"] = dg.MetadataValue.float(round(pct, 6))
    for key, value in outcome.extra.items():
        if isinstance(value, bool) or value is None:
            meta[key] = dg.MetadataValue.text(str(value))
        elif isinstance(value, int):
            meta[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            meta[key] = dg.MetadataValue.float(value)
        else:
            meta[key] = dg.MetadataValue.text(str(value))
    if outcome.problem is not None:
        meta["problem"] = dg.MetadataValue.text(outcome.problem)
    sample = outcome.sample_markdown()
    if sample:
        meta["sample_failing_rows"] = dg.MetadataValue.md(sample)
    return meta


def outcome_to_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if outcome.status == "error" else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        metadata=outcome_metadata(outcome),
        description=outcome.message,
    )


def _spec_of(spec: CheckSpec, partitions_def: dg.PartitionsDefinition | None) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        spec.name,
        asset=dg.AssetKey(list(spec.asset_key)),
        description=spec.description or spec.summary(),
        blocking=spec.blocking,
        partitions_def=partitions_def,
        metadata={
            "test": spec.test,
            "table": spec.table,
            "column": spec.column or "",
            "severity": spec.severity,
            "defined_at": f"{spec.source}:{spec.line}",
        },
    )


def _build_for_asset(
    asset_path: str,
    specs: list[CheckSpec],
    lake_resource_key: str,
    partitions_def: dg.PartitionsDefinition | None,
) -> dg.AssetChecksDefinition:
    """All declarative tests of one asset in one step; each test is its own (subsettable) check."""
    by_key = {dg.AssetCheckKey(dg.AssetKey(list(s.asset_key)), s.name): s for s in specs}
    step_name = "dbt_like_checks__" + asset_path.replace("/", "__")

    @dg.multi_asset_check(
        name=step_name,
        specs=[_spec_of(s, partitions_def) for s in specs],
        can_subset=True,
        required_resource_keys={lake_resource_key},
        description=f"declarative checks of {asset_path} ({len(specs)} tests, DuckDB)",
    )
    def _checks(context: dg.AssetCheckExecutionContext):  # type: ignore[no-untyped-def]
        store = _store_of(getattr(context.resources, lake_resource_key))
        partitions = run_partition_keys(context) or None
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
            spec = by_key[check_key]
            outcome = run_check_per_partition(spec, store, partitions)
            log = context.log.info if outcome.passed else context.log.warning
            log(f"{spec.asset_path}:{spec.name}: {outcome.status}: {outcome.message}")
            result = outcome_to_result(outcome)
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=check_key.name,
                passed=result.passed,
                severity=result.severity,
                metadata=result.metadata,
                description=result.description,
            )

    return _checks


def build_asset_checks(
    specs: Iterable[CheckSpec],
    *,
    lake_resource_key: str = "lake",
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetChecksDefinition]:
    """One Dagster asset check per spec, grouped in one step per asset; ``error`` tests are blocking.

    ``partitions_def`` (when given) must be the checked assets' partitions definition; either way a
    check evaluates the partition(s) of the run it executes in.
    """
    grouped: dict[str, list[CheckSpec]] = {}
    for spec in specs:
        grouped.setdefault(spec.asset_path, []).append(spec)
    return [
        _build_for_asset(path, group, lake_resource_key, partitions_def)
        for path, group in sorted(grouped.items())
    ]
