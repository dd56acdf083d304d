"""SQL text helpers: identifier and literal quoting, parse-only validation of trusted fragments.

Names that come from YAML (tables, columns) are always quoted (and tables also validated), so they
cannot change the shape of a query. Expressions (``where``, ``expression``, ``equals``, SQL bounds)
are SQL by design: they come from the repository and are trusted; they are only parsed here, to
report syntax errors at definitions-load time and to find the tables they read.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import duckdb

# Lake table names become DuckDB view names: plain identifiers only.
TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Prefix of the names this package uses inside its own queries; no table may start with it.
RESERVED_PREFIX = "__asrd"


class SqlFragmentError(ValueError):
    """A trusted SQL fragment that DuckDB cannot parse."""


def quote_ident(name: str) -> str:
    """A DuckDB quoted identifier: any name is safe, including quotes and spaces."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_str(value: str) -> str:
    """A DuckDB string literal."""
    if "\x00" in value:
        raise ValueError(f"string {value!r} contains a NUL character")
    return "'" + value.replace("'", "''") + "'"


def number_literal(value: int | float) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return repr(value)


def wrap_fragment(fragment: str) -> str:
    """Parenthesise a trusted fragment; newlines keep a trailing ``--`` comment from eating the ``)``."""
    return f"(\n{fragment}\n)"


def is_valid_table_name(name: str) -> bool:
    return bool(TABLE_NAME_RE.match(name)) and not name.lower().startswith(RESERVED_PREFIX)


def _serialize(sql: str) -> dict[str, Any]:
    con = duckdb.connect(":memory:")
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    finally:
        con.close()
    return json.loads(raw)


def parse_select(sql: str) -> dict[str, Any]:
    """Parse (never bind or run) one SELECT statement; raise :class:`SqlFragmentError` on errors."""
    tree = _serialize(sql)
    if tree.get("error"):
        raise SqlFragmentError(tree.get("error_message") or "unparseable SQL")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise SqlFragmentError(f"expected one SQL statement, found {len(statements)}")
    return tree


def check_expression(fragment: str) -> set[str]:
    """Validate a scalar/boolean SQL expression; return the tables it reads (lower-cased)."""
    if not fragment.strip():
        raise SqlFragmentError("empty SQL expression")
    if "\x00" in fragment:
        raise SqlFragmentError("SQL expression contains a NUL character")
    return referenced_tables(parse_select(f"SELECT {wrap_fragment(fragment)} AS {RESERVED_PREFIX}_value"))


def referenced_tables(tree: dict[str, Any]) -> set[str]:
    """Base tables named in a parsed statement, minus the names of its CTEs (lower-cased).

    Schema-qualified references other than ``main.`` are kept with their schema and will simply not
    resolve to a lake table.
    """
    tables: set[str] = set()
    ctes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
                schema = node.get("schema_name") or ""
                name = node["table_name"]
                tables.add(name.lower() if schema in ("", "main") else f"{schema}.{name}".lower())
            cte_map = node.get("cte_map")
            if isinstance(cte_map, dict):
                for entry in cte_map.get("map") or []:
                    if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                        ctes.add(entry["key"].lower())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return tables - ctes
