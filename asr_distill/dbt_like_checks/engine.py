"""Evaluate one :class:`CheckSpec` as SQL in DuckDB over lake Parquet (plain Python, no Dagster).

Tables are resolved through :func:`asr_distill.lake.table_keys` and exposed to DuckDB as views named
after the table (``read_parquet([...], union_by_name = true)``; remote objects are copied locally
for the duration of the check). The asset's own table with no object for the checked partition(s)
is a failed evaluation (the asset did not write its output), as is any other table a test reads
that has no object, an unknown table, or a SQL error: the outcome then carries ``problem`` and
fails with the test's severity.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb

from asr_distill import lake
from asr_distill.data_quality.combine import Finding, combine
from asr_distill.dbt_like_checks import sqlutil
from asr_distill.dbt_like_checks.spec import CheckSpec
from asr_distill.storage import Storage

Status = Literal["pass", "warn", "error"]
SAMPLE_ROWS = 5
_MAX_CELL = 80
_GLOB_CHARS = set("*?[]{}")

_CONSIDERED = f"{sqlutil.RESERVED_PREFIX}_considered"
_FAILING = f"{sqlutil.RESERVED_PREFIX}_failing"
_DUPES = f"{sqlutil.RESERVED_PREFIX}_dupes"


@dataclass(frozen=True)
class CheckOutcome:
    """What one evaluation found; ``status`` already applies severity and thresholds."""

    spec: CheckSpec
    status: Status
    failures: int
    rows_considered: int
    message: str
    sql: str = ""
    partitions: tuple[str, ...] | None = None
    objects: dict[str, int] = field(default_factory=dict)  # table -> number of Parquet objects read
    sample_columns: tuple[str, ...] = ()
    sample_rows: tuple[tuple[Any, ...], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # test-specific numbers (row_count, expected, ...)
    problem: str | None = None  # set when the test could not be evaluated

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failure_pct(self) -> float | None:
        if self.spec.test == "row_count" or self.problem is not None:
            return None
        return 100.0 * self.failures / self.rows_considered if self.rows_considered else 0.0

    def sample_markdown(self) -> str:
        """The sample of failing rows as a markdown table ('' when there is none)."""
        if not self.sample_columns or not self.sample_rows:
            return ""
        header = "| " + " | ".join(_md_cell(c) for c in self.sample_columns) + " |"
        rule = "|" + "|".join("---" for _ in self.sample_columns) + "|"
        body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in self.sample_rows]
        return "\n".join([header, rule, *body])


def _md_cell(value: Any) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, bytes | bytearray | memoryview):
        text = f"<{len(bytes(value))} bytes>"
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    else:
        text = str(value)
    text = " ".join(text.split())  # newlines and tabs would break the table
    if len(text) > _MAX_CELL:
        text = text[: _MAX_CELL - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|")


def decide(spec: CheckSpec, failures: int, considered: int) -> Status:
    """dbt semantics: error if severity=error and error_if holds; else warn if warn_if holds; else pass."""
    if spec.severity == "error" and spec.error_if.matches(failures, considered):
        return "error"
    if spec.warn_if.matches(failures, considered):
        return "warn"
    return "pass"


# -- SQL compilation ------------------------------------------------------------------------------------
def _value_sql(value: int | float | str, *, quote: bool = True) -> str:
    if isinstance(value, str):
        return sqlutil.quote_str(value) if quote else sqlutil.wrap_fragment(value)
    return sqlutil.number_literal(value)


def compile_failing_sql(spec: CheckSpec) -> str:
    """The query returning the rows that fail the test (for row_count: the observed/expected pair)."""
    ctes, body = _compile(spec)
    return "WITH " + ",\n".join(ctes) + "\n" + body


def _compile(spec: CheckSpec) -> tuple[list[str], str]:
    """CTEs (the considered rows first) and the final SELECT of the failing rows."""
    q = sqlutil.quote_ident
    considered = f"SELECT * FROM {q(spec.table)}"
    if spec.where:
        considered += f"\nWHERE {sqlutil.wrap_fragment(spec.where)}"
    ctes = [f"{_CONSIDERED} AS (\n{considered}\n)"]
    col = q(spec.column) if spec.column is not None else None
    a = spec.args
    if spec.test == "not_null":
        body = f"SELECT * FROM {_CONSIDERED} WHERE {col} IS NULL"
    elif spec.test == "unique":
        cols = [q(c) for c in a["columns"]]
        not_null = " AND ".join(f"{c} IS NOT NULL" for c in cols)
        ctes.append(
            f"{_DUPES} AS (\nSELECT {', '.join(cols)} FROM {_CONSIDERED} WHERE {not_null}\n"
            f"GROUP BY ALL HAVING count(*) > 1\n)"
        )
        on = " AND ".join(f"c.{c} = d.{c}" for c in cols)
        body = f"SELECT c.* FROM {_CONSIDERED} AS c SEMI JOIN {_DUPES} AS d ON {on}"
    elif spec.test == "accepted_values":
        values = ", ".join(_value_sql(v, quote=a["quote"]) for v in a["values"])
        body = f"SELECT * FROM {_CONSIDERED} WHERE {col} IS NOT NULL AND {col} NOT IN ({values})"
    elif spec.test == "accepted_range":
        lo_op, hi_op = (">=", "<=") if a["inclusive"] else (">", "<")
        bounds = []
        if a["min_value"] is not None:
            bounds.append(f"{col} {lo_op} {_value_sql(a['min_value'], quote=False)}")
        if a["max_value"] is not None:
            bounds.append(f"{col} {hi_op} {_value_sql(a['max_value'], quote=False)}")
        body = f"SELECT * FROM {_CONSIDERED} WHERE {col} IS NOT NULL AND NOT ({' AND '.join(bounds)})"
    elif spec.test == "relationships":
        field_ = q(a["field"])
        body = (
            f"SELECT * FROM {_CONSIDERED} WHERE {col} IS NOT NULL AND {col} NOT IN "
            f"(SELECT {field_} FROM {q(a['to'])} WHERE {field_} IS NOT NULL)"
        )
    elif spec.test == "expression_is_true":
        if col is None:
            body = f"SELECT * FROM {_CONSIDERED} WHERE {sqlutil.wrap_fragment(a['expression'])} IS NOT TRUE"
        else:
            expr = sqlutil.wrap_fragment(f"{col} {a['expression']}")
            body = f"SELECT * FROM {_CONSIDERED} WHERE {col} IS NOT NULL AND {expr} IS NOT TRUE"
    elif spec.test == "row_count":
        expected = "NULL" if a["equals"] is None else _value_sql(a["equals"], quote=False)
        body = f"SELECT (SELECT count(*) FROM {_CONSIDERED}) AS row_count, {expected} AS expected"
    else:  # pragma: no cover - the parser only produces known tests
        raise ValueError(f"unknown test {spec.test!r}")
    return ctes, body


def _with_failing(spec: CheckSpec, final: str) -> str:
    ctes, body = _compile(spec)
    return "WITH " + ",\n".join([*ctes, f"{_FAILING} AS (\n{body}\n)"]) + "\n" + final


def _count_sql(spec: CheckSpec) -> str:
    """Rows considered and failing rows in one query (plus the number of duplicated keys for unique)."""
    extra = f", (SELECT count(*) FROM {_DUPES})" if spec.test == "unique" else ""
    return _with_failing(
        spec, f"SELECT (SELECT count(*) FROM {_CONSIDERED}), (SELECT count(*) FROM {_FAILING}){extra}"
    )


def _sample_sql(spec: CheckSpec, n_columns: int) -> str:
    """The first failing rows in a deterministic order (the key columns for unique, then every column)."""
    order = [sqlutil.quote_ident(c) for c in spec.args["columns"]] if spec.test == "unique" else []
    order += [str(i) for i in range(1, n_columns + 1)]
    return _with_failing(spec, f"SELECT * FROM {_FAILING} ORDER BY {', '.join(order)} LIMIT {SAMPLE_ROWS}")


# -- table loading --------------------------------------------------------------------------------------
class _EvalProblem(Exception):
    pass


def _resolve(table: str, store: Storage, partitions: Sequence[str] | None) -> list[str]:
    try:
        if partitions is None:
            return sorted(set(lake.table_keys(table, store, None)))
        keys: set[str] = set()
        for partition in partitions:
            keys.update(lake.table_keys(table, store, partition))
        return sorted(keys)
    except KeyError as exc:
        raise _EvalProblem(str(exc.args[0]) if exc.args else str(exc)) from None


@contextlib.contextmanager
def _local_files(store: Storage, keys: list[str]) -> Iterator[list[str]]:
    """Local paths DuckDB can read for ``keys``: zero-copy where the store has them, else copies.

    DuckDB expands glob characters in file names, so such paths are reached through a symlink.
    """
    with contextlib.ExitStack() as stack:
        paths: list[str] = []
        link_dir: str | None = None
        for i, key in enumerate(keys):
            path = store.local_path(key)
            if path is None:
                path = stack.enter_context(store.local_copy(key, suffix=".parquet"))
            elif not path.is_file():
                raise _EvalProblem(f"{store.url(key)} was listed for the table but does not exist")
            text = str(path)
            if _GLOB_CHARS & set(text):
                if link_dir is None:
                    link_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="asrd-checks-"))
                link = Path(link_dir) / f"{i:08d}.parquet"
                os.symlink(path, link)
                text = str(link)
            paths.append(text)
        yield paths


def _scope_text(partitions: Sequence[str] | None) -> str:
    if partitions is None:
        return "all partitions"
    return "partition " + ", ".join(repr(p) for p in partitions)


def run_check_sql(
    spec: CheckSpec, store: Storage, partition: str | Sequence[str] | None = None
) -> CheckOutcome:
    """Evaluate ``spec`` over the lake ``store`` for ``partition`` (a key, several keys, or None = all).

    Never raises for data problems: missing outputs, unknown tables and SQL errors come back as an
    outcome with ``problem`` set and the test's severity.
    """
    partitions: tuple[str, ...] | None
    partitions = (
        (partition,) if isinstance(partition, str) else (tuple(partition) if partition is not None else None)
    )
    own_parts = partitions if spec.table_scope == "same" else None
    other_parts = partitions if spec.other_scope == "same" else None
    failing_sql = compile_failing_sql(spec)
    objects: dict[str, int] = {}

    def problem_outcome(text: str) -> CheckOutcome:
        status: Status = "error" if spec.severity == "error" else "warn"
        return CheckOutcome(
            spec, status, 0, 0, f"could not evaluate: {text}", failing_sql, partitions, objects, problem=text
        )

    try:
        tree = sqlutil.parse_select(failing_sql)
    except sqlutil.SqlFragmentError as exc:
        return problem_outcome(f"the compiled SQL does not parse: {exc}")
    registry = {name.lower(): name for name in lake.registered_tables()}
    needed = {spec.table.lower(): spec.table}
    for name in sorted(sqlutil.referenced_tables(tree)):
        if name == spec.table.lower() or name.startswith(sqlutil.RESERVED_PREFIX):
            continue
        if name not in registry:
            return problem_outcome(
                f"the test reads {name!r}, which is not a lake table (known: {', '.join(sorted(registry.values()))})"
            )
        needed[name] = registry[name]

    con = duckdb.connect(":memory:")
    try:
        with contextlib.ExitStack() as stack:
            for lower, table in needed.items():
                is_own = lower == spec.table.lower()
                parts = own_parts if is_own else other_parts
                keys = _resolve(table, store, parts)
                if not keys:
                    if is_own:
                        raise _EvalProblem(
                            f"no output of table {table!r} for {_scope_text(parts)} in {store.url()}: "
                            f"the asset {spec.asset_path!r} did not write its output"
                        )
                    raise _EvalProblem(
                        f"table {table!r} (read by the test) has no output for {_scope_text(parts)}"
                    )
                paths = stack.enter_context(_local_files(store, keys))
                files = ", ".join(sqlutil.quote_str(p) for p in paths)
                con.execute(
                    f"CREATE VIEW {sqlutil.quote_ident(table)} AS "
                    f"SELECT * FROM read_parquet([{files}], union_by_name = true)"
                )
                objects[table] = len(keys)
            return _evaluate(spec, con, failing_sql, partitions, objects)
    except _EvalProblem as exc:
        return problem_outcome(str(exc))
    except duckdb.Error as exc:
        return problem_outcome(f"DuckDB error: {exc}")
    finally:
        con.close()


def _evaluate(
    spec: CheckSpec,
    con: duckdb.DuckDBPyConnection,
    failing_sql: str,
    partitions: tuple[str, ...] | None,
    objects: dict[str, int],
) -> CheckOutcome:
    a = spec.args
    if spec.test == "row_count":
        actual, expected = con.execute(failing_sql).fetchone()
        extra: dict[str, Any] = {"row_count": int(actual)}
        reasons = []
        if a["equals"] is not None:
            extra["expected"] = expected
            if expected is None:
                reasons.append(f"the expected value ({a['equals']}) is NULL")
            elif actual != expected:
                reasons.append(f"row count {actual} != expected {expected}")
        if a["min"] is not None and actual < a["min"]:
            reasons.append(f"row count {actual} < min {a['min']}")
        if a["max"] is not None and actual > a["max"]:
            reasons.append(f"row count {actual} > max {a['max']}")
        failures = 1 if reasons else 0
        status = decide(spec, failures, 1)
        message = "; ".join(reasons) if reasons else f"row count {actual} is as expected"
        return CheckOutcome(
            spec, status, failures, int(actual), message, failing_sql, partitions, objects, extra=extra
        )

    row = con.execute(_count_sql(spec)).fetchone()
    considered, failures = int(row[0]), int(row[1])
    extra = {"duplicate_keys": int(row[2])} if spec.test == "unique" else {}
    status = decide(spec, failures, considered)
    pct = 100.0 * failures / considered if considered else 0.0
    message = f"{failures} failing row{'s' if failures != 1 else ''} of {considered} ({pct:.2f}%)"
    if status == "error":
        message += f": error_if {spec.error_if} holds"
    elif status == "warn":
        message += f": warn_if {spec.warn_if} holds"
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    if failures:
        n_columns = len(con.execute(_with_failing(spec, f"SELECT * FROM {_FAILING} LIMIT 0")).description)
        cursor = con.execute(_sample_sql(spec, n_columns))
        columns = tuple(d[0] for d in cursor.description)
        rows = tuple(tuple(r) for r in cursor.fetchall())
    return CheckOutcome(
        spec, status, failures, considered, message, failing_sql, partitions, objects, columns, rows, extra
    )


def run_check_per_partition(
    spec: CheckSpec, store: Storage, partitions: Sequence[str] | None
) -> CheckOutcome:
    """Evaluate ``spec`` for every partition on its own and combine the outcomes (a multi-partition run).

    Combined by :func:`asr_distill.data_quality.combine.combine`: thresholds apply per partition, the
    status is the worst one, and the sample of failing rows (with a ``partition`` column) comes from the
    failing partitions, worst first.
    """
    if partitions is None or len(partitions) <= 1:
        return run_check_sql(spec, store, partitions)
    outcomes: dict[str, CheckOutcome] = {}

    def evaluate(partition: str) -> Finding[tuple[Any, ...]]:
        o = outcomes[partition] = run_check_sql(spec, store, partition)
        return Finding(o.status, o.failures, o.rows_considered, o.message, o.sample_rows, problem=o.problem)

    run = combine(partitions, evaluate)
    worst = outcomes[run.worst[0]]
    objects: dict[str, int] = {}
    for o in outcomes.values():
        for table, n in o.objects.items():
            objects[table] = objects.get(table, 0) + n
    columns = next((outcomes[p].sample_columns for p, _ in run.failing if outcomes[p].sample_columns), ())
    rows = [(p, *row) for p, row in run.rows if outcomes[p].sample_columns == columns][:SAMPLE_ROWS]
    return CheckOutcome(
        spec=spec,
        status=run.status,
        failures=run.failures,
        rows_considered=run.considered,
        message=run.message,
        sql=worst.sql,
        partitions=run.partitions,
        objects=objects,
        sample_columns=("partition", *columns) if columns and rows else (),
        sample_rows=tuple(rows) if columns else (),
        extra={"partitions_failing": run.failing_summary},
        problem=run.problem,
    )
