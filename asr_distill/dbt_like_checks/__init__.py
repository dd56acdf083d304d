"""Declarative, dbt-style data tests on lake tables, run as Dagster asset checks in DuckDB.

Check files (``checks/*.yaml``) list, per Dagster asset, generic tests on its lake *table* (a name in
the :mod:`asr_distill.lake` registry; defaults to the last part of the asset key)::

    version: 1
    assets:
      - asset: audio_index            # Dagster asset key, '/'-separated for several parts
        table: audio_index            # optional
        partition: same               # optional: same (default) | all -- how this table is read
        tests:                        # table-level: row_count, unique (columns: [...]), expression_is_true
          - row_count: {min: 1}
        columns:
          - name: key
            tests: [not_null, unique]

Each test becomes one asset check named ``<table>__<column>__<test>`` (``<table>__<test>`` for
table tests, ``..__relationships_<to>`` for relationships; override with ``name:``).

Tests and what a *failing row* is (rows considered = rows of the table that pass ``where``):

* ``not_null``: the column is NULL.
* ``unique`` (a column, or ``columns: [...]`` at table level): every row whose key occurs more than
  once; rows with a NULL in the key are ignored (pair with ``not_null``). ``duplicate_keys`` is
  reported too.
* ``accepted_values`` (``values``, ``quote`` = true): a non-NULL value not in the list. With
  ``quote: false`` string values are inserted as SQL expressions; numbers are always numbers.
* ``accepted_range`` (``min_value``, ``max_value``, ``inclusive`` = true): a non-NULL value outside the
  bounds; bounds are numbers or SQL expressions.
* ``relationships`` (``to``, ``field``): a non-NULL value absent from ``to.field``.
* ``expression_is_true`` (``expression``): at table level, a row where the boolean SQL expression is
  not TRUE (NULL fails); at column level the expression follows the column (``expression: ">= 0"``)
  and rows where the column is NULL are skipped.
* ``row_count`` (``min``/``max``, or ``equals``: an integer or a SQL scalar expression, e.g.
  ``"(select count(*) from cleaned) + (select count(*) from quarantine)"``): one failure when the
  count of considered rows violates the bounds, else none; both numbers are reported.

Named values: any SQL string (``where``, ``expression``, ``equals``, SQL bounds) may contain
``{{ name }}``, replaced by the SQL literal of a value the code defines (a number, a string, a list
``['a', 'b']``; see :mod:`asr_distill.data_quality.named`); a bound argument that is only
``"{{ name }}"`` of a number stays that number. An unknown name is an error of the file.

Every test takes ``where`` (SQL filter applied first), ``severity`` (``error`` | ``warn``, default
error), ``error_if`` / ``warn_if`` (dbt thresholds on the failure count, ``">0"``, ``">=10"``,
``"!=0"``, or on the failure rate among the considered rows, ``">5%"``; both default to ``"!=0"``),
``description``, ``name`` and ``partition`` (``same`` | ``all``: how *other* tables the test reads are
read). Outcome, as in dbt: with severity error, if ``error_if`` holds the check fails with ERROR
severity (checks of severity error are *blocking*: downstream assets in the same run do not run);
else if ``warn_if`` holds it fails with WARN severity (never blocks); else it passes.
``severity: warn`` never errors. A check also fails (with its severity) when it cannot be evaluated:
the asset wrote no output for the checked partition, a table it reads has none, or DuckDB rejects
the SQL. Metadata always carries the counts, the rate, the SQL and, on failure, a markdown sample of
the first 5 failing rows (deterministic order).

Tables are read as DuckDB views named after the table, over the Parquet objects the lake registry
resolves for the run's partition (all partitions for unpartitioned runs or ``partition: all``).
Other tables (``relationships.to``, tables named in SQL expressions) are found by parsing the SQL.

Trust: table and column names are validated/quoted and cannot inject SQL; expressions (``where``,
``expression``, ``equals``, SQL bounds, unquoted values) are SQL by design, come from this
repository, and are trusted like code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from asr_distill.dbt_like_checks.engine import CheckOutcome, compile_failing_sql, decide, run_check_sql
from asr_distill.dbt_like_checks.spec import CheckSpec, CheckSpecError, Threshold, load_check_specs

if TYPE_CHECKING:
    from asr_distill.dbt_like_checks.dagster_wiring import build_asset_checks

CHECKS_DIR = Path(__file__).parent / "checks"

__all__ = [
    "CHECKS_DIR",
    "CheckOutcome",
    "CheckSpec",
    "CheckSpecError",
    "Threshold",
    "build_asset_checks",
    "compile_failing_sql",
    "decide",
    "default_check_files",
    "load_check_specs",
    "run_check_sql",
]


def default_check_files() -> list[Path]:
    """Every ``*.yaml`` file in the package's ``checks/`` folder, sorted (none if the folder is missing)."""
    if not CHECKS_DIR.is_dir():
        return []
    return sorted(p for p in CHECKS_DIR.glob("*.yaml") if p.is_file())


def __getattr__(name: str) -> Any:
    # Dagster is imported only by whoever asks for the wiring; the engine stays plain Python.
    if name == "build_asset_checks":
        from asr_distill.dbt_like_checks.dagster_wiring import build_asset_checks

        return build_asset_checks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
